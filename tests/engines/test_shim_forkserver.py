"""containerd-shim-rune-v2's fork server, through containerd 1.6 and ctr: a container's rune commands run in its
workers, an idle server ends and the next command starts another, so does a killed one, and
`[rune] fork_server = false` execs every command. Each command's debug line in containerd's log says how it ran."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.test_shim import WAIT_FOR_TERM, exec_, remove, run, run_detached, shim, stop_task  # noqa: F401

from inclavare.shim import forkserver

LINE = re.compile(r"rune (\w+) \((a fork server's worker|exec'd), pid \d+\): exit status (\d+)")


def _log_size(c: shimd.ShimContainerd) -> int:
    return c.log.stat().st_size if c.log.exists() else 0


def _commands(c: shimd.ShimContainerd, since: int) -> list[tuple[str, str]]:
    """(rune command, how it ran) logged by the shims since that log offset."""
    with open(c.log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [(m.group(1), "worker" if m.group(2).startswith("a fork") else "exec") for m in LINE.finditer(text)]


def _wait_commands(c: shimd.ShimContainerd, since: int, n: int) -> list[tuple[str, str]]:
    """containerd copies the shim's log asynchronously: wait for n lines."""
    deadline = time.monotonic() + 10
    while len(got := _commands(c, since)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def _servers_of(c: shimd.ShimContainerd, shim_pid: int) -> list[int]:
    return [p for p in c.shim_processes() if d.comm(p) == forkserver.COMM and _ppid(p) == shim_pid]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _shim_of(c: shimd.ShimContainerd, cid: str) -> int:
    ours = [p for p in c.shim_pids() if f" -id {cid} " in d._cmdline(p) + " "]
    assert len(ours) == 1, ours
    return ours[0]


def test_a_container_s_commands_run_in_the_shim_s_fork_server(shim: shimd.ShimContainerd) -> None:  # noqa: F811
    since = _log_size(shim)
    p = run(shim, ["sh", "-c", "echo from-the-container; exit 3"])
    assert (p.returncode, p.stdout) == (3, "from-the-container\n"), (p.returncode, p.stdout, p.stderr)
    got = _wait_commands(shim, since, 3)
    assert [c for c, _ in got][:2] == ["create", "start"] and "delete" in [c for c, _ in got], got
    assert {how for _, how in got} == {"worker"}, got


def test_the_server_is_the_shim_s_child_and_goes_with_it(shim: shimd.ShimContainerd) -> None:  # noqa: F811
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
    try:
        pid = _shim_of(shim, cid)
        servers = _servers_of(shim, pid)
        assert len(servers) <= 1, servers  # one, or none once it has been idle for IDLE seconds
    finally:
        assert stop_task(shim, cid) == 7
    # the shim shuts down with its last container, and its server with it (the fixture checks: nothing left)


def test_an_idle_server_ends_and_the_next_command_starts_another(shim: shimd.ShimContainerd) -> None:  # noqa: F811
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
    try:
        pid = _shim_of(shim, cid)
        deadline = time.monotonic() + forkserver.IDLE + 10
        while _servers_of(shim, pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _servers_of(shim, pid), "the server did not end after IDLE seconds without a command"
        since = _log_size(shim)
        p = exec_(shim, cid, ["sh", "-c", "echo exec-after-idle"])
        assert (p.returncode, p.stdout) == (0, "exec-after-idle\n"), (p.returncode, p.stdout, p.stderr)
        assert _wait_commands(shim, since, 1)[0] == ("exec", "worker")
        assert len(_servers_of(shim, pid)) == 1
    finally:
        assert stop_task(shim, cid) == 7


def test_a_killed_server_is_replaced_at_the_next_command(shim: shimd.ShimContainerd) -> None:  # noqa: F811
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
    try:
        pid = _shim_of(shim, cid)
        servers = _servers_of(shim, pid)
        if not servers:  # it ended, idle, already: start one again
            assert exec_(shim, cid, ["true"]).returncode == 0
            servers = _servers_of(shim, pid)
        assert len(servers) == 1
        os.kill(servers[0], signal.SIGKILL)  # a fault: the server dies (the shim reaps it)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{servers[0]}") and time.monotonic() < deadline:
            time.sleep(0.05)
        since = _log_size(shim)
        for word in ("first", "second"):
            p = exec_(shim, cid, ["sh", "-c", f"echo {word}"])
            assert (p.returncode, p.stdout) == (0, f"{word}\n"), (p.returncode, p.stdout, p.stderr)
        got = _wait_commands(shim, since, 2)
        assert got[:2] == [("exec", "worker"), ("exec", "worker")], got
        again = _servers_of(shim, pid)
        assert len(again) == 1 and again != servers, (servers, again)
    finally:
        assert stop_task(shim, cid) == 7


def test_fork_server_false_execs_every_command(shim: shimd.ShimContainerd, tmp_path: Path) -> None:  # noqa: F811
    config = shimd.write_config(tmp_path / "exec.toml", shim.base, rune={"fork_server": False})
    since = _log_size(shim)
    p = run(shim, ["sh", "-c", "echo execd"], config=config)
    assert (p.returncode, p.stdout) == (0, "execd\n"), (p.returncode, p.stdout, p.stderr)
    got = _wait_commands(shim, since, 3)
    assert len(got) >= 3 and {how for _, how in got} == {"exec"}, got


def test_another_binary_is_exec_d(shim: shimd.ShimContainerd, tmp_path: Path) -> None:  # noqa: F811
    """[rune] binary naming a wrapper of rune: the shim cannot know what it runs, so it execs it."""
    wrapper = tmp_path / "rune-wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {shimd.BIN / 'rune'} \"$@\"\n")
    wrapper.chmod(0o755)
    config = shimd.write_config(tmp_path / "wrapper.toml", shim.base, rune={"binary": str(wrapper)})
    since = _log_size(shim)
    p = run(shim, ["sh", "-c", "echo wrapped"], config=config)
    assert (p.returncode, p.stdout) == (0, "wrapped\n"), (p.returncode, p.stdout, p.stderr)
    got = _wait_commands(shim, since, 3)
    assert len(got) >= 3 and {how for _, how in got} == {"exec"}, got


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def test_an_enclave_container_s_server_has_the_enclave_runtime_loaded(shim: shimd.ShimContainerd) -> None:  # noqa: F811
    """The shim of an enclave container (ENCLAVE_TYPE in its bundle) starts its fork server with the enclave
    runtime imported (forkserver.PRELOAD_ENCLAVE: the runelet, the sim launch check, hashlib's libcrypto), so the
    init that a worker's `rune create` forks is a warm runelet; a plain container's server loads none of it."""
    for env, loaded in ((["--env", "ENCLAVE_TYPE=sim"], True), ([], False)):
        since = _log_size(shim)
        cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM], *env)
        try:
            servers = _servers_of(shim, _shim_of(shim, cid))
            assert len(servers) == 1, servers  # well within its IDLE seconds after the start
            deadline = time.monotonic() + (2 if loaded else 0.5)  # imported between requests, once it is idle
            while "_hashlib" not in (maps := _maps(servers[0])) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ("_hashlib" in maps and "libcrypto" in maps) is loaded, (env, maps)
            assert [c for c, _ in _wait_commands(shim, since, 2)][:2] == ["create", "start"]
            assert {how for _, how in _wait_commands(shim, since, 2)} == {"worker"}
        finally:
            assert stop_task(shim, cid) == 7


