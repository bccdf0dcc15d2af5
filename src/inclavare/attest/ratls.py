"""Attested TLS: X.509 certificates that carry TEE evidence bound to their key, and TLS connections (stdlib `ssl`)
that verify that evidence and appraise it with a policy before any application data.

Generating (TCG DICE "tagged evidence", as Gramine >= 1.8 and rats-tls emit it): a P-256 key; the claims buffer is
the CBOR map {"pubkey-hash": [1 (sha-256), SHA-256(DER SubjectPublicKeyInfo)]} (plus "nonce": bstr when asked); the
quote is made over report_data = SHA-256(claims buffer) zero-padded to 64 bytes; extension 2.23.133.5.4.9 holds
CBOR tag 60000 ([bstr quote, bstr claims buffer]). The certificate is self-signed by that key.

Verifying, the extensions understood are:
- 2.23.133.5.4.9 (DICE tagged evidence, tag 60000: an SGX or TDX quote), binding as above;
- 1.2.840.113741.1337.6 (rats-tls / enclave-tls SGX ECDSA quote) and .1337.8 (TDX quote): the raw quote with
  report_data[0:32] = SHA-256(DER SubjectPublicKeyInfo);
- Gramine's legacy quote extension, whose OID is encoded wrongly on the wire and reads as 0.6.9.42.840.113741.1337.6:
  binding as rats-tls'.
(Intel SGX SDK ttls, 1.2.840.113741.1.13.1, hashes the PEM key text and is not understood.)

TLS: `server_context` / `client_context` build stdlib contexts; the peer's certificate is taken after the handshake
and verified (`verify_peer`) before a byte of application data moves: a peer that fails is closed with the check or
the policy rule named. Mutual mode needs OpenSSL to accept a self-signed client certificate, which the stdlib cannot
ask for; `server_context(mutual=True)` installs, through ctypes into the libssl that `_ssl` uses, a certificate
verification callback that leaves the whole decision to verify_peer (OpenSSL still checks the client's possession of
the key: CertificateVerify), after checking that the SSL_CTX it found is the context's own.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attest.claims import Claims
from inclavare.attest.errors import VerificationError
from inclavare.attest.policy import Policy, Verdict

OID_DICE_TAGGED_EVIDENCE = "2.23.133.5.4.9"
OID_DICE_ENDORSEMENTS = "2.23.133.5.4.2"
OID_RATS_SGX_QUOTE = "1.2.840.113741.1337.6"
OID_RATS_TDX_QUOTE = "1.2.840.113741.1337.8"
OID_GRAMINE_LEGACY = "0.6.9.42.840.113741.1337.6"
LEGACY_OIDS = (OID_RATS_SGX_QUOTE, OID_RATS_TDX_QUOTE, OID_GRAMINE_LEGACY)
CBOR_TAG_TEE_QUOTE = 60000
HASH_SHA256 = 1
MAX_CERT = 64 * 1024

Attester = Callable[[bytes], bytes]  # report_data (64 bytes) -> quote


class AttestationError(VerificationError):
    """A peer whose certificate, evidence, binding or appraisal fails; `check` names which."""


@dataclass(frozen=True)
class AttestedPeer:
    claims: Claims
    verdict: Verdict
    evidence: str  # the extension it came in: "dice", "rats-tls", "gramine-legacy"
    spki_sha256: bytes


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims_buffer(spki: bytes, nonce: bytes | None = None) -> bytes:
    import cbor2

    claims: dict[str, object] = {"pubkey-hash": [HASH_SHA256, hashlib.sha256(spki).digest()]}
    if nonce is not None:
        claims["nonce"] = nonce
    return cbor2.dumps(claims, canonical=True)


def make_certificate(attester: Attester, key: ec.EllipticCurvePrivateKey | None = None, nonce: bytes | None = None,
                     common_name: str = "inclavare attested TLS") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate with DICE tagged evidence from `attester` bound to its (new) P-256 key."""
    import cbor2

    key = key or ec.generate_private_key(ec.SECP256R1())
    buf = claims_buffer(spki_der(key.public_key()), nonce)
    quote = attester(hashlib.sha256(buf).digest().ljust(64, b"\0"))
    evidence = cbor2.dumps(cbor2.CBORTag(CBOR_TAG_TEE_QUOTE, [quote, buf]))
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_DICE_TAGGED_EVIDENCE), evidence),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _extensions(cert: x509.Certificate) -> dict[str, bytes]:
    out = {}
    try:
        exts = list(cert.extensions)
    except ValueError as e:
        raise AttestationError("certificate", f"the certificate's extensions do not parse: {e}") from None
    for e in exts:
        val = e.value
        if isinstance(val, x509.UnrecognizedExtension):
            out[e.oid.dotted_string] = val.value
    return out


