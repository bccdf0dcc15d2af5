"""Enclave containers through the engines: containerd (`ctr run --runc-binary rune`), Docker (`docker run --runtime
rune`) and Podman (`podman --runtime rune`), with `ENCLAVE_TYPE=sim` and `ENCLAVE_RUNTIME_PATH=<reference PAL>` in the
container's environment, as a user writes them.

Each case runs under the engine fixture of conftest.py (rune only), which demands afterwards that the engine's rune
root is empty and that no mount or cgroup of the container is left. That the container really is an enclave container
is seen from inside (PID 1 is rune's init-runelet and the payload is not PID 1; a payload without a SIGTERM handler
dies of `docker stop`, which a PID 1 would ignore) and in rune's state.json ("enclave").

PAL v2 on every engine; v1 and v3 through Docker.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines.conftest import Ctr, Docker, Engine, Opts, Podman, _engine, name

pytestmark = pytest.mark.engines

WAIT_FOR_TERM = "trap 'exit 7' TERM; sleep 1000 & wait"
# what PID 1 is, and who the shell is: in an enclave container PID 1 is the runelet, not the payload
PID1 = "tr '\\0' ' ' < /proc/1/cmdline; echo; echo self=$$"
# (engine, PAL version): v2 everywhere, v1 and v3 through one engine
CASES = [("containerd", 2), ("docker", 1), ("docker", 2), ("docker", 3), ("podman", 2)]
MISSING_PAL_EXIT = {"containerd": 1, "docker": 125, "podman": 126}


@pytest.fixture(params=[e for e, v in CASES if v == 2])
def engine(request: pytest.FixtureRequest, rune_bin: str) -> Iterator[Engine]:
    """The engine with rune only (runc has no enclave containers); conftest's leftover check after the case."""
    yield from _engine(request, request.param, ("rune", rune_bin))


def enclave(pal: str) -> dict[str, str]:
    return {"ENCLAVE_TYPE": "sim", "ENCLAVE_RUNTIME_PATH": pal}


def run_detached(e: Engine, cmd: list[str], env: dict[str, str]) -> str:
    """A detached container with an environment (the adapters of conftest.py start theirs without one)."""
    o = Opts(env=env)
    if isinstance(e, Ctr):
        cid = name()
        e.c.ctr("run", "-d", "--null-io", *e._flags(o), d.IMAGE, cid, *cmd)
        return cid
    if isinstance(e, Docker):
        return e.k.docker("run", "-d", *e._flags(o), d.IMAGE, *cmd).stdout.strip()
    assert isinstance(e, Podman)
    return e.pm("run", "-d", *e._flags(o), d.IMAGE, *cmd).stdout.strip()


def rune_id(e: Engine, cid: str) -> str:
    """The id rune knows the container by (Docker and Podman print it in full; ctr uses the name it was given)."""
    ids = [p.name for r in e.state_dirs() if r.is_dir() for p in r.iterdir() if p.name.startswith(cid)]
    assert len(ids) == 1, f"{cid} in {e.state_dirs()}: {ids}"
    return ids[0]


def rune_state(e: Engine, rid: str) -> dict:
    for root in e.state_dirs():
        f = root / rid / "state.json"
        if f.exists():
            return json.loads(f.read_text())
    raise AssertionError(f"no state.json of {rid} under {e.state_dirs()}")


def assert_runelet_is_pid1(lines: list[str]) -> None:
    """The two lines PID1 prints: PID 1 is rune's init-runelet (it stays after start, under a neutral command line
    that shows nothing of the host's), the shell is not PID 1."""
    cmdline, me = lines
    assert cmdline.strip() == "init-runelet", f"PID 1 is not the init-runelet: {cmdline!r}"
    assert me != "self=1", "the payload must not be PID 1 of an enclave container"


def rune_processes(rune_bin: str, rid: str) -> list[str]:
    """rune processes still naming the container (an exec waiter), and init-runelets in its cgroup."""
    found = [d._cmdline(p) for p in d.pids_naming(rid) if rune_bin in d._cmdline(p)]
    for p in d.pids_naming("init-runelet"):
        try:
            with open(f"/proc/{p}/cgroup") as f:
                if rid in f.read():
                    found.append(f"init-runelet (pid {p})")
        except OSError:
            pass
    return found


# ---- the cases ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "version"), CASES, indirect=["engine"])
def test_run_output_and_exit_status(engine: Engine, pal_libs: dict[int, str], version: int) -> None:
    p = engine.run(["sh", "-c", f"echo hi; {PID1}; exit 3"], Opts(env=enclave(pal_libs[version])))
    lines = p.stdout.splitlines()
    assert p.returncode == 3 and lines[0] == "hi", (p.returncode, p.stdout, p.stderr)
    assert_runelet_is_pid1(lines[1:3])


