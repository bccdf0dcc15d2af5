"""Enclave containers with the reference PAL (liberpal-skeleton v1, v2, v3) on real containers: run, create/start,
exec, signals, exit codes, stdio, long arguments, PAL failures and bad libraries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.enclave.conftest import pal_bundle, read_state, wait_status

SPACED = "two  words and\ttab"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_run_exit_code_stdio_argv_env(rune, pal_libs, version):
    b = pal_bundle(rune, pal_libs[version],
                   ["sh", "-c", 'echo "out:$1:${FOO-unset}"; echo "err:$2" >&2; exit 7', "sh", SPACED, "e r r"],
                   env=("FOO=bar baz",))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 7, p.stderr
    # v1's pal_exec passes no environment (as in the original); v2/v3 pass the container's
    assert p.stdout == f"out:{SPACED}:{'unset' if version == 1 else 'bar baz'}\n"
    assert p.stderr == "err:e r r\n"


def test_enclave_env_stripped_and_recorded(rune, pal_libs):
    b = pal_bundle(rune, pal_libs[2], ["sh", "-c", "env; sleep 30"], pal_args="a,b",
                   env=("ENCLAVE_RUNTIME_LOGLEVEL=x", "ENCLAVE_RA_TYPE=bogus"))
    cid = new_id()
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    st = read_state(rune, cid)
    assert st["enclave"]["type"] == "sim" and st["enclave"]["runtime_path"] == pal_libs[2]
    assert st["enclave"]["runtime_args"] == "a b"  # commas become spaces for pal_init
    assert st["enclave"]["loglevel"] == "info"  # one character counts as empty; unknown levels are info
    assert st["enclave"]["ra_type"] == ""  # unknown RA types are dropped
    assert not [e for e in st["config"]["process"]["env"] if e.startswith("ENCLAVE_")]
    # exec before start: a clear error, not a hang or a crash
    p = rune("exec", cid, "true")
    assert p.returncode != 0 and "created but not started" in p.stderr and f"rune start {cid}" in p.stderr
    assert rune("start", cid).returncode == 0
    assert wait_status(rune, cid, "running") == "running"
    p = rune("exec", cid, "sh", "-c", 'echo "[$1]" ; env | grep -c ENCLAVE_ ; true', "sh", SPACED)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"[{SPACED}]\n0\n"
    assert rune("delete", "--force", cid).returncode == 0
    assert cgroup_leftovers(cid) == []


def test_plain_container_has_no_enclave(rune):
    b = rune.bundle(["sleep", "30"], edit=lambda c: c["process"]["env"].append("ENCLAVE_TYPE=x"))  # one char: empty
    cid = new_id()
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    st = read_state(rune, cid)
    assert "enclave" not in st and "ENCLAVE_TYPE=x" in st["config"]["process"]["env"]
    assert not (rune.root / cid / "agent.sock").exists()
    assert rune("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize("version", [2, 3])
def test_many_concurrent_execs(rune, pal_libs, version):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[version], ["sleep", "60"])), cid).returncode == 0
    try:
        def one(i: int) -> tuple[int, str, str]:
            p = rune("exec", cid, "sh", "-c", f'echo "out {i} $1"; echo "err {i}" >&2; exit $(({i} % 50))', "sh",
                     f"arg {i}")
            return p.returncode, p.stdout, p.stderr

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(40)))
        for i, (rc, out, err) in enumerate(results):
            assert (rc, out, err) == (i % 50, f"out {i} arg {i}\n", f"err {i}\n")
    finally:
        rune("delete", "--force", cid)


def test_exec_v1_and_long_arguments(rune, pal_libs, tmp_path):
    long_args = [f"{i:05d}-" + "x" * 200 for i in range(500)]  # ~100 KiB of argv
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[1], ["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("exec", cid, "sh", "-c", 'echo $#; echo "$1"; echo "${500}"; exit 3', "sh", *long_args)
        assert p.returncode == 3, p.stderr
        assert p.stdout.split("\n")[:3] == ["500", long_args[0], long_args[-1]]
    finally:
        rune("delete", "--force", cid)


def test_exec_with_tty(rune, pal_libs):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[3], ["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("exec", "-t", cid, "sh", "-c", "tty; test -t 0 && echo stdin-is-tty; exit 4", stdin=subprocess.DEVNULL)
        assert p.returncode == 4, p.stderr
        lines = p.stdout.replace("\r", "").split("\n")
        assert lines[0].startswith("/dev/pts/") and "stdin-is-tty" in lines
    finally:
        rune("delete", "--force", cid)


def test_exec_pid_file_and_detach(rune, pal_libs, tmp_path):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[2], ["sleep", "60"])), cid).returncode == 0
    try:
        pid_file = tmp_path / "exec.pid"
        p = rune("exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "45")
        assert p.returncode == 0, p.stderr
        # the pid file names the waiter that an engine's shim reaps (the process is the runelet's child, out of the
        # shim's reach): it lives as long as the process and forwards the signals it gets
        waiter = int(pid_file.read_text())
        init = rune.state(cid)["pid"]
        sleeps = [c for c in _children(init) if open(f"/proc/{c}/cmdline").read().split("\0")[:2] == ["sleep", "45"]]
        assert len(sleeps) == 1 and waiter not in _children(init)
        assert open(f"/proc/{waiter}/cmdline").read().split("\0")[:1] != ["sleep"]
        os.kill(waiter, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (_alive(sleeps[0]) or _alive(waiter)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(sleeps[0]) and not _alive(waiter)
    finally:
        rune("delete", "--force", cid)


def test_exec_as_another_user_is_refused(rune, pal_libs):
    """The runelet starts every process as the container's user: another --user is an error, not ignored."""
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[2], ["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("exec", "--user", "1000", cid, "id", "-u")
        assert p.returncode == 255 and "runs every process as the container's user (uid 0 gid 0)" in p.stderr, p.stderr
        p = rune("exec", "--user", "0:0", cid, "id", "-u")
        assert (p.returncode, p.stdout) == (0, "0\n"), p.stderr
    finally:
        rune("delete", "--force", cid)


def _children(pid: int) -> list[int]:
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", ["HUP", "INT", "QUIT", "USR1", "USR2", "TERM"])
def test_kill_forwards_each_signal_to_the_payload(rune, pal_libs, sig):
    """The runelet catches the signal and forwards it with pal_kill(payload pid): the payload dies of it and the
    container's exit status says so."""
    cid = new_id()
    b = pal_bundle(rune, pal_libs[2], ["sleep", "60"])
    with open(rune.tmp / "out", "w") as out:
        proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "run", "--bundle", str(b), cid],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_status(rune, cid, "running") == "running"
            assert rune("kill", cid, sig).returncode == 0
            assert proc.wait(timeout=20) == 128 + getattr(signal, f"SIG{sig}")
        finally:
            if proc.poll() is None:
                rune("delete", "--force", cid)
                proc.wait(timeout=20)


