"""inclavare.tee.sha256: SHA-256, HMAC-SHA256 and HKDF-SHA256 without hashlib or libcrypto, for a sim enclave's
launch. The published test vectors, and the standard library's and `cryptography`'s answers over many lengths."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tests.conftest import REPO

from inclavare.tee import sha256 as s

RFC4231 = [  # (key, data, HMAC-SHA256)
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]
RFC5869 = [  # (IKM, salt, info, the first 32 bytes of the OKM)
    (b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)),
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"),
    (b"\x0b" * 22, b"", b"", "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"),
]


@pytest.mark.parametrize(("key", "data", "mac"), RFC4231)
def test_hmac_matches_rfc_4231(key: bytes, data: bytes, mac: str) -> None:
    assert s.hmac_sha256(key, data).hex() == mac


@pytest.mark.parametrize(("ikm", "salt", "info", "okm"), RFC5869)
def test_hkdf_matches_rfc_5869(ikm: bytes, salt: bytes, info: bytes, okm: str) -> None:
    assert s.hkdf_sha256(ikm, salt, info, 32).hex() == okm


def test_every_key_and_message_length_matches_the_libraries() -> None:
    for n in (0, 1, 31, 32, 55, 56, 63, 64, 65, 127, 128, 129, 200):
        key, msg = os.urandom(n), os.urandom(n * 3 + 1)
        assert s.sha256(msg).digest() == hashlib.sha256(msg).digest()
        assert s.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
        for length in (1, 16, 32):
            want = HKDF(hashes.SHA256(), length, key or None, msg).derive(msg[::-1])
            assert s.hkdf_sha256(msg[::-1], key, msg, length) == want


def test_hkdf_gives_one_block_only() -> None:
    for length in (0, 33):
        with pytest.raises(ValueError, match="1 to 32 bytes"):
            s.hkdf_sha256(b"s", b"", b"", length)


def test_a_warm_sim_launch_imports_neither_hashlib_nor_hmac() -> None:
    """What the runelet imports for a sim enclave (sim_runtime.preimport) and what a launch whose files are cache
    hits runs (the manifest's digest, the SIGSTRUCT check, the sealing keys) load no OpenSSL through hashlib."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
            "from inclavare.enclave import sim_runtime\n"
            "sim_runtime.preimport()\n"
            "from inclavare.tee.sim import ereport\n"
            "from inclavare.tee.sgx import sigstruct\n"
            "ereport._hkdf(b's' * 32, bytes(32), b'info')\n"
            "sigstruct.mr_signer(bytes(384))\n"
            "print(sorted(m for m in ('hashlib', '_hashlib', 'hmac') if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
