"""epm's pool of pre-initialised enclaves for a PAL v3 runtime (the reference PAL, liberpal-skeleton-v3), through a
real epm daemon and `rune run`: each container gets its own enclave (the skeleton's pal_init checks the header at
`addr` and says which enclave it got), the pool refills and keeps within its bounds; and a dead epm, an empty pool,
or an enclave that is not a sound one (sent by an attacker's socket: the real daemon never sends these) ends in
pal_init cold (fd -1, addr 0) with a debug line, the container running as usual, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.enclave.conftest import pal_bundle
from tests.epm.test_daemon import Epm, run_epm, write_config

from inclavare.epm import pool as epm_pool

NONCE = re.compile(r"\[skeleton v3\] pre-initialised enclave ([0-9a-f]{16})")
COLD = "[skeleton v3] fd=-1 addr=0x0"


@pytest.fixture
def short_dir():  # noqa: ANN201
    d = Path(tempfile.mkdtemp(prefix="epmp-"))  # a socket path has at most 107 bytes
    yield d
    shutil.rmtree(d)


def start_epm(d: Path, pal: str, size: int, monkeypatch: pytest.MonkeyPatch, **kw: object) -> Epm:
    e = Epm(write_config(d, pool_runtimes=[pal], pool_size=size, **kw))
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", e.socket)
    wait_ready(e, size)
    return e


def wait_ready(e: Epm, n: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = e(op="Healthz")["pool"]
        if st["ready"] >= n or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def run_v3(rune, pal_libs, cid: str | None = None):  # noqa: ANN201
    b = pal_bundle(rune, pal_libs[3], ["true"], pal_args="debug")
    cid = cid or new_id("pool")
    p = rune("--debug", "run", "--bundle", str(b), cid)
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    return p


def test_each_container_gets_its_own_pooled_enclave_and_the_pool_refills(rune, pal_libs, short_dir, monkeypatch):
    e = start_epm(short_dir, pal_libs[3], 3, monkeypatch, enclave_size=1 << 20)
    try:
        st = e(op="Healthz")["pool"]
        assert st["ready"] == 3 and st["idle_bytes"] == 3 << 20
        nonces = []
        for _ in range(5):
            p = run_v3(rune, pal_libs)
            assert p.returncode == 0, p.stderr
            assert "gets epm's pre-initialised enclave" in p.stderr
            nonces += NONCE.findall(p.stderr)
            wait_ready(e, 1)
        assert len(nonces) == 5 and len(set(nonces)) == 5
        assert wait_ready(e, 3)["ready"] == 3  # refilled, never above its size
        assert e(op="Healthz")["pool"]["ready"] == 3
    finally:
        e.stop()


def test_concurrent_starts_beyond_the_pool_each_get_their_own_or_start_cold(rune, pal_libs, short_dir, monkeypatch):
    e = start_epm(short_dir, pal_libs[3], 4, monkeypatch)
    try:
        with ThreadPoolExecutor(12) as ex:
            results = list(ex.map(lambda _i: run_v3(rune, pal_libs), range(12)))
    finally:
        e.stop()
    nonces = []
    cold = 0
    for p in results:
        assert p.returncode == 0, p.stderr
        found = NONCE.findall(p.stderr)
        nonces += found
        if not found:
            assert COLD in p.stderr and "epm has no pre-initialised enclave ready" in p.stderr
            cold += 1
    assert len(nonces) == len(set(nonces)) >= 4 and len(nonces) + cold == 12


def test_pool_bounds_in_the_configuration(tmp_path, pal_libs):
    p = run_epm("--config", str(write_config(tmp_path, pool_runtimes=[pal_libs[3]], pool_size=64,
                                             enclave_size=1 << 20, max_idle_bytes=32 << 20)))
    assert p.returncode == 1 and "more than max_idle_bytes (33554432)" in p.stderr
    p = run_epm("--config", str(write_config(tmp_path, pool_runtimes=[pal_libs[3]], pool_size=1, enclave_size=5000)))
    assert p.returncode == 1 and "'enclave_size' in the epm configuration" in p.stderr
    p = run_epm("--config", str(write_config(tmp_path, pool_runtimes="x", pool_size=1)))
    assert p.returncode == 1 and "'pool_runtimes' in the epm configuration" in p.stderr


def test_v2_runtime_and_empty_pool_and_dead_epm(rune, pal_libs, short_dir, monkeypatch):
    e = start_epm(short_dir, pal_libs[2], 2, monkeypatch)  # a pool for another runtime only
    try:
        p = run_v3(rune, pal_libs)
        assert p.returncode == 0, p.stderr
        assert "epm has no pre-initialised enclave ready for it" in p.stderr and COLD in p.stderr
        os.kill(e.proc.pid, signal.SIGKILL)  # dies with its pool: its socket file stays, stale
        e.proc.wait(10)
        p = run_v3(rune, pal_libs)
        assert p.returncode == 0, p.stderr
        assert "is stale (nobody listens on it)" in p.stderr and COLD in p.stderr
    finally:
        e.stop()


def _bad_enclave(kind: str, runtime: bytes) -> tuple[dict, list[int]]:
    import fcntl

    size = 1 << 16
    if kind == "no fd":
        return {"ok": True, "enclave": {"size": size}}, []
    if kind == "a regular file":
        tmp_fd, tmp = tempfile.mkstemp()
        os.close(tmp_fd)
        fd = os.open(tmp, os.O_RDWR)
        os.unlink(tmp)
        os.write(fd, epm_pool.header(size, runtime, os.urandom(32)).ljust(size, b"\0"))
        return {"ok": True, "enclave": {"size": size}}, [fd]
    fd = os.memfd_create(epm_pool.MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    rt = os.urandom(32) if kind == "another runtime" else runtime
    nonce = bytes(32) if kind == "no nonce" else os.urandom(32)
    head = epm_pool.header(size, rt, nonce)
    if kind == "bad magic":
        head = b"EVILENCL" + head[8:]
    os.write(fd, head.ljust(size, b"\0"))
    if kind != "unsealed":
        fcntl.fcntl(fd, epm_pool.F_ADD_SEALS, 0xF)
    announced = size * 2 if kind == "size mismatch" else size
    fds = [fd, os.dup(fd)] if kind == "two fds" else [fd]
    return {"ok": True, "enclave": {"size": announced}}, fds


@pytest.mark.parametrize("kind", ["no fd", "two fds", "a regular file", "unsealed", "size mismatch", "bad magic",
                                  "another runtime", "no nonce"])
def test_unsound_enclave_from_an_attacker_socket_is_not_used(rune, pal_libs, short_dir, monkeypatch, kind):
    """A socket served by root (as epm would be) that answers PickEnclave with an enclave rune must refuse."""
    runtime = epm_pool.runtime_id(pal_libs[3])
    path = short_dir / "evil.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                f = c.makefile("rb")
                for line in f:
                    req = json.loads(line)
                    if req.get("op") != "PickEnclave":
                        c.sendall(b'{"ok":true,"cache":null}\n')
                        continue
                    resp, fds = _bad_enclave(kind, runtime)
                    socket.send_fds(c, [json.dumps(resp).encode() + b"\n"], fds) if fds else c.sendall(
                        json.dumps(resp).encode() + b"\n")
                    for fd in fds:
                        os.close(fd)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", str(path))
    try:
        p = run_v3(rune, pal_libs)
    finally:
        stop.set()
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        t.join(5)
    assert p.returncode == 0, p.stderr
    assert COLD in p.stderr and "gets epm's pre-initialised enclave" not in p.stderr
    assert "pal_init of" in p.stderr and "starts it cold" in p.stderr


def test_the_payload_inherits_no_pooled_enclave(rune, pal_libs, short_dir, monkeypatch):
    e = start_epm(short_dir, pal_libs[3], 1, monkeypatch)
    try:
        b = pal_bundle(rune, pal_libs[3], ["sh", "-c", "for f in /proc/self/fd/*; do readlink $f; done; true"],
                       pal_args="debug")
        p = rune("--debug", "run", "--bundle", str(b), new_id("pool"))
    finally:
        e.stop()
    assert p.returncode == 0, p.stderr
    assert NONCE.findall(p.stderr)
    assert "memfd" not in p.stdout and "epm" not in p.stdout


def test_a_changed_runtime_library_gets_no_enclave_made_for_the_old_one(rune, pal_libs, short_dir, monkeypatch):
    lib = short_dir / "liberpal-skeleton-v3.so"
    shutil.copy2(pal_libs[3], lib)
    libs = {**pal_libs, 3: str(lib)}
    e = start_epm(short_dir, str(lib), 2, monkeypatch)
    try:
        assert NONCE.findall(run_v3(rune, libs).stderr)
        os.chmod(lib, 0o755)  # a change of the inode (ctime): made for the library as it was, not as it is
        p = run_v3(rune, libs)
        assert p.returncode == 0 and COLD in p.stderr and "no pre-initialised enclave ready" in p.stderr
        deadline = time.monotonic() + 20
        while not NONCE.findall((p := run_v3(rune, libs)).stderr) and time.monotonic() < deadline:
            time.sleep(0.2)  # epm looks at the library again and makes enclaves for it as it is now
        assert p.returncode == 0 and NONCE.findall(p.stderr)
    finally:
        e.stop()
