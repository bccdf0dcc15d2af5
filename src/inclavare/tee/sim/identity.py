"""What a launched sim enclave is: the SECS fields EREPORT and EGETKEY read."""

from __future__ import annotations

from inclavare.tee import records
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sgx.report import ReportBody, TargetInfo


@records.record
class EnclaveIdentity:
    mr_enclave: bytes
    mr_signer: bytes
    attributes: Attributes
    misc_select: int = 0
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_id: bytes = bytes(64)
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)

    def report_body(self, cpu_svn: bytes, report_data: bytes) -> ReportBody:
        if len(report_data) > 64:
            raise ValueError("report_data is at most 64 bytes")
        return ReportBody(
            cpu_svn=cpu_svn, misc_select=self.misc_select, isv_ext_prod_id=self.isv_ext_prod_id,
            attributes=self.attributes.to_bytes(), mr_enclave=self.mr_enclave, mr_signer=self.mr_signer,
            config_id=self.config_id, isv_prod_id=self.isv_prod_id, isv_svn=self.isv_svn,
            config_svn=self.config_svn, isv_family_id=self.isv_family_id, report_data=report_data.ljust(64, b"\0"),
        )

    def target_info(self) -> TargetInfo:
        return TargetInfo(mr_enclave=self.mr_enclave, attributes=self.attributes.to_bytes(),
                          config_svn=self.config_svn, misc_select=self.misc_select, config_id=self.config_id)
