"""Fixtures for enclave containers: the reference PAL libraries (built with `make pal` when missing), a private sim
platform directory, an RSA-3072 (e=3) signing key, and bundles whose config names an enclave type."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import REPO


@pytest.fixture(scope="session")
def pal_libs() -> dict[int, str]:
    libs = {v: REPO / "build" / "pal" / f"liberpal-skeleton-v{v}.so" for v in (1, 2, 3)}
    if not all(p.exists() for p in libs.values()):
        subprocess.run(["make", "-s", "pal"], cwd=REPO, check=True)
    return {v: str(p) for v, p in libs.items()}


@pytest.fixture
def sim_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "sim"
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(d))  # rune and sgx-tools inherit it
    return d


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    p = tmp_path_factory.mktemp("key") / "enclave.pem"
    p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return p


def pal_bundle(rune, pal: str | None, args: list[str], pal_args: str = "", env: tuple[str, ...] = (),
               typ: str = "sim", edit=None) -> Path:
    def e(c: dict) -> None:
        c["process"]["env"] += [f"ENCLAVE_TYPE={typ}", *env]
        if pal:
            c["process"]["env"].append(f"ENCLAVE_RUNTIME_PATH={pal}")
        if pal_args:
            c["process"]["env"].append(f"ENCLAVE_RUNTIME_ARGS={pal_args}")
        if edit is not None:
            edit(c)

    return rune.bundle(args, edit=e)


def read_state(rune, cid: str) -> dict:
    """state.json with the container's config.json under "config"."""
    state = json.loads((rune.root / cid / "state.json").read_text())
    state["config"] = json.loads((rune.root / cid / "config.json").read_text())
    return state


def wait_status(rune, cid: str, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        p = rune("state", cid)
        st = json.loads(p.stdout)["status"] if p.returncode == 0 else "missing"
        if st == want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)
