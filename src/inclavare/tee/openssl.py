"""OpenSSL's libcrypto through _ctypes (linux.syscalls' light C types): the few primitives a long-lived enclave
process needs (AES-128-CMAC, ECDSA P-256 signing; HMAC and HKDF are inclavare.tee.sha256's), without the `cryptography` package and its import
graph in memory. The init-runelet of a sim enclave loads it before pivot_root (the library is a host file) and uses
it for the enclave's whole life. OpenSSL 3 (EVP_Q_mac); `load` raises OSError where it is missing, and callers fall
back to `cryptography`.

Loading also initialises the library with its configuration file, at once: OpenSSL reads openssl.cnf (which may load
provider modules) at its first use otherwise, and in the runelet that would be after pivot_root, from the
container's image, running the image's code in the process that holds the platform's keys. Read now, it is the
host's. (Python's _hashlib initialises it too when imported first; this does not rely on it.)
"""

from __future__ import annotations

# syscalls' light C types: the ctypes package costs PID 1 about 2 ms more
from inclavare.linux import syscalls as _c

_INIT_LOAD_CONFIG = 0x40  # OPENSSL_INIT_LOAD_CONFIG
_P, _Z, _N = _c.c_void_p, _c.c_char_p, _c.c_size_t


class LibCrypto:
    def __init__(self, path: str = "libcrypto.so.3") -> None:
        lib = _c.Library(path)
        self.lib = lib
        init = lib.function("OPENSSL_init_crypto", (_c.c_uint64, _P))
        if init(_INIT_LOAD_CONFIG, None) != 1:
            raise OSError("libcrypto: OPENSSL_init_crypto failed (the host's OpenSSL configuration)")
        self._q_mac = lib.function("EVP_Q_mac", (_P, _Z, _Z, _Z, _P, _Z, _N, _Z, _N, _P, _N, _c.POINTER(_N)), _P)
        self._d2i_key = lib.function("d2i_AutoPrivateKey", (_P, _c.POINTER(_P), _c.c_long), _P)
        self._pkey_free = lib.function("EVP_PKEY_free", (_P,), None)
        self._md_ctx_new = lib.function("EVP_MD_CTX_new", (), _P)
        self._md_ctx_free = lib.function("EVP_MD_CTX_free", (_P,), None)
        self._sha256 = lib.function("EVP_sha256", (), _P)
        self._sign_init = lib.function("EVP_DigestSignInit", (_P, _P, _P, _P, _P))
        self._sign = lib.function("EVP_DigestSign", (_P, _P, _c.POINTER(_N), _Z, _N))

    def _mac(self, name: bytes, sub: bytes, key: bytes, data: bytes, size: int) -> bytes:
        out = _c.buffer(size)
        n = _N(0)
        if not self._q_mac(None, name, None, sub, None, key, len(key), data, len(data), out, size, _c.byref(n)):
            raise OSError(f"libcrypto: {name.decode()} failed")
        return out.raw[: n.value]

    def cmac_aes128(self, key: bytes, data: bytes) -> bytes:
        return self._mac(b"CMAC", b"AES-128-CBC", key, data, 16)

    def ecdsa_p256_sign(self, der_key: bytes, data: bytes) -> bytes:
        """ECDSA P-256/SHA-256 with a DER (PKCS#8) private key: the 64 bytes r||s that quotes carry."""
        buf = _c.buffer(len(der_key), der_key)
        p = _P(_c.addressof(buf))
        pkey = self._d2i_key(None, _c.byref(p), len(der_key))
        if not pkey:
            raise OSError("libcrypto: the ECDSA key does not parse")
        ctx = self._md_ctx_new()
        try:
            sig = _c.buffer(80)
            n = _N(80)
            if self._sign_init(ctx, None, self._sha256(), None, pkey) != 1 or self._sign(
                    ctx, sig, _c.byref(n), data, len(data)) != 1:
                raise OSError("libcrypto: ECDSA signing failed")
            return der_to_raw(sig.raw[: n.value])
        finally:
            self._md_ctx_free(ctx)
            self._pkey_free(pkey)


def der_to_raw(der: bytes) -> bytes:
    """An ECDSA-Sig-Value (SEQUENCE of two INTEGERs, DER) as r||s, 32 bytes each."""
    if len(der) < 8 or der[0] != 0x30:
        raise OSError("libcrypto: the ECDSA signature is not DER")
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise OSError("libcrypto: the ECDSA signature is not DER")
        n = der[i + 1]
        out += int.from_bytes(der[i + 2: i + 2 + n], "big").to_bytes(32, "big")
        i += 2 + n
    return out


_loaded: list[LibCrypto] = []


def load() -> LibCrypto:
    """The process's LibCrypto, loaded and initialised at the first call (a child forked after it shares it)."""
    if not _loaded:
        _loaded.append(LibCrypto())
    return _loaded[0]