def test_run_with_tty(engine: Engine, pal_libs: dict[int, str]) -> None:
    p = engine.run(["sh", "-c", "tty; exit 4"], Opts(env=enclave(pal_libs[2]), tty=True))
    lines = p.stdout.splitlines()
    assert p.returncode == 4 and lines[0].startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize(("engine", "version"), CASES, indirect=["engine"])
def test_detached_exec_stop_remove(engine: Engine, pal_libs: dict[int, str], rune_bin: str, version: int) -> None:
    """The exec goes through the agent (its process is the runelet's child); the engine reaps rune's exec waiter and
    reports the process's status; stop is forwarded to the payload with pal_kill."""
    cid = run_detached(engine, ["sh", "-c", WAIT_FOR_TERM], enclave(pal_libs[version]))
    try:
        rid = rune_id(engine, cid)
        st = rune_state(engine, rid)
        assert st["enclave"]["type"] == "sim" and st["enclave"]["runtime_path"] == pal_libs[version], st.get("enclave")
        p = engine.exec(cid, ["sh", "-c", f"echo $((6*7)); tty; {PID1}"])
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and lines[:2] == ["42", "not a tty"], (p.returncode, p.stdout, p.stderr)
        assert_runelet_is_pid1(lines[2:4])
        p = engine.exec(cid, ["sh", "-c", "echo to-err >&2; exit 5"])
        assert (p.returncode, p.stderr) == (5, "to-err\n"), (p.returncode, p.stdout, p.stderr)
        p = engine.exec(cid, ["id", "-u"], user="1000")  # the runelet starts processes as the container's user
        assert p.returncode != 0 and "runs every process as the container's user (uid 0 gid 0)" in p.stdout + p.stderr, (
            p.returncode, p.stdout, p.stderr)
        p = engine.exec(cid, ["sh", "-c", "tty; exit 6"], tty=True)
        assert p.returncode == 6 and p.stdout.strip().startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)
        # PAL v1 has no pal_kill: the reference PAL's payload processes get the signal with kill(-1) (its trap runs)
        assert engine.stop(cid) == 7
        engine.remove(cid)
    except BaseException:
        engine.force_remove(cid)
        raise
    deadline = time.monotonic() + 15
    while rune_processes(rune_bin, rid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rune_processes(rune_bin, rid)


def test_stop_payload_without_handler(engine: Engine, pal_libs: dict[int, str]) -> None:
    """The runelet is PID 1 and forwards SIGTERM: the payload, not PID 1, dies of it (143). A plain container's PID 1
    ignores it, and the engine would kill it after its grace period (137)."""
    cid = run_detached(engine, ["sleep", "1000"], enclave(pal_libs[2]))
    try:
        assert engine.stop(cid) == 143
        engine.remove(cid)
    except BaseException:
        engine.force_remove(cid)
        raise


@pytest.mark.parametrize("engine", ["containerd"], indirect=True)
def test_ctr_exec_killed_with_a_signal(engine: Engine, pal_libs: dict[int, str]) -> None:
    """`ctr task kill --exec-id` signals the pid in rune's --pid-file, the exec waiter, which forwards it."""
    assert isinstance(engine, Ctr)
    cid = run_detached(engine, ["sh", "-c", WAIT_FOR_TERM], enclave(pal_libs[2]))
    c = engine.c
    try:
        exec_id = name()
        cmd = ["ctr", "-a", c.sock, "-n", c.namespace, "task", "exec", "--exec-id", exec_id, cid, "sleep", "1000"]
        with open(engine.base / f"{exec_id}.out", "w+") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:  # the exec is known to the shim once its pid file is read
                    if c.ctr("task", "kill", "--exec-id", exec_id, "-s", "SIGUSR1", cid, check=False).returncode == 0:
                        break
                    time.sleep(0.05)
                assert proc.wait(timeout=30) == 128 + 10, out.read()  # sleep died of SIGUSR1
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert engine.stop(cid) == 7
        engine.remove(cid)
    except BaseException:
        engine.force_remove(cid)
        raise


def test_missing_pal(engine: Engine, tmp_path: Path) -> None:
    pal = str(tmp_path / "missing.so")
    p = engine.run(["true"], Opts(env=enclave(pal)))
    assert p.returncode == MISSING_PAL_EXIT[engine.name], (p.returncode, p.stdout, p.stderr)
    sentence = f"enclave runtime {pal} (ENCLAVE_RUNTIME_PATH / enclave.runtime.path) does not exist on the host"
    assert sentence in p.stderr, p.stderr
