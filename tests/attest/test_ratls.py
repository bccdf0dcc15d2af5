"""Attested TLS: certificates with DICE tagged evidence (and the rats-tls / Gramine legacy OIDs on the verifying
side), server-attested and mutual TLS over the loopback with good and bad peers; the claims reach the application."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import threading

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attest import ratls
from inclavare.attest.policy import Policy
from inclavare.attest.verifier import Verifier

ALLOW_SIM = {"allow_simulated": True}


@pytest.fixture
def attester(sim_enclave):
    return sim_enclave.quote


@pytest.fixture
def verifier(sim_root):
    return Verifier(sim_roots=[sim_root])


def legacy_cert(attester, oid: str, bind=True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = ratls.spki_der(key.public_key())
    quote = attester(hashlib.sha256(spki if bind else b"other").digest())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(9527).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), quote), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def test_dice_certificate_round_trip(attester, verifier):
    cert, _ = ratls.make_certificate(attester, nonce=b"n0")
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ratls.OID_DICE_TAGGED_EVIDENCE)).value.value
    tag = cbor2.loads(ext)
    assert tag.tag == 60000 and isinstance(tag.value[0], bytes)
    peer = ratls.verify_certificate(der(cert), verifier, Policy.default(ALLOW_SIM), nonce=b"n0")
    assert peer.evidence == "dice" and peer.claims.simulated and peer.verdict.allowed
    with pytest.raises(ratls.AttestationError, match="nonce"):
        ratls.verify_certificate(der(cert), verifier, None, nonce=b"other")
    with pytest.raises(ratls.AttestationError) as e:
        ratls.verify_certificate(der(cert), verifier, Policy.default())
    assert e.value.check == "simulated"


@pytest.mark.parametrize("oid,kind", [(ratls.OID_RATS_SGX_QUOTE, "rats-tls"), (ratls.OID_GRAMINE_LEGACY, "gramine-legacy")])
def test_legacy_extensions_are_understood(attester, verifier, oid, kind):
    cert, _ = legacy_cert(attester, oid)
    assert ratls.verify_certificate(der(cert), verifier, None).evidence == kind
    cert, _ = legacy_cert(attester, oid, bind=False)
    with pytest.raises(ratls.AttestationError, match="does not bind") as e:
        ratls.verify_certificate(der(cert), verifier, None)
    assert e.value.check == "key_binding"


def test_bad_certificates(attester, verifier):
    with pytest.raises(ratls.AttestationError, match="malformed"):
        ratls.verify_certificate(b"\x30\x03garbage", verifier, None)
    plain, _ = legacy_cert(attester, "1.2.3.4")
    with pytest.raises(ratls.AttestationError, match="no TEE evidence"):
        ratls.verify_certificate(der(plain), verifier, None)
    # evidence made for one key, placed in a certificate of another
    cert, _ = ratls.make_certificate(attester)
    evidence = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ratls.OID_DICE_TAGGED_EVIDENCE)).value
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thief")])
    now = datetime.datetime.now(datetime.UTC)
    stolen = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(evidence, critical=False).sign(key, hashes.SHA256()))
    with pytest.raises(ratls.AttestationError, match="pubkey-hash is not") as e:
        ratls.verify_certificate(der(stolen), verifier, None)
    assert e.value.check == "key_binding"
    for garbage in (b"\xff\xff", cbor2.dumps(cbor2.CBORTag(60000, ["x"])), cbor2.dumps(cbor2.CBORTag(1, [b"", b""])),
                    cbor2.dumps(cbor2.CBORTag(60000, [b"q", b"\xa1\x6bpubkey-hash\x82\x01\x40"]))):
        bad = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(ratls.OID_DICE_TAGGED_EVIDENCE),
                                                         garbage), critical=False).sign(key, hashes.SHA256()))
        with pytest.raises(ratls.AttestationError):
            ratls.verify_certificate(der(bad), verifier, None)


class Server:
    """A TLS echo server on the loopback that records what happened to each connection."""

    def __init__(self, ctx: ssl.SSLContext, verifier=None, policy=None) -> None:  # noqa: ANN001
        self.ctx, self.verifier, self.policy = ctx, verifier, policy
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.results: list[object] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(10)
                tls = self.ctx.wrap_socket(conn, server_side=True)
                if self.verifier is not None:
                    peer = ratls.verify_peer(tls, self.verifier, self.policy)
                    self.results.append(peer)
                tls.sendall(b"hello " + tls.recv(100))
                tls.close()
            except Exception as e:  # noqa: BLE001
                self.results.append(e)
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_server_attested_tls(attester, verifier):
    cert, key = ratls.make_certificate(attester)
    srv = Server(ratls.server_context(cert, key))
    try:
        tls = ratls.connect(srv.address, ratls.client_context())
        peer = ratls.verify_peer(tls, verifier, Policy.default(ALLOW_SIM))
        assert peer.claims.get("mr_enclave") and peer.claims.simulated
        tls.sendall(b"x")
        assert tls.recv(100) == b"hello x"
        tls.close()
        tls = ratls.connect(srv.address, ratls.client_context())
        with pytest.raises(ratls.AttestationError, match="rule 'simulated'"):
            ratls.verify_peer(tls, verifier, Policy.default())
    finally:
        srv.close()


def test_plain_server_is_refused_by_an_attesting_client(attester, verifier):
    cert, key = legacy_cert(attester, "1.2.3.4")
    srv = Server(ratls.server_context(cert, key))
    try:
        tls = ratls.connect(srv.address, ratls.client_context())
        with pytest.raises(ratls.AttestationError, match="no TEE evidence"):
            ratls.verify_peer(tls, verifier, None)
        tls = ratls.connect(srv.address, ratls.client_context())
        ratls.pinned_peer(tls, hashlib.sha256(ratls.spki_der(key.public_key())).digest())
        tls.close()
        tls = ratls.connect(srv.address, ratls.client_context())
        with pytest.raises(ratls.AttestationError, match="not the pinned"):
            ratls.pinned_peer(tls, bytes(32))
    finally:
        srv.close()


def test_mutual_tls_good_and_bad_clients(attester, verifier):
    scert, server_key = legacy_cert(attester, "1.2.3.4")
    srv = Server(ratls.server_context(scert, server_key, mutual=True), verifier, Policy.default(ALLOW_SIM))
    try:
        ccert, ckey = ratls.make_certificate(attester)
        tls = ratls.connect(srv.address, ratls.client_context(ccert, ckey))
        tls.sendall(b"y")
        assert tls.recv(100) == b"hello y"
        tls.close()
        # a client with a plain self-signed certificate: the handshake completes, the server closes it unread
        plain, pkey = legacy_cert(attester, "1.2.3.4")
        tls = ratls.connect(srv.address, ratls.client_context(plain, pkey))
        try:
            tls.sendall(b"z")
            got = tls.recv(100)
        except (ssl.SSLError, OSError):
            got = b""
        assert got == b""
        # a client without a certificate fails the handshake
        with pytest.raises((ssl.SSLError, OSError)):
            t = ratls.connect(srv.address, ratls.client_context())
            t.sendall(b"w")
            if t.recv(100) == b"":
                raise OSError("closed")
        # a client whose evidence is bound to another key
        cert_b, key_b = legacy_cert(attester, ratls.OID_RATS_SGX_QUOTE, bind=False)
        tls = ratls.connect(srv.address, ratls.client_context(cert_b, key_b))
        try:
            tls.sendall(b"v")
            got = tls.recv(100)
        except (ssl.SSLError, OSError):
            got = b""
        assert got == b""
    finally:
        srv.close()
    kinds = [type(r).__name__ for r in srv.results]
    assert kinds[0] == "AttestedPeer" and "AttestationError" in kinds[1:], kinds
