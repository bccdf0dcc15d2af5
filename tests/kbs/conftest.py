"""A verdictd of the test's own: its config, state, sockets and ports private to the test (ports picked by the
kernel), started through the bin/verdictd launcher and stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.attest.conftest import pki, sim_dir, sim_enclave, sim_root, vectors  # noqa: F401
from tests.conftest import REPO
from tests.tee.conftest import other_key_pem, signing_key_pem  # noqa: F401

CONFIG = """state_dir = "state"
admin_socket = "admin.sock"
audit_log = "audit.log"
[kbs]
listen = "127.0.0.1:0"
[attested_tls]
listen = ["unix:ratls.sock", "127.0.0.1:0"]
[attestation]
sim_roots = [{sim_roots}]
[limits]
io_timeout = {io_timeout}
max_connections = {max_connections}
max_body = 65536
"""


class Verdictd:
    def __init__(self, base: Path, sim_roots: list[str], io_timeout: float = 3, max_connections: int = 256) -> None:
        self.base = base
        self.config = base / "verdictd.toml"
        self.write_config(sim_roots, io_timeout, max_connections)
        self.proc: subprocess.Popen | None = None
        self.status: dict = {}

    def write_config(self, sim_roots: list[str], io_timeout: float = 3, max_connections: int = 256) -> None:
        self.config.write_text(CONFIG.format(sim_roots=", ".join(json.dumps(s) for s in sim_roots),
                                             io_timeout=io_timeout, max_connections=max_connections))

    def start(self) -> Verdictd:
        self.err = open(self.base / "verdictd.err", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(REPO / "bin" / "verdictd"), "--config", str(self.config)],
                                     stdout=self.err, stderr=self.err, cwd=self.base)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"verdictd exited {self.proc.returncode}: {(self.base / 'verdictd.err').read_text()}")
            p = self.verdict("--json", "status")
            if p.returncode == 0:
                self.status = json.loads(p.stdout)
                return self
            time.sleep(0.05)
        raise AssertionError("verdictd did not come up")

    def verdict(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:  # noqa: A002
        return subprocess.run([str(REPO / "bin" / "verdict"), "--socket", str(self.base / "admin.sock"), *args],
                              capture_output=True, input=input, timeout=60)

    @property
    def kbs(self) -> str:
        return self.status["kbs"]

    @property
    def ratls_unix(self) -> str:
        return self.status["attested_tls"][0]

    @property
    def ratls_tcp(self) -> str:
        return self.status["attested_tls"][1]

    @property
    def pin(self) -> bytes:
        return bytes.fromhex(self.status["tls_spki_sha256"])

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in (self.base / "audit.log").read_text().splitlines()]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self.proc = None
        self.err.close()
        return rc


@pytest.fixture(scope="session")
def launchers() -> None:
    if not (REPO / "bin" / "verdictd").exists() or not (REPO / "bin" / "verdict").exists():
        subprocess.run(["python3", "-m", "inclavare.launcher", str(REPO / "bin")], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})


@pytest.fixture
def verdictd(tmp_path: Path, sim_dir: Path, sim_enclave, launchers):  # noqa: ANN001, F811
    from inclavare.tee.sim.platform import load_platform

    load_platform(sim_dir)
    (tmp_path / "vd").mkdir()
    d = Verdictd(tmp_path / "vd", [str(sim_dir / "root_ca.pem")])
    d.start()
    yield d
    d.stop()


def allow_sim(d: Verdictd, name: str = "sim", **ref: object) -> None:
    f = d.base / f"{name}.json"
    f.write_text(json.dumps({"allow_simulated": True, **ref}))
    p = d.verdict("set-policy", name, "--reference", str(f))
    assert p.returncode == 0, p.stderr
