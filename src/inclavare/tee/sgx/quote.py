"""SGX ECDSA quote v3 (Intel's sgx_quote_3.h): parse and build.

    header 48 | report body 384 | signature data length u32 | signature data:
        ISV signature r||s 64 (over header || report body) | attestation key x||y 64 | QE report body 384 |
        QE report signature r||s 64 (by the PCK key) | QE auth data length u16 | QE auth data |
        certification data type u16 | size u32 | certification data

Certification data type 5 is the PEM chain PCK leaf || intermediate CA || root CA.

A parsed quote keeps the exact bytes it was read from: `signed_bytes()` and `qe_report_bytes()` return the received
bytes (reserved fields included), so every signature is checked over what was received, never over a re-serialised
copy. TDX quotes v4/v5 (inclavare.tee.tdx.quote) share the QE part of the signature data (`QeCertData`).
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
TEE_TYPE_SGX = 0
TEE_TYPE_TDX = 0x81


@structure(48)
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
            raise FormatError(f"quote version {header.version} is not supported here (SGX quote v3)")
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise FormatError(f"attestation key type {header.att_key_type} is not ECDSA P-256 (2)")
        body = ReportBody.from_bytes(data[48:432], strict=False)
        (sig_len,) = struct.unpack_from("<I", data, 432)
        sig = data[436 : 436 + sig_len]
        check_padding(data, 436, sig_len, "quote")
        if sig_len < 128 + QeCertData.MIN_SIZE:
            raise FormatError("the quote's signature data is too short")
        qe = QeCertData.parse(sig[128:], "the quote's")
        return cls(header, body, sig[0:64], sig[64:128], qe.qe_report, qe.qe_report_signature, qe.qe_auth_data,
                   qe.cert_data_type, qe.cert_data, data)

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
        """Header || report body as received (as built, for a quote not parsed): what the attestation key signs."""
        if self._raw:
            return self._raw[:SIGNED_SIZE]
        return self.header.to_bytes() + self.report_body.to_bytes()

    def qe_report_bytes(self) -> bytes:
        """The QE report body as received: what the PCK key signs."""
        if self._raw:
            return self._raw[436 + 128 : 436 + 128 + 384]
        return self.qe_report.to_bytes()

    @property
    def raw(self) -> bytes:
        return self._raw or self.to_bytes()

    def to_bytes(self) -> bytes:
        if self._raw:
            return self._raw
        sig = self.signature_data()
        return self.signed_bytes() + struct.pack("<I", len(sig)) + sig

    def pck_chain_pem(self) -> list[bytes]:
        """The PEM certificates of certification data type 5, leaf first; [] for other types."""
        return pem_chain(self.cert_data_type, self.cert_data)


def check_padding(data: bytes, start: int, sig_len: int, what: str) -> None:
    """The signature data fits, and only zero bytes follow it (a quote read from a larger buffer)."""
    if start + sig_len > len(data):
        raise FormatError(f"the {what}'s signature data length is {sig_len} but {len(data) - start} bytes follow")
    if data[start + sig_len :].strip(b"\0"):
        raise FormatError(f"the {what} has {len(data) - start - sig_len} bytes after its signature data that are not zero")


def pem_chain(cert_data_type: int, cert_data: bytes) -> list[bytes]:
    if cert_data_type != CERT_DATA_PCK_CHAIN:
        return []
    return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", cert_data, re.S)


@dataclass(frozen=True)
class QeCertData:
    """QE report || QE report signature || QE auth data || certification data: the part of the signature data that
    SGX v3 carries inline and TDX v4/v5 in certification data type 6 (QE report certification data)."""

    qe_report: ReportBody
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_data_type: int
    cert_data: bytes

    MIN_SIZE = 384 + 64 + 2 + 6

    @classmethod
    def parse(cls, buf: bytes, what: str) -> QeCertData:
        """Parse exactly `buf` (nothing may follow the certification data)."""
        if len(buf) < cls.MIN_SIZE:
            raise FormatError(f"{what} QE report certification data is too short")
        qe_raw = buf[0:384]
        qe_sig = buf[384:448]
        (auth_len,) = struct.unpack_from("<H", buf, 448)
        pos = 450
        qe_auth = buf[pos : pos + auth_len]
        pos += auth_len
        if len(qe_auth) != auth_len or pos + 6 > len(buf):
            raise FormatError(f"{what} QE auth data runs past its end")
        cert_type, cert_size = struct.unpack_from("<HI", buf, pos)
        pos += 6
        cert = buf[pos : pos + cert_size]
        if len(cert) != cert_size or pos + cert_size != len(buf):
            raise FormatError(
                f"{what} certification data size {cert_size} does not match the {len(buf) - pos} bytes left"
            )
        return cls(ReportBody.from_bytes(qe_raw, strict=False), qe_raw, qe_sig, qe_auth, cert_type, cert)


def is_quote(data: bytes) -> bool:
    """True when `data` looks like an SGX quote v3 (version, key type and a consistent length)."""
    if len(data) < SIGNED_SIZE + 4 + _FIXED_SIG_SIZE:
        return False
    version, key_type = struct.unpack_from("<HH", data, 0)
    (sig_len,) = struct.unpack_from("<I", data, 432)
    return version == QUOTE_VERSION_3 and key_type == ATT_KEY_TYPE_ECDSA_P256 and 0 < sig_len <= len(data) - 436
