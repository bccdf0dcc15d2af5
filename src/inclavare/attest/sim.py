"""SIMULATED evidence of the inclavare sim TEE: verified only against a simulated root CA that the caller names.

The quote must carry all three sim marks (inclavare.tee.marker); its ISV signature, QE binding and QE report
signature are checked over the received bytes, its chain up to one of the named roots (each certificate valid at
the verification time), and its QE report must be the sim quoting enclave's. The claims say simulated: true and
tcb_status "Simulated"; the default policy refuses them unless the reference values allow simulated evidence.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from inclavare.attest.claims import Claims
from inclavare.attest.errors import VerificationError
from inclavare.attest.sgx_dcap import sgx_body_claims
from inclavare.tee.sgx import quote_verify as qv

SIM_TCB_STATUS = "Simulated"


def load_roots(pems: list[bytes]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p) for p in pems]


def verify(quote: Any, roots: list[x509.Certificate], now: int) -> Claims:
    from inclavare.tee.sim import qe

    marks = qv.sim_marks(quote)
    if len(marks) < 3:
        raise VerificationError("simulated", "the quote is not (fully) marked as inclavare sim evidence")
    if not roots:
        raise VerificationError("simulated", "the quote is SIMULATED evidence and no simulated root was named: "
                                "sim evidence verifies only against a sim root CA the verifier is given")
    try:
        chain = qv.verify_signatures(quote)
    except qv.QuoteError as e:
        raise VerificationError("signature", str(e)) from None
    root = None
    for candidate in roots:
        try:
            qv.verify_chain(chain, qv.spki_sha256(candidate))
            root = candidate
            break
        except qv.QuoteError:
            continue
    if root is None:
        raise VerificationError("sim_root", f"the sim quote's chain ends at '{chain[-1].subject.rfc4514_string()}', "
                                "which is none of the simulated roots named")
    if quote.qe_report.mr_enclave != qe.QE_IDENTITY.mr_enclave:
        raise VerificationError("qe_identity", "the sim quote's QE report is not from the sim quoting enclave")
    issued = max(int(c.not_valid_before_utc.timestamp()) for c in chain)
    expires = min(int(c.not_valid_after_utc.timestamp()) for c in chain)
    if not issued <= now <= expires:
        raise VerificationError("time", f"the sim PCK chain is not valid at {now} (valid {issued} .. {expires})")
    values = {**sgx_body_claims(quote.report_body), "sim_root": qv.spki_sha256(root),
              "quote_version": quote.header.version, "qe_svn": quote.header.qe_svn, "pce_svn": quote.header.pce_svn,
              "qe_tcb_status": SIM_TCB_STATUS, "tcb_date": "", "fmspc": ""}
    return Claims("sgx", True, quote.report_body.report_data, SIM_TCB_STATUS, (), issued, expires, now, values)
