"""TDX quotes v4 and v5 verified with DCAP collateral through dcap-qvl (the core and cache of sgx_dcap)."""

from __future__ import annotations

from typing import Any

from inclavare.attest.claims import Claims
from inclavare.attest.collateral import Collateral
from inclavare.attest.errors import VerificationError
from inclavare.attest.sgx_dcap import DcapCore, platform_claims, refuse_unless_intel

TD_FIELDS = ("tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam", "mr_td",
             "mr_config_id", "mr_owner", "mr_owner_config", "rtmr0", "rtmr1", "rtmr2", "rtmr3")


def td_claims(quote: Any) -> dict[str, Any]:
    body = quote.report_body
    values: dict[str, Any] = {f: getattr(body, f) for f in TD_FIELDS}
    for extra in ("tee_tcb_svn2", "mr_service_td"):
        if hasattr(body, extra):
            values[extra] = getattr(body, extra)
    values["debug"] = quote.debug
    values["td_report_version"] = "1.5" if hasattr(body, "mr_service_td") else "1.0"
    return values


def verify(quote: Any, collateral: Collateral, now: int, core: DcapCore) -> Claims:
    """Claims of a parsed TDX quote (inclavare.tee.tdx.quote.TdxQuote), or VerificationError."""
    refuse_unless_intel(quote)
    if collateral.tee != "TDX":
        raise VerificationError("collateral", f"{collateral.source} is {collateral.tee} collateral, not TDX")
    verdict = core.check(quote, quote.signed_size - quote.report_body.SIZE + 520, collateral, now)
    values = {**td_claims(quote), **platform_claims(verdict, quote)}
    return Claims("tdx", False, quote.report_body.report_data, verdict["tcb_status"], verdict["advisory_ids"],
                  verdict["issued"], verdict["expires"], now, values)
