"""SGX ECDSA quote v3 (Intel's sgx_quote_3.h): parse and build.

    header 48 | report body 384 | signature data length u32 | signature data:
        ISV signature r||s 64 (over header || report body) | attestation key x||y 64 | QE report body 384 |
        QE report signature r||s 64 (by the PCK key) | QE auth data length u16 | QE auth data |
        certification data type u16 | size u32 | certification data

Certification data type 5 is the PEM chain PCK leaf || intermediate CA || root CA.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from inclavare.tee.sgx.layout import FormatError, Structure, raw, structure, u16, u32
from inclavare.tee.sgx.report import ReportBody

QUOTE_VERSION_3 = 3
ATT_KEY_TYPE_ECDSA_P256 = 2
ATT_KEY_TYPE_ECDSA_P384 = 3
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

CERT_DATA_PPID_CLEARTEXT = 1
CERT_DATA_PPID_RSA2048 = 2
CERT_DATA_PPID_RSA3072 = 3
CERT_DATA_PCK_CERT = 4
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
CERT_DATA_PLATFORM_MANIFEST = 7

SIGNED_SIZE = 48 + 384  # header and report body: what the ISV (attestation key) signature covers
_FIXED_SIG_SIZE = 64 + 64 + 384 + 64 + 2  # up to the QE auth data


@structure(48)
@dataclass(frozen=True)
class QuoteHeader(Structure):
    version: int = u16(0)
    att_key_type: int = u16(2)
    att_key_data_0: int = u32(4)
    qe_svn: int = u16(8)
    pce_svn: int = u16(10)
    vendor_id: bytes = raw(12, 16)
    user_data: bytes = raw(28, 20)


@dataclass(frozen=True)
class Quote:
    """A quote v3 with an ECDSA P-256 signature data section."""

    header: QuoteHeader
    report_body: ReportBody
    signature: bytes  # ISV enclave report signature r||s, big-endian
    attest_pub_key: bytes  # x||y, big-endian
    qe_report: ReportBody
    qe_report_signature: bytes  # r||s by the PCK key
    qe_auth_data: bytes = b""
    cert_data_type: int = CERT_DATA_PCK_CHAIN
    cert_data: bytes = b""
    _raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        data = bytes(data)
        if len(data) < SIGNED_SIZE + 4:
            raise FormatError(f"a quote v3 is at least {SIGNED_SIZE + 4} bytes, got {len(data)}")
        header = QuoteHeader.from_bytes(data[:48], strict=False)
        if header.version != QUOTE_VERSION_3:
            raise FormatError(f"quote version {header.version} is not supported (only SGX quote v3)")
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise FormatError(f"attestation key type {header.att_key_type} is not ECDSA P-256 (2)")
        body = ReportBody.from_bytes(data[48:432], strict=False)
        (sig_len,) = struct.unpack_from("<I", data, 432)
        sig = data[436:]
        if sig_len != len(sig):
            raise FormatError(f"the quote's signature data length is {sig_len} but {len(sig)} bytes follow")
        if sig_len < _FIXED_SIG_SIZE:
            raise FormatError("the quote's signature data is too short")
        isv_sig, att_key = sig[0:64], sig[64:128]
        qe_report = ReportBody.from_bytes(sig[128:512], strict=False)
        qe_sig = sig[512:576]
        (auth_len,) = struct.unpack_from("<H", sig, 576)
        pos = 578
        qe_auth = sig[pos : pos + auth_len]
        pos += auth_len
        if len(qe_auth) != auth_len or pos + 6 > len(sig):
            raise FormatError("the quote's QE auth data runs past its end")
        cert_type, cert_size = struct.unpack_from("<HI", sig, pos)
        pos += 6
        cert = sig[pos : pos + cert_size]
        if len(cert) != cert_size or pos + cert_size != len(sig):
            raise FormatError(
                f"the quote's certification data size {cert_size} does not match the {len(sig) - pos} bytes left"
            )
        return cls(header, body, isv_sig, att_key, qe_report, qe_sig, qe_auth, cert_type, cert, data)

    def signature_data(self) -> bytes:
        for name, value, size in (("signature", self.signature, 64), ("attest_pub_key", self.attest_pub_key, 64),
                                  ("qe_report_signature", self.qe_report_signature, 64)):
            if len(value) != size:
                raise FormatError(f"quote {name} must be {size} bytes")
        return (
            self.signature + self.attest_pub_key + self.qe_report.to_bytes() + self.qe_report_signature
            + struct.pack("<H", len(self.qe_auth_data)) + self.qe_auth_data
            + struct.pack("<HI", self.cert_data_type, len(self.cert_data)) + self.cert_data
        )

    def signed_bytes(self) -> bytes:
        """Header || report body: what the attestation key signs."""
        return self.header.to_bytes() + self.report_body.to_bytes()

    def to_bytes(self) -> bytes:
        sig = self.signature_data()
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig

    def pck_chain_pem(self) -> list[bytes]:
        """The PEM certificates of certification data type 5, leaf first; [] for other types."""
        if self.cert_data_type != CERT_DATA_PCK_CHAIN:
            return []
        return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", self.cert_data, re.S)


def is_quote(data: bytes) -> bool:
    """True when `data` looks like an SGX quote v3 (version, key type and a consistent length)."""
    if len(data) < SIGNED_SIZE + 4 + _FIXED_SIG_SIZE:
        return False
    version, key_type = struct.unpack_from("<HH", data, 0)
    (sig_len,) = struct.unpack_from("<I", data, 432)
    return version == QUOTE_VERSION_3 and key_type == ATT_KEY_TYPE_ECDSA_P256 and sig_len == len(data) - 436
