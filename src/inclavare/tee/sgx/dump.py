"""Recognise an SGX structure by its content and render its fields (Intel's header names) as JSON or text.

Recognition: a quote v3 by version 3, key type 2 and a consistent signature data length; a TDX quote v4/v5 by its
version, key type 2 and TEE type 0x81; a SIGSTRUCT by its 1808
bytes and fixed header; then by size: REPORT 432, TARGETINFO 512, EINITTOKEN 304, REPORT body 384.
JSON: {"structure": "quote"|"sigstruct"|..., fields...}, integers as numbers, bytes as lowercase hex; nested
structures as objects, named as in Intel's headers (a quote has header, report_body, signature_data_len and signature_data{...}).
"""

from __future__ import annotations

from typing import Any

from inclavare.tee.sgx import quote as q
from inclavare.tee.sgx import sigstruct as ss
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sgx.einittoken import EInitToken
from inclavare.tee.sgx.layout import FormatError, Structure
from inclavare.tee.sgx.report import Report, ReportBody, TargetInfo

ATTRIBUTE_FIELDS = {"attributes", "attribute_mask", "attributes_le"}


def identify(data: bytes) -> tuple[str, Any]:
    """('quote'|'tdx_quote'|'sigstruct'|'report'|'targetinfo'|'einittoken'|'report_body', parsed object); FormatError
    if none."""
    from inclavare.tee.tdx import quote as tdx

    if tdx.is_tdx_quote(data):
        return "tdx_quote", tdx.TdxQuote.from_bytes(data)
    if q.is_quote(data):
        return "quote", q.Quote.from_bytes(data)
    if len(data) == ss.Sigstruct.SIZE and data[:12] == ss.HEADER:
        return "sigstruct", ss.Sigstruct.from_bytes(data, strict=False)
    by_size: dict[int, tuple[str, type[Structure]]] = {
        Report.SIZE: ("report", Report), TargetInfo.SIZE: ("targetinfo", TargetInfo),
        EInitToken.SIZE: ("einittoken", EInitToken), ReportBody.SIZE: ("report_body", ReportBody),
    }
    if len(data) in by_size:
        name, cls = by_size[len(data)]
        return name, cls.from_bytes(data, strict=False)
    raise FormatError(f"{len(data)} bytes are not an SGX quote v3, TDX quote v4/v5, SIGSTRUCT, REPORT, TARGETINFO, EINITTOKEN or report body")


def _fields(s: Structure) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in s.fields().items():
        out[name] = value.hex() if isinstance(value, bytes | bytearray) else value
    if isinstance(s, Report):
        out["body"] = _fields(s.report_body)
    return out


def _chain(quote: q.Quote) -> list[dict[str, str]]:
    pems = quote.pck_chain_pem()
    if not pems:
        return []
    from cryptography import x509

    out = []
    for pem in pems:
        try:
            c = x509.load_pem_x509_certificate(pem)
        except ValueError:
            out.append({"error": "unparsable certificate"})
            continue
        out.append({"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
                    "not_after": c.not_valid_after_utc.isoformat()})
    return out


def _qe_part(obj: Any) -> dict[str, Any]:
    return {
        "qe_report": _fields(obj.qe_report),
        "qe_report_signature": obj.qe_report_signature.hex(),
        "qe_auth_data": obj.qe_auth_data.hex(),
        "certification_data": {"cert_key_type": obj.cert_data_type, "size": len(obj.cert_data),
                               "pck_chain": _chain(obj), "data": obj.cert_data.hex()},
    }


def to_json(kind: str, obj: Any) -> dict[str, Any]:
    from inclavare.tee.sgx.quote_verify import sim_marks

    if kind == "tdx_quote":
        out: dict[str, Any] = {"structure": "tdx_quote", "header": _fields(obj.header)}
        if obj.version == 5:
            out["body_type"] = obj.body_type
            out["body_size"] = obj.report_body.SIZE
        out["td_report"] = _fields(obj.report_body)
        out["debug"] = obj.debug
        out["signature_data_len"] = 134 + _qe_len(obj)
        out["signature_data"] = {"signature": obj.signature.hex(), "attest_pub_key": obj.attest_pub_key.hex(),
                                 "cert_data_type": 6, **_qe_part(obj)}
        out["simulated"] = bool(sim_marks(obj))
        return out
    if kind != "quote":
        out = {"structure": kind, **_fields(obj)}
        if kind == "sigstruct":
            out["mr_signer"] = obj.mr_signer.hex()
        return out
    sig = obj.signature_data()
    return {
        "structure": "quote",
        "header": _fields(obj.header),
        "report_body": _fields(obj.report_body),
        "signature_data_len": len(sig),
        "signature_data": {"signature": obj.signature.hex(), "attest_pub_key": obj.attest_pub_key.hex(),
                           **_qe_part(obj)},
        "simulated": bool(sim_marks(obj)),
    }


def _qe_len(obj: Any) -> int:
    return 384 + 64 + 2 + len(obj.qe_auth_data) + 6 + len(obj.cert_data)


def _text(d: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines += _text(v, indent + "  ")
        elif isinstance(v, list):
            lines.append(f"{indent}{k}:")
            for i, item in enumerate(v):
                lines.append(f"{indent}  [{i}]")
                lines += _text(item, indent + "    ") if isinstance(item, dict) else [f"{indent}    {item}"]
        elif k in ATTRIBUTE_FIELDS and isinstance(v, str) and len(v) == 32:
            lines.append(f"{indent}{k}: {v}  [{Attributes.from_bytes(bytes.fromhex(v)).describe()}]")
        elif k == "data" and isinstance(v, str) and len(v) > 96:
            lines.append(f"{indent}{k}: {v[:64]}... ({len(v) // 2} bytes)")
        elif isinstance(v, str) and len(v) >= 64 and set(v) == {"0"}:
            lines.append(f"{indent}{k}: 0 x {len(v) // 2} bytes")
        elif isinstance(v, str) and len(v) > 128:
            lines.append(f"{indent}{k}: {v[:64]}... ({len(v) // 2} bytes)")
        else:
            lines.append(f"{indent}{k}: {v}")
    return lines


def to_text(kind: str, obj: Any) -> str:
    d = to_json(kind, obj)
    head = {"quote": "SGX quote v3", "tdx_quote": f"TDX quote v{getattr(obj, 'version', '')}", "sigstruct": "SIGSTRUCT", "report": "REPORT", "targetinfo": "TARGETINFO",
            "einittoken": "EINITTOKEN", "report_body": "REPORT body"}[kind]
    if d.get("simulated"):
        head += "  ** SIMULATED evidence (inclavare sim), not SGX hardware **"
    d.pop("structure")
    return "\n".join([head, *_text(d, "  ")])
