"""SGX ECDSA quotes v3 verified with DCAP collateral through dcap-qvl, and the verification core TDX shares.

Per quote: the project's parser reads the exact bytes (inclavare.tee.sgx.quote); evidence marked simulated and a QE
vendor id other than Intel's are refused before any signature; then dcap-qvl (`QuoteVerifier.verify_with_policy`
with `QuotePolicy.claims_only`) checks, over the received bytes, the ISV signature, the QE report signature and
binding, the PCK chain up to the trusted root with both CRLs (and here: the root certificate the quote carries is the
trusted root's key, validly self-signed), the TCB info and QE identity signatures and their
chains, FMSPC, every validity time at the verification time, and finds the TCB status and advisories. The appraisal
(debug, TCB status, measurements) is the policy's.

Platform verdict cache: a quote whose bytes, except its report_data and its ISV signature, equal those of a quote
already verified in full with the same collateral (same header, enclave identity, attestation key, QE report, QE
signature, PCK chain) gets that verdict without a second dcap-qvl run, but only at a time inside the validity window
dcap-qvl reported (latest issue date .. earliest expiration date of everything in the chain and collateral), and only
after its own ISV signature verifies over its received header and body. Nothing the cached verdict depends on can
differ: report_data is the attester's free data and the ISV signature is checked each time. Refusals are not cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from inclavare.attest.claims import Claims
from inclavare.attest.collateral import Collateral
from inclavare.attest.errors import VerificationError
from inclavare.tee.sgx import attributes as attr
from inclavare.tee.sgx import quote_verify as qv
from inclavare.tee.sgx.quote import CERT_DATA_PCK_CHAIN, INTEL_QE_VENDOR_ID


class DcapCore:
    """dcap-qvl with a trusted root (Intel's production root by default) and the platform verdict cache."""

    def __init__(self, root_ca_der: bytes | None = None, cache_size: int = 1024) -> None:
        import dcap_qvl

        self._dcap = dcap_qvl
        self._qvl = dcap_qvl.QuoteVerifier(root_ca_der) if root_ca_der else dcap_qvl.QuoteVerifier()
        self._cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._size = cache_size
        self._root_spki = qv.INTEL_SGX_ROOT_SPKI_SHA256
        if root_ca_der:
            from cryptography import x509

            self._root_spki = qv.spki_sha256(x509.load_der_x509_certificate(root_ca_der))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def check(self, quote: Any, report_data_at: int, collateral: Collateral, now: int) -> dict[str, Any]:
        """The platform verdict for a parsed quote (`report_data_at`: offset of its 64 bytes of report_data)."""
        raw = quote.raw if hasattr(quote, "raw") else quote.to_bytes()
        sig_at = quote.signed_size + 4 if hasattr(quote, "signed_size") else 436
        key = hashlib.sha256(b"".join((collateral.digest, raw[:report_data_at], raw[report_data_at + 64 : sig_at],
                                       raw[sig_at + 64 :]))).digest() if self._size else b""
        if self._size:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None and hit["issued"] <= now < hit["expires"]:  # dcap-qvl: a CRL expires at nextUpdate
                try:
                    qv.verify_isv_signature(quote)
                except qv.QuoteError as e:
                    raise VerificationError("isv_signature", str(e)) from None
                self.hits += 1
                return hit
        self.misses += 1
        self._check_chain_root(quote)
        try:
            out = self._qvl.verify_with_policy(raw, collateral.qvl, now, self._dcap.QuotePolicy.claims_only(now))
        except ValueError as e:
            why = str(e).removeprefix("Verification failed: ")
            if why.startswith("Debug mode is enabled"):
                raise VerificationError("debug", "the quote is from a debug enclave (its memory is readable by the "
                                        "host); dcap-qvl refuses debug quotes") from None
            raise VerificationError("dcap", f"dcap-qvl: {why}") from None
        c = json.loads(out.to_json())
        platform = c.get("platform") or {}
        pck = platform.get("pck") or {}
        qe = c.get("qe") or {}
        verdict = {
            "tcb_status": c["tcb"]["status"], "advisory_ids": tuple(c["tcb"].get("advisory_ids") or ()),
            "tcb_date": (platform.get("tcb_level") or {}).get("tcbDate", ""),
            "qe_tcb_status": (qe.get("tcb_level") or {}).get("tcbStatus", ""),
            "fmspc": bytes(pck.get("fmspc") or ()).hex(),
            "issued": max(c["latest_issue_date"], c.get("qe_iden_latest_issue_date", 0)),
            "expires": min(c["earliest_expiration_date"], c.get("qe_iden_earliest_expiration_date",
                                                               c["earliest_expiration_date"])),
        }
        if self._size:
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return verdict


    def _check_chain_root(self, quote: Any) -> None:
        """dcap-qvl verifies the PCK chain up to its trust anchor and ignores the root certificate the quote
        carries; that copy must be intact too: the trusted root's key, validly self-signed."""
        try:
            qv.load_chain(quote)
        except qv.QuoteError:
            pass  # dcap-qvl names it
        problem = _root_problem(quote.cert_data, self._root_spki)
        if problem:
            raise VerificationError("pck_chain", problem)


@functools.lru_cache(maxsize=256)
def _root_problem(cert_data: bytes, root_spki: bytes) -> str:
    """Why the last certificate of a PCK chain is not the trusted root ("" when it is), once per chain and root."""
    from cryptography.exceptions import InvalidSignature

    chain = qv._parse_chain(cert_data)
    if not chain:
        return "the quote's PCK chain does not parse"
    root = chain[-1]
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return "the root certificate in the quote's PCK chain is not a valid self-signed certificate"
    if qv.spki_sha256(root) != root_spki:
        return f"the quote's PCK chain ends at '{root.subject.rfc4514_string()}', not at the trusted root key"
    return ""


def refuse_unless_intel(quote: Any) -> None:
    marks = qv.sim_marks(quote)
    if marks:
        raise VerificationError("simulated", f"the quote is SIMULATED evidence ({marks[0]}); it is never verified "
                                "as hardware evidence")
    if quote.header.vendor_id != INTEL_QE_VENDOR_ID:
        raise VerificationError("qe_vendor", f"the QE vendor id {quote.header.vendor_id.hex()} is not Intel's")
    if quote.cert_data_type != CERT_DATA_PCK_CHAIN:
        raise VerificationError("certification_data", f"certification data type {quote.cert_data_type} carries no "
                                "PCK chain; DCAP verification needs type 5")


def platform_claims(verdict: dict[str, Any], quote: Any) -> dict[str, Any]:
    return {"tcb_date": verdict["tcb_date"], "qe_tcb_status": verdict["qe_tcb_status"], "fmspc": verdict["fmspc"],
            "quote_version": quote.header.version, "qe_svn": quote.header.qe_svn, "pce_svn": quote.header.pce_svn}


def sgx_body_claims(body: Any) -> dict[str, Any]:
    a = attr.Attributes.from_bytes(body.attributes)
    return {"mr_enclave": body.mr_enclave, "mr_signer": body.mr_signer, "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn, "attributes": body.attributes, "debug": bool(a.flags & attr.DEBUG),
            "xfrm": a.xfrm, "misc_select": body.misc_select, "cpu_svn": body.cpu_svn, "config_id": body.config_id,
            "config_svn": body.config_svn, "isv_family_id": body.isv_family_id,
            "isv_ext_prod_id": body.isv_ext_prod_id}


def verify(quote: Any, collateral: Collateral, now: int, core: DcapCore) -> Claims:
    """Claims of a parsed SGX quote v3 (inclavare.tee.sgx.quote.Quote), or VerificationError."""
    refuse_unless_intel(quote)
    if collateral.tee != "SGX":
        raise VerificationError("collateral", f"{collateral.source} is {collateral.tee} collateral, not SGX")
    verdict = core.check(quote, 48 + 320, collateral, now)
    body = quote.report_body
    values = {**sgx_body_claims(body), **platform_claims(verdict, quote)}
    return Claims("sgx", False, body.report_data, verdict["tcb_status"], verdict["advisory_ids"], verdict["issued"],
                  verdict["expires"], now, values)
