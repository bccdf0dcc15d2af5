"""A private DCAP PKI for tests: a test root CA, PCK processor CA and PCK leaf, TCB signing certificate, CRLs, a TCB
info and QE identity signed by the test TCB key, and SGX quotes v3 signed by a test attestation key, all made here
(never committed). The PCK leaf carries the Intel SGX extension, the TCB info and QE identity the platform's levels,
copied at test time from the real quote and collateral in ../shared/vectors/dcap-qvl, so dcap-qvl (given the test
root with `QuoteVerifier(root_ca_der)`) verifies these quotes exactly as real ones: the tests can then revoke the PCK,
set a debug enclave, move the TCB status or the validity dates, which no real signed data allows."""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.tee.sgx import quote_verify as qv
from inclavare.tee.sgx.quote import CERT_DATA_PCK_CHAIN, Quote
from inclavare.tee.sgx.report import ReportBody

SGX_EXT = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
T0 = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)  # every validity starts here
T1 = datetime.datetime(2025, 9, 1, tzinfo=datetime.UTC)  # the collateral expires here
NOW = int(datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC).timestamp())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
                      x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, extra: list[x509.ExtensionType] = (), serial: int | None = None,
          not_after: datetime.datetime = T1 + datetime.timedelta(days=3650)) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer).public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number()).not_valid_before(T0 - datetime.timedelta(days=30))
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None if not ca else 0 if "Root" not in cn else 1),
                        critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    for e in extra:
        b = b.add_extension(e, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: list[int],
         next_update: datetime.datetime) -> bytes:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(T0)
         .next_update(next_update)
         .add_extension(x509.CRLNumber(1), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False))
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(T0).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return qv.p256_raw_signature(key, data).hex()


def _iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Platform:
    vectors: Path
    tcb_status: str = "UpToDate"  # the status of every TCB level
    revoke_pck: bool = False
    collateral_until: datetime.datetime = T1
    fmspc: str = ""  # another platform's TCB info when set
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        real = Quote.from_bytes((self.vectors / "dcap-qvl" / "sgx_quote").read_bytes())
        real_leaf = qv.load_chain(real)[0]
        self.real = real
        self.real_collateral = json.loads((self.vectors / "dcap-qvl" / "sgx_quote_collateral.json").read_text())
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_key = ec.generate_private_key(ec.SECP256R1())
        self.tcb_key = ec.generate_private_key(ec.SECP256R1())
        self.att_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name("Intel SGX Root CA")
        self.root = _cert("Intel SGX Root CA", self.root_key, root_name, self.root_key, ca=True)
        self.ca = _cert("Intel SGX PCK Processor CA", self.ca_key, root_name, self.root_key, ca=True)
        sgx_ext = real_leaf.extensions.get_extension_for_oid(SGX_EXT).value
        self.pck_serial = x509.random_serial_number()
        self.pck = _cert("Intel SGX PCK Certificate", self.pck_key, self.ca.subject, self.ca_key, ca=False,
                         extra=[sgx_ext], serial=self.pck_serial)
        self.tcb_signer = _cert("Intel SGX TCB Signing", self.tcb_key, root_name, self.root_key, ca=False)
        # as on a real platform, the QE report is made and signed once, when the attestation key is certified
        self.att_pub = qv.p256_public_xy(self.att_key.public_key())
        self.auth = bytes(range(32))
        self.qe_raw = real.qe_report.replace(
            report_data=hashlib.sha256(self.att_pub + self.auth).digest() + bytes(32)).to_bytes()
        self.qe_sig = qv.p256_raw_signature(self.pck_key, self.qe_raw)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def collateral(self) -> str:
        until = self.collateral_until
        tcb = json.loads(self.real_collateral["tcb_info"])
        tcb["issueDate"], tcb["nextUpdate"] = _iso(T0), _iso(until)
        if self.fmspc:
            tcb["fmspc"] = self.fmspc
        for level in tcb["tcbLevels"]:
            level["tcbStatus"] = self.tcb_status
            if self.tcb_status == "UpToDate":
                level.pop("advisoryIDs", None)
        qe = json.loads(self.real_collateral["qe_identity"])
        qe["issueDate"], qe["nextUpdate"] = _iso(T0), _iso(until)
        tcb_text = json.dumps(tcb, separators=(",", ":"))
        qe_text = json.dumps(qe, separators=(",", ":"))
        return json.dumps({
            "pck_crl_issuer_chain": _pem(self.ca, self.root),
            "root_ca_crl": _crl(self.root, self.root_key, [], until).hex(),
            "pck_crl": _crl(self.ca, self.ca_key, [self.pck_serial] if self.revoke_pck else [], until).hex(),
            "tcb_info_issuer_chain": _pem(self.tcb_signer, self.root),
            "tcb_info": tcb_text, "tcb_info_signature": _sign_raw(self.tcb_key, tcb_text.encode()),
            "qe_identity_issuer_chain": _pem(self.tcb_signer, self.root),
            "qe_identity": qe_text, "qe_identity_signature": _sign_raw(self.tcb_key, qe_text.encode()),
        })

    def quote(self, debug: bool = False, report_data: bytes = b"", mr_enclave: bytes | None = None,
              isv_svn: int = 0, reserved: tuple[int, int] | None = None) -> bytes:
        """A quote v3 of an enclave on this platform. `reserved=(offset, value)` sets a byte of the report body's
        reserved area before signing (a genuine quote with non-zero reserved bytes)."""
        real = self.real
        flags = int.from_bytes(real.report_body.attributes[:8], "little")
        flags = flags | 0x2 if debug else flags & ~0x2
        body = real.report_body.replace(attributes=flags.to_bytes(8, "little") + real.report_body.attributes[8:],
                                        report_data=report_data.ljust(64, b"\0"), isv_svn=isv_svn,
                                        mr_enclave=mr_enclave or real.report_body.mr_enclave)
        body_raw = bytearray(body.to_bytes())
        if reserved:
            body_raw[reserved[0]] = reserved[1]
        att_pub, auth, qe_raw, qe_sig = self.att_pub, self.auth, self.qe_raw, self.qe_sig
        header = real.header.to_bytes()
        isv_sig = qv.p256_raw_signature(self.att_key, header + bytes(body_raw))
        chain = _pem(self.pck, self.ca, self.root).encode()
        sig = (isv_sig + att_pub + qe_raw + qe_sig + struct.pack("<H", len(auth)) + auth
               + struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(chain)) + chain)
        assert ReportBody.SIZE == len(body_raw)
        return header + bytes(body_raw) + struct.pack("<I", len(sig)) + sig
