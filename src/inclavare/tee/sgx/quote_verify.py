"""Signature checks of a quote v3 and of the PCK chain in its certification data.

Every signature is checked over the exact bytes received (`signed_bytes()`, `qe_report_bytes()` of the parsed quote),
reserved fields included. The same checks serve SGX quotes v3 and TDX quotes v4/v5 (inclavare.tee.tdx.quote).

What is checked here (all offline, no collateral):
- the ISV enclave report signature: the attestation key over header || report body;
- the binding: QE report_data[0:32] == SHA-256(attestation key || QE auth data), [32:64] zero;
- the QE report signature: the PCK leaf key over the QE report body;
- for `verify_hardware_quote`, the chain in certification data type 5 up to a root whose public key is Intel's SGX
  Root CA key, and that nothing in the quote is marked simulated.
TCB status, CRLs, QE identity and validity times need collateral; they belong to the attestation verifier.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from inclavare.tee import marker
from inclavare.tee.sgx.layout import FormatError
from inclavare.tee.sgx.quote import CERT_DATA_PCK_CHAIN, INTEL_QE_VENDOR_ID, Quote

AnyQuote = Any  # Quote | inclavare.tee.tdx.quote.TdxQuote: both have the accessors used here

# SHA-256 of the DER SubjectPublicKeyInfo of "Intel SGX Root CA" (the production DCAP root).
INTEL_SGX_ROOT_SPKI_SHA256 = bytes.fromhex("a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e")


class QuoteError(ValueError):
    """A quote that does not verify; str() is one sentence naming the failed check."""


@dataclass(frozen=True)
class VerifiedQuote:
    quote: AnyQuote
    pck_chain: tuple[x509.Certificate, ...]
    simulated: bool


def spki_sha256(cert: x509.Certificate) -> bytes:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def p256_public_key(xy: bytes) -> ec.EllipticCurvePublicKey:
    if len(xy) != 64:
        raise QuoteError("an ECDSA P-256 public key is 64 bytes x||y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError:
        raise QuoteError("the quote's attestation key is not a point on P-256") from None


def p256_raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as the 64 bytes r||s that quotes carry."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def p256_public_xy(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def _check_raw(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def load_chain(quote: AnyQuote) -> tuple[x509.Certificate, ...]:
    if quote.cert_data_type != CERT_DATA_PCK_CHAIN or not quote.pck_chain_pem():
        raise QuoteError(f"the quote's certification data is type {quote.cert_data_type}, not a PCK chain (type 5)")
    chain = _parse_chain(quote.cert_data)
    if chain is None:
        raise QuoteError("the quote's PCK chain holds a certificate that does not parse")
    return chain


@functools.lru_cache(maxsize=256)
def _parse_chain(cert_data: bytes) -> tuple[x509.Certificate, ...] | None:
    """The certificates of certification data type 5, parsed once per distinct chain (a platform's quotes share it)."""
    from inclavare.tee.sgx.quote import pem_chain

    try:
        return tuple(x509.load_pem_x509_certificate(p) for p in pem_chain(CERT_DATA_PCK_CHAIN, cert_data))
    except ValueError:
        return None


def verify_isv_signature(quote: AnyQuote) -> None:
    """The attestation key's signature over the received header and report body."""
    att_key = p256_public_key(quote.attest_pub_key)
    if not _check_raw(att_key, quote.signature, quote.signed_bytes()):
        raise QuoteError("the ISV enclave report signature is invalid (attestation key over header and report body)")


def verify_signatures(quote: AnyQuote, pck_cert: x509.Certificate | None = None) -> tuple[x509.Certificate, ...]:
    """Check the ISV signature, the QE binding and the QE report signature; return the chain used (leaf first).

    The PCK key is the leaf of certification data type 5, or `pck_cert` when given (for types 1-3).
    """
    verify_isv_signature(quote)
    expected = hashlib.sha256(quote.attest_pub_key + quote.qe_auth_data).digest() + bytes(32)
    if quote.qe_report.report_data != expected:
        raise QuoteError("the QE report does not bind the attestation key (report_data != SHA-256(key || auth data))")
    chain = (pck_cert,) if pck_cert is not None else load_chain(quote)
    leaf_key = chain[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise QuoteError("the PCK certificate key is not an ECDSA key")
    if not _check_raw(leaf_key, quote.qe_report_signature, quote.qe_report_bytes()):
        raise QuoteError("the QE report signature is invalid (PCK key over the QE report)")
    return chain


def verify_chain(chain: tuple[x509.Certificate, ...], root_spki_sha256: bytes) -> None:
    """Each certificate is signed by the next, the last is self-signed and its key is the pinned root key."""
    if len(chain) < 2:
        raise QuoteError("the PCK chain has no issuer certificates")
    for child, parent in zip(chain, chain[1:] + chain[-1:], strict=True):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise QuoteError(
                f"the certificate '{child.subject.rfc4514_string()}' is not signed by '{parent.subject.rfc4514_string()}'"
            ) from None
    if spki_sha256(chain[-1]) != root_spki_sha256:
        raise QuoteError(f"the PCK chain ends at '{chain[-1].subject.rfc4514_string()}', not at the trusted root key")


def sim_marks(quote: AnyQuote) -> list[str]:
    """The reasons this quote is simulated evidence ([] for none)."""
    marks = []
    if quote.header.vendor_id == marker.SIM_QE_VENDOR_ID:
        marks.append("its QE vendor id is the inclavare sim's")
    if quote.header.user_data.startswith(marker.SIM_USER_DATA_PREFIX):
        marks.append("its header user_data says SIMULATED")
    if quote.cert_data_type == CERT_DATA_PCK_CHAIN:
        cert = _sim_certificate(quote.cert_data)
        if cert:
            marks.append(f"its certificate '{cert}' is a simulated one")
    return marks


@functools.lru_cache(maxsize=256)
def _sim_certificate(cert_data: bytes) -> str:
    """The subject of the first certificate of the chain marked simulated, "" for none (once per distinct chain)."""
    for cert in _parse_chain(cert_data) or ():
        oids = {e.oid.dotted_string for e in cert.extensions}
        subject = cert.subject.rfc4514_string()
        if marker.SIM_EXTENSION_OID in oids or marker.SIM_CN_MARK in subject:
            return subject
    return ""


def parse_any(data: bytes) -> AnyQuote:
    """An SGX quote v3 or a TDX quote v4/v5, by its header; FormatError otherwise."""
    from inclavare.tee.tdx.quote import TdxQuote, is_tdx_quote

    return TdxQuote.from_bytes(data) if is_tdx_quote(data) else Quote.from_bytes(data)


def verify_hardware_quote(data: bytes | AnyQuote, root_spki_sha256: bytes = INTEL_SGX_ROOT_SPKI_SHA256) -> VerifiedQuote:
    """Verify a quote as evidence from SGX hardware: never accepts simulated evidence.

    Checks: no sim marker, Intel's QE vendor id, certification data type 5, signatures and binding, and the PCK
    chain up to the Intel SGX Root CA key. Collateral (TCB, CRLs, QE identity, times) is not checked here.
    """
    try:
        quote = parse_any(data) if isinstance(data, bytes | bytearray) else data
    except FormatError as e:
        raise QuoteError(f"the quote does not parse: {e}") from None
    marks = sim_marks(quote)
    if marks:
        raise QuoteError(f"simulated evidence is never accepted as SGX hardware: {marks[0]}")
    if quote.header.vendor_id != INTEL_QE_VENDOR_ID:
        raise QuoteError(f"the QE vendor id {quote.header.vendor_id.hex()} is not Intel's")
    if quote.cert_data_type != CERT_DATA_PCK_CHAIN:
        raise QuoteError(f"certification data type {quote.cert_data_type} carries no PCK chain; type 5 is required")
    chain = verify_signatures(quote)
    verify_chain(chain, root_spki_sha256)
    return VerifiedQuote(quote, chain, simulated=False)