def _task_pid(c: shimd.ShimContainerd, cid: str) -> int:
    for line in c.ctr("task", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return int(parts[1])
    raise AssertionError(f"no task {cid}")


def test_a_server_started_on_demand_runs_from_the_protected_interpreter(shim: shimd.ShimContainerd,  # noqa: F811
                                                                      pal_libs: dict[int, str]) -> None:
    """A server the shim starts for a command (here: after its first one was killed) runs from the interpreter seen
    through a read-only overlayfs attached nowhere, as does the process it forks for the command: an enclave
    container with a runtime library created by such a worker needs no re-execution of rune (CVE-2019-5736)."""
    from inclavare.linux import sealed_exe

    def protected(pid: int) -> bool:
        fd = os.open(f"/proc/{pid}/exe", os.O_PATH)
        try:
            return sealed_exe.protected(fd)
        finally:
            os.close(fd)

    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM], "--env", "ENCLAVE_TYPE=sim",
                       "--env", f"ENCLAVE_RUNTIME_PATH={pal_libs[2]}")
    try:
        pid = _shim_of(shim, cid)
        first = _servers_of(shim, pid)
        if first:
            assert not protected(first[0])  # forked from the shim at its start: ready at once
            os.kill(first[0], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{first[0]}") and time.monotonic() < deadline:
                time.sleep(0.05)
        since = _log_size(shim)
        p = exec_(shim, cid, ["sh", "-c", "echo from-the-exec"])
        assert (p.returncode, p.stdout) == (0, "from-the-exec\n"), p.stderr
        assert _wait_commands(shim, since, 1)[0] == ("exec", "worker")
        again = _servers_of(shim, pid)
        assert len(again) == 1 and protected(again[0]), again
        assert protected(_task_pid(shim, cid))  # the PAL container's init: re-executed by its create, or sealed
    finally:
        assert stop_task(shim, cid) == 7
