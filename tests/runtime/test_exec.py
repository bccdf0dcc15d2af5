"""rune exec on real containers: namespaces, cgroup, process settings, terminal, exit codes and errors."""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import new_id

NAMESPACES = ("ipc", "mnt", "net", "pid", "uts", "cgroup", "user")
RUNC = "/usr/sbin/runc"


@pytest.fixture(autouse=True)
def _searchable_rootfs(rootfs: Path) -> None:
    """pytest makes its temporary directories 0700: let the non-root users of these tests walk the root."""
    rootfs.chmod(0o755)


def with_tmp(c: dict) -> None:
    """A private tmpfs at /tmp (the shared rootfs is read-only)."""
    c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]})


def wait_for(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def running(rune, args: list[str] | None = None, edit=None, cid: str | None = None):
    """A detached container that is force-deleted afterwards."""
    cid = cid or new_id("x")

    def both(c: dict) -> None:
        with_tmp(c)
        if edit is not None:
            edit(c)

    b = rune.bundle(args or ["sleep", "300"], edit=both)
    p = rune("run", "-d", "--bundle", str(b), cid)
    assert p.returncode == 0, p.stderr
    try:
        yield cid
    finally:
        rune("delete", "--force", cid)


def test_exec_exit_status_and_output(rune):
    with running(rune) as cid:
        p = rune("exec", cid, "sh", "-c", "echo out; echo err >&2; exit 7")
        assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
        assert rune("exec", cid, "true").returncode == 0
        assert rune("exec", cid, "sh", "-c", "kill -9 $$").returncode == 128 + 9
        assert rune("exec", cid, "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_exec_oom_score_adj(rune):
    """The exec'd process takes process.oomScoreAdj, of the container's config or of --process (runc exec does)."""
    with running(rune, edit=lambda c: c["process"].update(oomScoreAdj=123)) as cid:
        p = rune("exec", cid, "cat", "/proc/self/oom_score_adj")
        assert (p.returncode, p.stdout) == (0, "123\n"), p.stderr
        proc = {"args": ["cat", "/proc/self/oom_score_adj"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "oomScoreAdj": 321}
        pj = rune.tmp / "process.json"
        pj.write_text(json.dumps(proc))
        p = rune("exec", "--process", str(pj), cid)
        assert (p.returncode, p.stdout) == (0, "321\n"), p.stderr


def test_exec_joins_every_namespace_and_the_cgroup(rune):
    with running(rune) as cid:
        init = rune.state(cid)["pid"]
        script = "; ".join(f"readlink /proc/self/ns/{n}" for n in NAMESPACES)
        p = rune("exec", cid, "sh", "-c", script)
        assert p.returncode == 0, p.stderr
        inside = p.stdout.split()
        outside = [os.readlink(f"/proc/{init}/ns/{n}") for n in NAMESPACES]
        assert inside == outside
        assert inside[0] != os.readlink("/proc/self/ns/ipc")  # really a namespace of its own
        # pid 1 of the container is its init; the exec'd process sees it and not the host's processes
        p = rune("exec", cid, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'")
        lines = p.stdout.splitlines()
        assert lines[0].startswith("sleep 300")
        assert int(lines[1]) < 10
        # the root is the container's, with its private /tmp
        assert rune("exec", cid, "sh", "-c", "echo hi > /tmp/mark").returncode == 0
        assert Path(f"/proc/{init}/root/tmp/mark").read_text() == "hi\n"
        # the process is in every cgroup of the container (v1 controllers and the cgroup2 directory)
        pidfile = rune.tmp / "exec.pid"
        assert rune("exec", "-d", "--pid-file", str(pidfile), cid, "sleep", "100").returncode == 0
        xpid = int(pidfile.read_text())
        theirs = Path(f"/proc/{init}/cgroup").read_text().splitlines()
        mine = Path(f"/proc/{xpid}/cgroup").read_text().splitlines()
        assert sorted(mine) == sorted(theirs)
        assert any(cid in line for line in mine)


def test_exec_detach_pid_file(rune):
    with running(rune) as cid:
        init = rune.state(cid)["pid"]
        pidfile = rune.tmp / "d.pid"
        p = rune("exec", "--detach", "--pid-file", str(pidfile), cid, "sleep", "100")
        assert p.returncode == 0, p.stderr
        xpid = int(pidfile.read_text())
        assert Path(f"/proc/{xpid}/cmdline").read_bytes() == b"sleep\x00100\x00"
        assert os.readlink(f"/proc/{xpid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
        # delete --force takes the exec'd process with it
        assert rune("delete", "--force", cid).returncode == 0
        wait_for(lambda: not os.path.exists(f"/proc/{xpid}") or Path(f"/proc/{xpid}/stat").read_text().split()[2] == "Z",
                 what="the exec'd process to die")


def test_exec_env_cwd_user_groups(rune):
    def edit(c: dict) -> None:
        c["process"]["env"] = ["PATH=/bin", "KEEP=1", "OVER=old"]

    with running(rune, edit=edit) as cid:
        p = rune("exec", "-e", "OVER=new", "--env", "ADDED=x y", "--cwd", "/tmp", "-u", "1000:1000",
                 "-g", "10", "--additional-gids", "20", cid,
                 "sh", "-c", 'echo "$KEEP|$OVER|$ADDED|$HOME"; pwd; id -u; id -g; id -G')
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == ["1|new|x y|/home/user", "/tmp", "1000", "1000", "1000 10 20"]
        p = rune("exec", "-u", "1000", cid, "sh", "-c", "id -u; id -g")
        assert p.stdout.split() == ["1000", "0"]  # the gid stays the container's


def test_exec_process_json(rune):
    with running(rune) as cid:
        pj = rune.tmp / "process.json"
        pj.write_text(json.dumps({"args": ["sh", "-c", "echo $A; pwd; exit 3"], "env": ["A=from-json", "PATH=/bin"],
                                  "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000}}))
        p = rune("exec", "--process", str(pj), cid)
        assert (p.returncode, p.stdout) == (3, "from-json\n/tmp\n"), p.stderr
        bad = rune.tmp / "bad.json"
        bad.write_text(json.dumps({"args": "sh", "cwd": "/"}))
        p = rune("exec", "-p", str(bad), cid)
        assert p.returncode == 255
        assert str(bad) in p.stderr and "process.args" in p.stderr
        bad.write_text(json.dumps({"args": ["true"], "cwd": "relative"}))
        p = rune("exec", "-p", str(bad), cid)
        assert p.returncode == 255 and "process.cwd" in p.stderr
        bad.write_text("{not json")
        p = rune("exec", "-p", str(bad), cid)
        assert p.returncode == 255 and "not valid JSON" in p.stderr
        p = rune("exec", "-p", str(rune.tmp / "missing.json"), cid)
        assert p.returncode == 255 and "missing.json" in p.stderr


def _cap_eff(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def test_exec_capabilities_and_no_new_privs(rune):
    sys_admin = 1 << 21

    def edit(c: dict) -> None:
        c["process"]["noNewPrivileges"] = False

    with running(rune, edit=edit) as cid:
        init = rune.state(cid)["pid"]
        plain = rune("exec", cid, "cat", "/proc/self/status").stdout
        assert _cap_eff(plain) == _cap_eff(Path(f"/proc/{init}/status").read_text())  # the container's set
        assert not _cap_eff(plain) & sys_admin
        assert "NoNewPrivs:\t0" in plain
        more = rune("exec", "--cap", "CAP_SYS_ADMIN", "--no-new-privs", cid, "cat", "/proc/self/status").stdout
        assert _cap_eff(more) & sys_admin
        assert "NoNewPrivs:\t1" in more
        assert rune("exec", "--cap", "sys_admin", cid, "true").returncode == 0  # runc accepts either spelling
        p = rune("exec", "--cap", "CAP_NOPE", cid, "true")
        assert p.returncode == 255 and "CAP_NOPE" in p.stderr


def test_exec_applies_rlimits_of_the_container(rune):
    def edit(c: dict) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 321}]

    with running(rune, edit=edit) as cid:
        assert rune("exec", cid, "sh", "-c", "ulimit -n").stdout.strip() == "321"


def test_exec_seccomp_of_the_container(rune):
    def edit(c: dict) -> None:
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                               "errnoRet": 13}]}

    with running(rune, edit=edit) as cid:
        p = rune("exec", cid, "mkdir", "/tmp/d")
        assert p.returncode == 1 and "Permission denied" in p.stderr
        assert rune("exec", cid, "touch", "/tmp/f").returncode == 0


def test_exec_preserve_fds(rune):
    with running(rune) as cid:
        r, w = os.pipe()

        def rune_with_fd3(*args: str) -> subprocess.CompletedProcess:
            # fd 3 of rune is the pipe (this test process's own fd 3 belongs to pytest)
            return subprocess.run(["bash", "-c", f'exec 3>&{w} {w}>&-; exec "$@"', "bash", rune.binary, "--root",
                                   str(rune.root), *args], pass_fds=(w,), capture_output=True, text=True, timeout=60)

        try:
            p = rune_with_fd3("exec", "--preserve-fds", "1", cid, "sh", "-c", "echo through-fd-3 >&3")
            assert p.returncode == 0, p.stderr
            os.set_blocking(r, False)
            assert os.read(r, 100) == b"through-fd-3\n"
            p = rune_with_fd3("exec", cid, "sh", "-c", "echo x >&3")
            assert p.returncode != 0  # not passed on without --preserve-fds
        finally:
            os.close(r)
            os.close(w)


def test_exec_signals_are_forwarded(rune):
    with running(rune) as cid:
        proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "exec", cid, "sh", "-c",
                                 'trap "exit 42" TERM; touch /tmp/ready; while :; do sleep 0.05; done'])
        try:
            wait_for(lambda: rune("exec", cid, "test", "-e", "/tmp/ready").returncode == 0, what="the trap")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 42
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _console_receiver(path: Path, out: list):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        fds = array.array("i")
        msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        conn.close()
        out.append(msg)
        master = fds[0]
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        out.append(b"".join(chunks))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_exec_tty_console_socket(rune):
    with running(rune) as cid:
        sock_path = rune.tmp / "console.sock"
        got: list = []
        srv, t = _console_receiver(sock_path, got)
        try:
            p = rune("exec", "--tty", "--console-socket", str(sock_path), cid, "sh", "-c", "tty; echo hello-pty")
            assert p.returncode == 0, p.stderr
            t.join(10)
            assert got[0] == b"/dev/ptmx"
            text = got[1].decode()
            assert "/dev/pts/" in text and "hello-pty" in text
        finally:
            srv.close()


def test_exec_tty_proxied_without_console_socket(rune):
    with running(rune) as cid:
        p = rune("exec", "-t", cid, "sh", "-c", "tty; stty size", stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        assert "/dev/pts/" in p.stdout


def test_exec_tty_flag_errors(rune):
    with running(rune) as cid:
        p = rune("exec", "-t", "-d", cid, "true")
        assert p.returncode == 255 and "--console-socket" in p.stderr
        p = rune("exec", "--console-socket", str(rune.tmp / "s"), cid, "true")
        assert p.returncode == 255 and "--tty" in p.stderr


def test_exec_in_created_container(rune):
    cid = new_id("x")
    b = rune.bundle(["sleep", "300"], edit=with_tmp)
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    try:
        p = rune("exec", cid, "sh", "-c", "echo in-created; cat /proc/1/cmdline")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("in-created")
        assert rune.state(cid)["status"] == "created"
    finally:
        rune("delete", "--force", cid)


def test_exec_errors(rune):
    p = rune("exec", "nosuch", "true")
    assert p.returncode == 255 and "'nosuch' does not exist" in p.stderr
    with running(rune) as cid:
        p = rune("exec", cid, "nope")
        assert p.returncode == 255
        assert 'exec: "nope": executable file not found in $PATH' in p.stderr
        p = rune("exec", cid, "/bin/nope")
        assert p.returncode == 255 and "/bin/nope" in p.stderr
        p = rune("exec", cid)
        assert p.returncode == 255 and "program to run" in p.stderr
        p = rune("exec", "--user", "root", cid, "true")
        assert p.returncode == 255 and "--user" in p.stderr
        p = rune("exec", "--cwd", "/nonexistent", cid, "true")
        assert p.returncode == 255 and "/nonexistent" in p.stderr
        p = rune("exec", "--cgroup", "nope:sub", cid, "true")
        assert p.returncode == 255 and "nope" in p.stderr
        assert rune("kill", cid, "KILL").returncode == 0
        wait_for(lambda: rune.state(cid)["status"] == "stopped", what="the container to stop")
        p = rune("exec", cid, "true")
        assert p.returncode == 255 and "stopped" in p.stderr


def test_exec_into_sub_cgroup(rune):
    with running(rune) as cid:
        paths = json.loads((rune.root / cid / "state.json").read_text())["cgroup_paths"]
        sub = os.path.join(paths["pids"], "sub")
        os.mkdir(sub)
        try:
            pidfile = rune.tmp / "sub.pid"
            p = rune("exec", "-d", "--pid-file", str(pidfile), "--cgroup", "pids:sub", cid, "sleep", "100")
            assert p.returncode == 0, p.stderr
            xpid = int(pidfile.read_text())
            assert str(xpid) in Path(sub, "cgroup.procs").read_text().split()
            os.kill(xpid, signal.SIGKILL)
            wait_for(lambda: not Path(sub, "cgroup.procs").read_text().strip(), what="the sub-cgroup to empty")
        finally:
            wait_for(lambda: not Path(sub, "cgroup.procs").read_text().strip() or rune("kill", "--all", cid, "9"),
                     what="cleanup")
            with contextlib.suppress(OSError):
                os.rmdir(sub)


@pytest.mark.skipif(not os.path.exists(RUNC), reason="runc is not installed")
def test_exec_error_exit_codes_match_runc(rune):
    """The same exec failures on one bundle give the same exit codes from runc and rune."""
    b = rune.bundle(["sleep", "300"], edit=with_tmp)
    runc_root = rune.tmp / "runc-root"
    rid, cid = new_id("rc"), new_id("ru")
    pj = rune.tmp / "bad-process.json"
    pj.write_text(json.dumps({"args": 5, "cwd": "/"}))

    def runc(*args: str) -> subprocess.CompletedProcess:
        # files, not pipes: a detached container keeps runc's stdio open
        with tempfile.TemporaryFile("w+") as out:
            p = subprocess.run([RUNC, "--root", str(runc_root), *args], stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, timeout=60)
            out.seek(0)
            p.stdout = out.read()
        return p

    assert runc("run", "-d", "--bundle", str(b), rid).returncode == 0
    try:
        assert rune("run", "-d", "--bundle", str(b), cid).returncode == 0
        cases = [
            ("exec", "{id}", "nope"),
            ("exec", "{id}", "sh", "-c", "exit 3"),
            ("exec", "{id}", "sh", "-c", "kill -9 $$"),
            ("exec", "missing-container", "true"),
            ("exec", "-p", str(pj), "{id}"),
            ("exec", "{id}"),
            ("pause", "{id}"),
            ("pause", "{id}"),
            ("exec", "{id}", "true"),
            ("resume", "{id}"),
            ("resume", "{id}"),
            ("kill", "{id}", "KILL"),
        ]
        for case in cases:
            want = runc(*(a.format(id=rid) for a in case)).returncode
            got = rune(*(a.format(id=cid) for a in case)).returncode
            assert got == want, f"{case}: rune {got}, runc {want}"
        wait_for(lambda: rune.state(cid)["status"] == "stopped", what="rune's container to stop")
        wait_for(lambda: json.loads(runc("state", rid).stdout)["status"] == "stopped", what="runc's container to stop")
        assert rune("exec", cid, "true").returncode == runc("exec", rid, "true").returncode == 255
    finally:
        runc("delete", "--force", rid)
        rune("delete", "--force", cid)
