"""SHA-256, HMAC-SHA256 and HKDF-SHA256 of bytes in memory, from CPython's built-in SHA-256.

hashlib's import (and the `hmac` module's, which imports hashlib's OpenSSL half) loads and initialises OpenSSL's
libcrypto: 3 ms that a sim enclave's warm launch, whose trusted files are cache hits, spends on nothing else. The
launch hashes a manifest, a modulus and a signed structure, and derives the sealing keys; these come from here, and
files are measured with hashlib (OpenSSL's SHA-256 is about seven times faster here), imported where a file is read.
HMAC is RFC 2104's construction over this SHA-256 and HKDF RFC 5869's; tests/tee/test_sha256.py checks both against
the standard library's hmac and `cryptography`'s HKDF, and RFC 4231's and RFC 5869's test vectors."""

from __future__ import annotations

try:
    from _sha256 import sha256  # CPython 3.11 and older: built into the interpreter
except ImportError:  # pragma: no cover - the interpreter's version decides
    try:
        from _sha2 import sha256  # CPython 3.12 and newer
    except ImportError:
        from hashlib import sha256

__all__ = ["hkdf_sha256", "hmac_sha256", "sha256"]

_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104): 32 bytes."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(key.translate(_IPAD) + msg).digest()
    return sha256(key.translate(_OPAD) + inner).digest()


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int = 16) -> bytes:
    """HKDF-SHA256 (RFC 5869), extract then expand, for one output block (length <= 32)."""
    if not 0 < length <= 32:
        raise ValueError("hkdf_sha256 gives 1 to 32 bytes")
    prk = hmac_sha256(salt or bytes(32), secret)
    return hmac_sha256(prk, info + b"\x01")[:length]
