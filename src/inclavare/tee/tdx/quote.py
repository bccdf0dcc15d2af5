"""TDX quotes v4 and v5 (Intel's TDX DCAP quote layout), parsed from and kept as the exact received bytes.

    v4: header 48 | TD report 1.0 (584) | signature data length u32 | signature data
    v5: header 48 | body type u16 (2 = TD report 1.0, 3 = TD report 1.5) | body size u32 | body | sig data length u32 |
        signature data
    signature data: ECDSA signature r||s 64 (over everything before the signature data length) | attestation key
        x||y 64 | certification data type u16 (6 = QE report certification data) | size u32 | QeCertData (QE report,
        its PCK signature, QE auth data, then certification data type 5: the PCK chain)

Zero bytes after the signature data (a quote read from a fixed-size buffer) are allowed, anything else is refused.
The header is the SGX quote header with tee_type 0x81; in v4/v5 its bytes 8..12 are reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.tee.sgx.layout import FormatError, Structure, raw, structure
from inclavare.tee.sgx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_DATA_QE_REPORT,
    TEE_TYPE_TDX,
    QeCertData,
    QuoteHeader,
    check_padding,
    pem_chain,
)
from inclavare.tee.sgx.report import ReportBody

BODY_TD10 = 2
BODY_TD15 = 3


@structure(584)
class TdReport10(Structure):
    tee_tcb_svn: bytes = raw(0, 16)
    mr_seam: bytes = raw(16, 48)
    mr_signer_seam: bytes = raw(64, 48)
    seam_attributes: bytes = raw(112, 8)
    td_attributes: bytes = raw(120, 8)
    xfam: bytes = raw(128, 8)
    mr_td: bytes = raw(136, 48)
    mr_config_id: bytes = raw(184, 48)
    mr_owner: bytes = raw(232, 48)
    mr_owner_config: bytes = raw(280, 48)
    rtmr0: bytes = raw(328, 48)
    rtmr1: bytes = raw(376, 48)
    rtmr2: bytes = raw(424, 48)
    rtmr3: bytes = raw(472, 48)
    report_data: bytes = raw(520, 64)


@structure(648)
class TdReport15(TdReport10):
    """TD report 1.5 (quote v5 body type 3): TD report 1.0 and two fields more."""

    tee_tcb_svn2: bytes = raw(584, 16)
    mr_service_td: bytes = raw(600, 48)


TD_DEBUG = 0x01  # TDATTRIBUTES bit 0: TUD.DEBUG


@dataclass(frozen=True)
class TdxQuote:
    header: QuoteHeader
    body_type: int
    report_body: TdReport10 | TdReport15
    signature: bytes
    attest_pub_key: bytes
    qe: QeCertData
    raw: bytes
    signed_size: int

    @property
    def version(self) -> int:
        return self.header.version

    # the QE side, named as on an SGX quote so that one signature check serves both
    @property
    def qe_report(self) -> ReportBody:
        return self.qe.qe_report

    @property
    def qe_report_signature(self) -> bytes:
        return self.qe.qe_report_signature

    @property
    def qe_auth_data(self) -> bytes:
        return self.qe.qe_auth_data

    @property
    def cert_data_type(self) -> int:
        return self.qe.cert_data_type

    @property
    def cert_data(self) -> bytes:
        return self.qe.cert_data

    def signed_bytes(self) -> bytes:
        return self.raw[: self.signed_size]

    def qe_report_bytes(self) -> bytes:
        return self.qe.qe_report_raw

    def to_bytes(self) -> bytes:
        return self.raw

    def pck_chain_pem(self) -> list[bytes]:
        return pem_chain(self.qe.cert_data_type, self.qe.cert_data)

    @property
    def debug(self) -> bool:
        return bool(self.report_body.td_attributes[0] & TD_DEBUG)

    @classmethod
    def from_bytes(cls, data: bytes) -> TdxQuote:
        data = bytes(data)
        if len(data) < 48 + 584 + 4:
            raise FormatError(f"a TDX quote is at least {48 + 584 + 4} bytes, got {len(data)}")
        header = QuoteHeader.from_bytes(data[:48], strict=False)
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise FormatError(f"attestation key type {header.att_key_type} is not ECDSA P-256 (2)")
        if header.att_key_data_0 != TEE_TYPE_TDX:
            raise FormatError(f"TEE type 0x{header.att_key_data_0:x} is not TDX (0x81)")
        if header.version == 4:
            body_type, pos = BODY_TD10, 48
            size = TdReport10.SIZE
        elif header.version == 5:
            body_type, size = struct.unpack_from("<HI", data, 48)
            pos = 54
            want = {BODY_TD10: TdReport10.SIZE, BODY_TD15: TdReport15.SIZE}.get(body_type)
            if want is None:
                raise FormatError(f"TDX quote v5 body type {body_type} is not a TD report (2 or 3)")
            if size != want:
                raise FormatError(f"TDX quote v5 body size {size} does not match its type {body_type} ({want})")
        else:
            raise FormatError(f"TDX quote version {header.version} is not supported (4 or 5)")
        cls_body = TdReport15 if body_type == BODY_TD15 else TdReport10
        if len(data) < pos + size + 4:
            raise FormatError("the TDX quote ends inside its TD report")
        body = cls_body.from_bytes(data[pos : pos + size], strict=False)
        signed = pos + size
        (sig_len,) = struct.unpack_from("<I", data, signed)
        sig = data[signed + 4 : signed + 4 + sig_len]
        check_padding(data, signed + 4, sig_len, "TDX quote")
        if sig_len < 134 + QeCertData.MIN_SIZE:
            raise FormatError("the TDX quote's signature data is too short")
        cert_type, cert_size = struct.unpack_from("<HI", sig, 128)
        if cert_type != CERT_DATA_QE_REPORT:
            raise FormatError(f"the TDX quote's certification data type is {cert_type}, not 6 (QE report)")
        if cert_size != len(sig) - 134:
            raise FormatError(f"the TDX quote's certification data size {cert_size} does not match "
                              f"the {len(sig) - 134} bytes left")
        qe = QeCertData.parse(sig[134:], "the TDX quote's")
        return cls(header, body_type, body, sig[0:64], sig[64:128], qe, data, signed)


def is_tdx_quote(data: bytes) -> bool:
    if len(data) < 48 + 584 + 4:
        return False
    version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    return version in (4, 5) and key_type == ATT_KEY_TYPE_ECDSA_P256 and tee_type == TEE_TYPE_TDX
