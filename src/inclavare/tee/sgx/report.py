"""REPORT body (384), REPORT (432), TARGETINFO (512) and KEYREQUEST (512): Intel's sgx_report.h / arch.h."""

from __future__ import annotations

from inclavare.tee.sgx.layout import Structure, raw, structure, u16, u32


@structure(384)
class ReportBody(Structure):
    cpu_svn: bytes = raw(0, 16)
    misc_select: int = u32(16)
    isv_ext_prod_id: bytes = raw(32, 16)
    attributes: bytes = raw(48, 16)
    mr_enclave: bytes = raw(64, 32)
    mr_signer: bytes = raw(128, 32)
    config_id: bytes = raw(192, 64)
    isv_prod_id: int = u16(256)
    isv_svn: int = u16(258)
    config_svn: int = u16(260)
    isv_family_id: bytes = raw(304, 16)
    report_data: bytes = raw(320, 64)


@structure(432)
class Report(Structure):
    """EREPORT output: the body, the key_id the MAC key was derived with, and the MAC over the body."""

    body: bytes = raw(0, 384)
    key_id: bytes = raw(384, 32)
    mac: bytes = raw(416, 16)

    @property
    def report_body(self) -> ReportBody:
        return ReportBody.from_bytes(self.body, strict=False)


@structure(512)
class TargetInfo(Structure):
    """The enclave a REPORT is made for (EREPORT's first operand)."""

    mr_enclave: bytes = raw(0, 32)
    attributes: bytes = raw(32, 16)
    config_svn: int = u16(50)
    misc_select: int = u32(52)
    config_id: bytes = raw(64, 64)


# KEYREQUEST.KEYNAME
EINITTOKEN_KEY = 0
PROVISION_KEY = 1
PROVISION_SEAL_KEY = 2
REPORT_KEY = 3
SEAL_KEY = 4

# KEYREQUEST.KEYPOLICY bits
KEYPOLICY_MRENCLAVE = 0x0001
KEYPOLICY_MRSIGNER = 0x0002
KEYPOLICY_NOISVPRODID = 0x0004
KEYPOLICY_CONFIGID = 0x0008
KEYPOLICY_ISVFAMILYID = 0x0010
KEYPOLICY_ISVEXTPRODID = 0x0020


@structure(512)
class KeyRequest(Structure):
    """EGETKEY's operand."""

    key_name: int = u16(0)
    key_policy: int = u16(2)
    isv_svn: int = u16(4)
    cpu_svn: bytes = raw(8, 16)
    attribute_mask: bytes = raw(24, 16)
    key_id: bytes = raw(40, 32)
    misc_mask: int = u32(72)
    config_svn: int = u16(76)