def test_payload_handles_signal_and_container_keeps_running(rune, pal_libs):
    cid = new_id()
    script = 'trap "echo got-usr1" USR1; echo ready; while :; do sleep 0.05; done'
    b = pal_bundle(rune, pal_libs[3], ["sh", "-c", script])
    log = rune.tmp / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "run", "--bundle", str(b), cid],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while "ready" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rune("kill", cid, "USR1").returncode == 0
            while "got-usr1" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "got-usr1" in log.read_text()
            assert rune.state(cid)["status"] == "running"
            assert rune("kill", cid, "KILL").returncode == 0
            assert proc.wait(timeout=20) == 137
        finally:
            if proc.poll() is None:
                rune("delete", "--force", cid)
                proc.wait(timeout=20)
    assert not (rune.root / cid).exists()  # a foreground run deletes its container


def test_exec_signal_forwarding(rune, pal_libs):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[2], ["sleep", "60"])), cid).returncode == 0
    try:
        with open(rune.tmp / "x", "w") as out:
            proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "exec", cid, "sh", "-c",
                                     'trap "exit 42" TERM; echo up; while :; do sleep 0.05; done'], stdout=out)
            deadline = time.monotonic() + 10
            while "up" not in (rune.tmp / "x").read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 42
    finally:
        rune("delete", "--force", cid)


@pytest.mark.parametrize("fn", ["pal_get_version", "pal_init", "pal_create_process"])
def test_pal_failing_at_create_or_start(rune, pal_libs, fn, monkeypatch):
    monkeypatch.setenv("PAL_SKELETON_FAIL", fn)  # the runelet loads the PAL with rune's environment
    cid = new_id()
    p = rune("run", "--bundle", str(pal_bundle(rune, pal_libs[3], ["true"])), cid)
    assert p.returncode == 1
    assert f"{fn} failed: Operation not permitted (errno 1)" in p.stderr and pal_libs[3] in p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_pal_init_failing_by_args_fails_create(rune, pal_libs):
    cid = new_id()
    p = rune("create", "--bundle", str(pal_bundle(rune, pal_libs[2], ["true"], pal_args="fail=pal_init")), cid)
    assert p.returncode == 1 and "pal_init failed" in p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_pal_exec_and_destroy_failures_are_reported(rune, pal_libs):
    p = rune("run", "--bundle", str(pal_bundle(rune, pal_libs[2], ["true"], pal_args="fail=pal_exec")), new_id())
    assert p.returncode == 1 and "pal_exec failed: Operation not permitted (errno 1)" in p.stderr
    p = rune("run", "--bundle", str(pal_bundle(rune, pal_libs[2], ["sh", "-c", "exit 3"], pal_args="fail=pal_destroy")),
             new_id())
    assert p.returncode == 3 and "pal_destroy failed" in p.stderr


