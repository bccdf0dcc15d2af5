"""inclavare.tee.openssl: libcrypto reads its configuration when it is loaded (in the runelet: before pivot_root, the
host's file), never later at its first use (after pivot_root it would be the image's)."""

from __future__ import annotations

import subprocess
import sys

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from tests.conftest import REPO
from tests.enclave.test_sim_enclave import EVIL_OPENSSL_CNF


def test_the_configuration_is_read_at_load_not_at_first_use(tmp_path):
    cnf = tmp_path / "openssl.cnf"  # not there yet when the library loads; a provider that cannot load, after
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
            "from inclavare.tee import openssl\n"
            "lib = openssl.load()\n"
            f"open({str(cnf)!r}, 'w').write({EVIL_OPENSSL_CNF!r})\n"
            "print(lib.cmac_aes128(bytes(16), b'd').hex())\n"
            "print('_hashlib' in sys.modules)\n")  # nothing else initialised OpenSSL first
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], env={"OPENSSL_CONF": str(cnf)}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    c = cmac.CMAC(algorithms.AES(bytes(16)))
    c.update(b"d")
    assert p.stdout.split() == [c.finalize().hex(), "False"], p.stdout
