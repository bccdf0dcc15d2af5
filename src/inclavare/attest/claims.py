"""Claims: what a verified piece of evidence says, the same type for SGX, TDX and sim evidence.

`as_input()` is the appraisal policy's `input` (see inclavare.attest.policy): snake_case keys, byte strings as
lowercase hex, integers as numbers, times as Unix seconds (and ISO 8601 beside them for humans).

| key | for | what |
|---|---|---|
| tee | all | "sgx" or "tdx" (sim evidence has SGX's layout: "sgx", with simulated true) |
| simulated | all | true only for evidence of the inclavare sim TEE, verified against a simulated root named by the caller |
| mr_enclave, mr_signer, isv_prod_id, isv_svn, attributes, debug, misc_select, cpu_svn, config_id, config_svn, isv_family_id, isv_ext_prod_id | sgx | the enclave's report body |
| mr_td, mr_seam, mr_signer_seam, seam_attributes, td_attributes, xfam, mr_config_id, mr_owner, mr_owner_config, rtmr0..rtmr3, tee_tcb_svn (tee_tcb_svn2, mr_service_td for TD report 1.5), debug | tdx | the TD report |
| report_data | all | 64 bytes the attester bound (a key hash, a nonce) |
| tcb_status, advisory_ids, qe_tcb_status, tcb_date, fmspc | sgx, tdx | from the collateral (dcap-qvl); sim: "Simulated", [] |
| collateral_issued_at, collateral_expires_at, collateral_expiry | all | the window in which the evidence verifies with this collateral |
| verified_at | all | the verification time used |
| quote_version, qe_svn, pce_svn | all | from the quote header |
| sim_root | sim | SHA-256 (hex) of the simulated root CA's public key the evidence chains to |
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any


def iso(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Claims:
    tee: str
    simulated: bool
    report_data: bytes
    tcb_status: str
    advisory_ids: tuple[str, ...]
    collateral_issued_at: int
    collateral_expires_at: int
    verified_at: int
    values: dict[str, Any] = field(default_factory=dict)  # the report body fields and the rest (see the table)

    @property
    def debug(self) -> bool:
        return bool(self.values.get("debug"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_input().get(key, default)

    def as_input(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tee": self.tee, "simulated": self.simulated, "report_data": self.report_data.hex(),
            "tcb_status": self.tcb_status, "advisory_ids": list(self.advisory_ids),
            "collateral_issued_at": self.collateral_issued_at, "collateral_expires_at": self.collateral_expires_at,
            "collateral_expiry": iso(self.collateral_expires_at), "verified_at": self.verified_at,
        }
        for k, v in self.values.items():
            out[k] = v.hex() if isinstance(v, bytes | bytearray) else v
        return out

    def with_report_data(self, report_data: bytes, verified_at: int) -> Claims:
        return Claims(self.tee, self.simulated, report_data, self.tcb_status, self.advisory_ids,
                      self.collateral_issued_at, self.collateral_expires_at, verified_at, self.values)

    def summary(self) -> str:
        d = self.as_input()
        keys = ("tee", "simulated", "mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "mr_td", "debug",
                "tcb_status", "advisory_ids", "collateral_expiry", "report_data")
        return "\n".join(f"{k} {d[k] if not isinstance(d[k], list) else ','.join(d[k]) or '-'}"
                         for k in keys if k in d)