def extract_evidence(cert: x509.Certificate) -> tuple[str, bytes, bytes, bytes | None]:
    """(kind, quote, expected report_data prefix, nonce) from the first evidence extension understood."""
    spki = spki_der(cert.public_key())  # type: ignore[arg-type]
    exts = _extensions(cert)
    if OID_DICE_TAGGED_EVIDENCE in exts:
        import cbor2

        try:
            tag = cbor2.loads(exts[OID_DICE_TAGGED_EVIDENCE])
        except Exception as e:  # noqa: BLE001 - cbor2 raises several types on garbage
            raise AttestationError("evidence", f"the DICE tagged evidence is not CBOR: {e}") from None
        if not isinstance(tag, cbor2.CBORTag) or tag.tag != CBOR_TAG_TEE_QUOTE:
            raise AttestationError("evidence", f"the DICE tagged evidence is not CBOR tag {CBOR_TAG_TEE_QUOTE} "
                                   "(a TEE quote)")
        v = tag.value
        if not (isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, bytes) for x in v)):
            raise AttestationError("evidence", "the DICE tagged evidence is not [bstr quote, bstr claims]")
        quote, buf = v
        try:
            claims = cbor2.loads(buf)
        except Exception:  # noqa: BLE001
            raise AttestationError("evidence", "the DICE claims buffer is not CBOR") from None
        ph = claims.get("pubkey-hash") if isinstance(claims, dict) else None
        if not (isinstance(ph, list | tuple) and len(ph) == 2 and ph[0] == HASH_SHA256 and isinstance(ph[1], bytes)):
            raise AttestationError("key_binding", "the DICE claims have no sha-256 pubkey-hash")
        if ph[1] != hashlib.sha256(spki).digest():
            raise AttestationError("key_binding", "the DICE pubkey-hash is not the SHA-256 of the certificate's key")
        nonce = claims.get("nonce")
        return "dice", quote, hashlib.sha256(buf).digest(), nonce if isinstance(nonce, bytes) else None
    for oid in LEGACY_OIDS:
        if oid in exts:
            kind = "gramine-legacy" if oid == OID_GRAMINE_LEGACY else "rats-tls"
            return kind, exts[oid], hashlib.sha256(spki).digest(), None
    raise AttestationError("evidence", "the certificate carries no TEE evidence (DICE 2.23.133.5.4.9, rats-tls "
                           "1.2.840.113741.1337.6/.8 or Gramine's legacy extension)")


def verify_certificate(der: bytes, verifier, policy: Policy | None, now: int | None = None,  # noqa: ANN001
                       nonce: bytes | None = None) -> AttestedPeer:
    """Verify an attested certificate: self-signature, evidence, key binding, then the policy (if given: a refusal
    raises AttestationError naming the rule)."""
    if not der or len(der) > MAX_CERT:
        raise AttestationError("certificate", "no certificate, or one larger than 64 KiB")
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        cert.verify_directly_issued_by(cert)
    except Exception as e:  # noqa: BLE001 - malformed certificates raise many types
        raise AttestationError("certificate", f"the peer certificate is malformed or not self-signed: {e}") from None
    kind, quote, bound, got_nonce = extract_evidence(cert)
    if nonce is not None and got_nonce != nonce:
        raise AttestationError("nonce", "the evidence does not carry the nonce asked for")
    claims = verifier.verify(quote, now=now)
    if claims.report_data != bound.ljust(64, b"\0"):
        raise AttestationError("key_binding", "the quote's report_data does not bind the certificate's key")
    verdict = policy.appraise(claims) if policy is not None else Verdict(True, (), "none")
    if not verdict.allowed:
        raise AttestationError(verdict.rule or "policy", verdict.reason())
    return AttestedPeer(claims, verdict, kind, hashlib.sha256(spki_der(key)).digest())  # type: ignore[arg-type]


# ---- TLS ---------------------------------------------------------------------------------------------------------


def _load_chain(ctx: ssl.SSLContext, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """ssl loads certificates from files only: a memfd, never on disk."""
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.memfd_create("ratls", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _accept_any_client_certificate(ctx: ssl.SSLContext) -> None:
    import _ssl
    import ctypes

    lib = ctypes.CDLL(_ssl.__file__)  # symbols resolve in the libssl _ssl is linked with
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(lambda _store, _arg: 1)
    lib.SSL_CTX_set_cert_verify_callback.argtypes = [ctypes.c_void_p, type(callback), ctypes.c_void_p]
    ptr = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p)).value  # PySSLContext.ctx
    if not ptr or lib.SSL_CTX_get_verify_mode(ptr) != 3 or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise RuntimeError("cannot reach this Python's SSL_CTX to accept attested client certificates")
    lib.SSL_CTX_set_cert_verify_callback(ptr, callback, None)
    ctx._ratls_callback = callback  # type: ignore[attr-defined]  # lives as long as the context


def server_context(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, mutual: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _accept_any_client_certificate(ctx)
    return ctx


def client_context(cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> ssl.SSLContext:
    """The server's certificate is verified by verify_peer (attested) or by pinning, not by a CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None and key is not None:
        _load_chain(ctx, cert, key)
    return ctx


def verify_peer(tls: ssl.SSLSocket, verifier, policy: Policy | None, now: int | None = None,  # noqa: ANN001
                nonce: bytes | None = None) -> AttestedPeer:
    """After the handshake: the peer's attested certificate verified and appraised, or the connection closed."""
    try:
        return verify_certificate(tls.getpeercert(binary_form=True) or b"", verifier, policy, now, nonce)
    except VerificationError:
        tls.close()
        raise


def pinned_peer(tls: ssl.SSLSocket, spki_sha256: bytes) -> None:
    """A non-attested peer authenticated by the SHA-256 of its public key (e.g. verdictd's own TLS key)."""
    der = tls.getpeercert(binary_form=True) or b""
    try:
        got = hashlib.sha256(spki_der(x509.load_der_x509_certificate(der).public_key())).digest()  # type: ignore[arg-type]
    except ValueError:
        got = b""
    if got != spki_sha256:
        tls.close()
        raise AttestationError("pinned_key", f"the server's key (SHA-256 {got.hex() or 'none'}) is not the pinned "
                               f"{spki_sha256.hex()}")


def connect(address: str, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
    """`unix:PATH` or `HOST:PORT`; the TLS handshake done."""
    if address.startswith("unix:"):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.connect(address[5:])
    else:
        host, _, port = address.rpartition(":")
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise
