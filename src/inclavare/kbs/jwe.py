"""Resources wrapped for the TEE's key as the KBS protocol does: flattened JSON JWE {"protected", "encrypted_key",
"iv", "ciphertext", "tag"}, enc A256GCM, alg by the key: ECDH-ES+A256KW (P-256, P-384, P-521) or RSA-OAEP-256.

The cryptography is jwcrypto's (its key management and content encryption algorithms). The protected header is
serialised here, because the guest's KBS client authenticates it by re-serialising the header it parsed: compact
JSON, "alg" then "enc" then "epk" with its keys in the order crv, kty, x, y. jwcrypto's own JWE object would put
"epk" in the unprotected header, which that client does not read.
"""

from __future__ import annotations

import base64
import json
from typing import Any

ALGS = ("ECDH-ES+A256KW", "RSA-OAEP-256")


class JweError(ValueError):
    pass


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key(jwk_obj: Any) -> Any:
    """A jwcrypto JWK from the tee-pubkey JSON, public parts only; JweError naming the fault."""
    from jwcrypto import jwk

    if not isinstance(jwk_obj, dict):
        raise JweError("tee-pubkey must be a JWK object")
    kty = jwk_obj.get("kty")
    fields = {"EC": ("kty", "crv", "x", "y"), "RSA": ("kty", "n", "e")}.get(kty)
    if fields is None:
        raise JweError(f"tee-pubkey kty {kty!r} is not EC or RSA")
    if any(not isinstance(jwk_obj.get(f), str) for f in fields):
        raise JweError(f"tee-pubkey of kty {kty} needs {', '.join(fields)}")
    if kty == "EC" and jwk_obj["crv"] not in ("P-256", "P-384", "P-521"):
        raise JweError(f"tee-pubkey curve {jwk_obj['crv']!r} is not P-256, P-384 or P-521")
    try:
        key = jwk.JWK(**{f: jwk_obj[f] for f in fields})
    except Exception as e:  # noqa: BLE001 - jwcrypto raises several types for bad keys
        raise JweError(f"tee-pubkey is not a valid {kty} key: {e}") from None
    if kty == "RSA" and key.get_op_key("encrypt").key_size < 2048:
        raise JweError("tee-pubkey RSA keys must be at least 2048 bits")
    return key


def encrypt(plaintext: bytes, jwk_obj: dict[str, Any]) -> dict[str, str]:
    from jwcrypto import jwa

    key = public_key(jwk_obj)
    alg = "ECDH-ES+A256KW" if jwk_obj["kty"] == "EC" else "RSA-OAEP-256"
    enc = jwa.JWA.encryption_alg("A256GCM")
    wrapped = jwa.JWA.keymgmt_alg(alg).wrap(key, enc.wrap_key_size, None, {"alg": alg, "enc": "A256GCM"})
    header: dict[str, Any] = {"alg": alg, "enc": "A256GCM"}
    epk = (wrapped.get("header") or {}).get("epk")
    if epk:
        header["epk"] = {k: epk[k] for k in ("crv", "kty", "x", "y")}
    protected = b64u(json.dumps(header, separators=(",", ":")).encode())
    iv, ciphertext, tag = enc.encrypt(wrapped["cek"], protected.encode(), plaintext)
    return {"protected": protected, "encrypted_key": b64u(wrapped["ek"]), "iv": b64u(iv),
            "ciphertext": b64u(ciphertext), "tag": b64u(tag)}