def test_pal_kill_failure_is_reported(rune, pal_libs):
    cid = new_id()
    b = pal_bundle(rune, pal_libs[3], ["sleep", "60"], pal_args="fail=pal_kill")
    log = rune.tmp / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "run", "--bundle", str(b), cid],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_status(rune, cid, "running") == "running"
            assert rune("kill", cid, "TERM").returncode == 0
            deadline = time.monotonic() + 10
            while "pal_kill failed" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "pal_kill failed" in log.read_text()
            assert rune.state(cid)["status"] == "running"
            assert rune("kill", cid, "KILL").returncode == 0
            assert proc.wait(timeout=20) == 137
        finally:
            if proc.poll() is None:
                rune("delete", "--force", cid)
                proc.wait(timeout=20)
    assert not (rune.root / cid).exists()  # a foreground run deletes its container


def test_bad_pal_libraries(rune, pal_libs, tmp_path, monkeypatch):
    import shutil

    # a review: the path comes from process.env, which an image's Env reaches; a library someone but root may
    # change would run that someone's code as root (a constructor runs at dlopen)
    theirs = tmp_path / "theirs.so"
    shutil.copy(pal_libs[2], theirs)
    os.chown(theirs, 65534, 65534)
    open_to_all = tmp_path / "writable.so"
    shutil.copy(pal_libs[2], open_to_all)
    open_to_all.chmod(0o666)
    their_dir = tmp_path / "their-dir"
    their_dir.mkdir()
    shutil.copy(pal_libs[2], their_dir / "pal.so")
    os.chown(their_dir, 65534, 65534)
    cases = [
        (str(tmp_path / "missing.so"), "does not exist on the host"),
        ("/bin/true", "cannot be loaded"),
        (_libc(), "is not a PAL library: it has no pal_init function"),
        ("relative.so", "must be an absolute path"),
        (str(theirs), "is not loaded: it is owned by uid 65534, and rune would run its code as root"),
        (str(open_to_all), "is not loaded: it is writable by its group"),
        (str(their_dir / "pal.so"), f"is not loaded: the directory {their_dir} is owned by uid 65534"),
    ]
    for path, sentence in cases:
        cid = new_id()
        p = rune("create", "--bundle", str(pal_bundle(rune, path, ["true"])), cid)
        assert p.returncode == 1 and sentence in p.stderr, (path, p.stderr)
        assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    monkeypatch.setenv("PAL_SKELETON_VERSION", "4")
    p = rune("create", "--bundle", str(pal_bundle(rune, pal_libs[3], ["true"])), new_id())
    assert p.returncode == 1 and "implements PAL API version 4" in p.stderr


def _libc() -> str:
    import ctypes.util

    name = ctypes.util.find_library("m") or "libm.so.6"
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"):
        p = f"{d}/{name}"
        try:
            open(p).close()
            return p
        except OSError:
            continue
    pytest.skip("no libm to use as a non-PAL library")


def test_attest_v3_and_older(rune, pal_libs, sim_dir):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[3], ["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("attest", "--reportFile", str(rune.tmp / "r.bin"), cid)
        assert p.returncode == 0, p.stderr
        raw = (rune.tmp / "r.bin").read_bytes()
        assert len(raw) == 432 and raw[320:363] == b"inclavare liberpal-skeleton: not an enclave"
        assert p.stdout == ""
        assert json.loads(rune("attest", cid).stdout)["report"]["structure"] == "report"
        p = rune("attest", "--isRA", cid)  # the skeleton's dummy REPORT has no valid MAC: the sim QE refuses it
        assert p.returncode == 1 and "MAC does not verify" in p.stderr
    finally:
        rune("delete", "--force", cid)
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(pal_bundle(rune, pal_libs[2], ["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("attest", cid)
        assert p.returncode == 1 and "local reports need v3" in p.stderr
    finally:
        rune("delete", "--force", cid)


def test_agent_socket_under_a_long_state_path(rune_bin, rootfs, tmp_path, pal_libs):
    from tests.conftest import Rune

    root = tmp_path / ("r" * 100) / ("o" * 60)
    r = Rune(rune_bin, root, tmp_path, rootfs)
    cid = new_id("long-" + "i" * 40)
    assert len(str(root / cid / "agent.sock")) > 108
    assert r("run", "-d", "--bundle", str(pal_bundle(r, pal_libs[2], ["sleep", "60"])), cid).returncode == 0
    try:
        p = r("exec", cid, "sh", "-c", "echo via-agent; exit 9")
        assert (p.returncode, p.stdout) == (9, "via-agent\n"), p.stderr
    finally:
        assert r("delete", "--force", cid).returncode == 0


def test_intel_sgx_on_a_host_without_sgx(rune, pal_libs):
    from inclavare.enclave.probe import cpu_has_sgx

    if cpu_has_sgx():
        pytest.skip("this host has SGX")
    cid = new_id()
    p = rune("create", "--bundle", str(pal_bundle(rune, pal_libs[2], ["true"], typ="intelSgx")), cid)
    assert p.returncode == 1
    assert "the CPUID probe failed" in p.stderr and "ENCLAVE_TYPE=sim" in p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


@pytest.mark.parametrize("version", [2, 3])
def test_missing_program_exits_127_naming_the_path(rune, pal_libs, version):
    """As a plain container's shell would: 127 and the path, not the PAL's errno."""
    p = rune("run", "--bundle", str(pal_bundle(rune, pal_libs[version], ["/nonexistent", "x"])), new_id())
    assert p.returncode == 127, (p.returncode, p.stderr)
    assert 'exec: "/nonexistent": no such file or directory in the container' in p.stderr, p.stderr


def test_a_pal_container_is_sealed_before_rune_imports_its_create_path(rune, pal_libs):
    """`rune run` of a PAL container re-executes from the sealed interpreter right after its arguments (the first
    interpreter imports none of the create path), and the container's init runs from it (here, as root with
    overlayfs: the interpreter through a read-only overlay mount attached nowhere)."""
    import sys
    import tempfile

    b = pal_bundle(rune, pal_libs[2], ["true"])
    with tempfile.TemporaryFile("w+") as err:  # a file: the container keeps rune's stdio open
        p = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S", rune.binary, "--root", str(rune.root),
                            "run", "--bundle", str(b), new_id()], stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        err.seek(0)
        text = err.read()
    assert p.returncode == 0, text[-2000:]
    # -X importtime goes on to the sealed copy, which prints its own table: the first table is the first interpreter's
    tables = text.split("import time: self [us]")
    assert len(tables) == 3, text[-2000:]
    first = {line.rsplit("|", 1)[1].strip() for line in tables[1].splitlines() if line.startswith("import time:")}
    assert "inclavare.linux.sealed_exe" in first and "inclavare.runtime.create" not in first, sorted(first)
    cid = new_id()
    b = pal_bundle(rune, pal_libs[2], ["sleep", "30"])
    assert rune("run", "--detach", "--bundle", str(b), cid).returncode == 0
    try:
        from inclavare.linux import sealed_exe

        pid = json.loads(rune("state", cid).stdout)["pid"]
        fd = os.open(f"/proc/{pid}/exe", os.O_PATH)
        try:
            assert sealed_exe.protected(fd), os.readlink(f"/proc/{pid}/exe")
            with pytest.raises(OSError):
                os.open(f"/proc/{pid}/exe", os.O_WRONLY)
        finally:
            os.close(fd)
    finally:
        rune("delete", "--force", cid)


@pytest.mark.parametrize("config", ["fifo", "bad json", "no type"])
def test_the_early_look_at_config_json_leaves_errors_to_create(rune, pal_libs, config):
    """What the early look for an enclave runtime library cannot use is left to create, which names the fault:
    a config.json that is a fifo (never opened to block), JSON that does not parse, a runtime path with no type."""
    b = pal_bundle(rune, pal_libs[2], ["true"])
    path = b / "config.json"
    if config == "fifo":
        path.unlink()
        os.mkfifo(path)
        want = "not a regular file"
    elif config == "bad json":
        path.write_text(path.read_text()[:-2] + ' "ENCLAVE_RUNTIME_PATH"')
        want = "not valid JSON"
    else:
        c = json.loads(path.read_text())
        c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("ENCLAVE_TYPE=")]
        c["process"]["args"] = ["sh", "-c", "exit 3"]
        path.write_text(json.dumps(c))
        want = ""
    p = rune("run", "--bundle", str(b), new_id(), timeout=30)
    if want:
        assert p.returncode == 1 and want in p.stderr and p.stderr.count("\n") == 1, p.stderr
    else:
        assert p.returncode == 3, p.stderr  # a plain container: the path alone names no enclave
