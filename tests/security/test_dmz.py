"""The exec trampoline (inclavare.linux.dmz): its bytes are its assembly source, its memfd cannot be changed, and it
keeps its contract (exec, report a failed exec, refuse to run as a script's interpreter)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
from tests.conftest import REPO, new_id
from tests.security.conftest import PROC_OVER, wait_proc_over

sys.path.insert(0, str(REPO / "src"))
from inclavare.linux import dmz, sealed_exe  # noqa: E402

SOURCE = REPO / "src" / "inclavare" / "linux" / "dmz_x86_64.S"


def test_the_bytes_are_the_assembly_source(tmp_path):
    if not (shutil.which("as") and shutil.which("objcopy")):
        pytest.skip("binutils (as, objcopy) are not installed")
    obj, flat = tmp_path / "dmz.o", tmp_path / "dmz.bin"
    subprocess.run(["as", "--64", "-o", str(obj), str(SOURCE)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(flat)], check=True)
    assert flat.read_bytes() == dmz._CODE_X86_64


def test_the_elf_is_well_formed(tmp_path):
    exe = tmp_path / "dmz"
    exe.write_bytes(dmz.elf())
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-lh", str(exe)], capture_output=True, text=True, check=True).stdout
        assert "EXEC (Executable file)" in out and "Advanced Micro Devices X86-64" in out
        assert "GNU_STACK" in out and "RWE" not in out


def _child(fn) -> tuple[int, bytes]:
    """Run fn in a forked child with a report pipe; (exit code, what it reported)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fn(w)
        finally:
            os._exit(99)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), data


def test_exec_and_its_failures():
    code, data = _child(lambda w: dmz.execve("/bin/sh", ["sh", "-c", "exit 7"], {}, w))
    assert (code, data) == (7, b"")  # the report fd was closed by the successful exec
    code, data = _child(lambda w: dmz.execve("/nonexistent", ["x"], {}, w))
    assert (code, dmz.failure(data)) == (1, 2)  # reported: exit 1, as runc's init
    code, data = _child(lambda w: dmz.execve("/etc/hostname", ["x"], {}, w))
    assert code == 1 and dmz.failure(data) in (8, 13)  # not executable: EACCES (or ENOEXEC)
    code, _ = _child(lambda w: dmz.execve("/nonexistent", ["x"], {}))
    assert code == 127  # unreported (a startContainer hook): a shell's status
    code, _ = _child(lambda w: dmz.execve("/etc/hostname", ["x"], {}))
    assert code == 126


def test_the_environment_is_passed_on():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        dmz.execve("/usr/bin/env", ["env"], {"ONLY": "this"})
    os.close(w)
    out = os.read(r, 4096)
    os.waitpid(pid, 0)
    assert out == b"ONLY=this\n"


def test_refuses_to_run_as_an_interpreter(tmp_path):
    """A script `#!/proc/self/exe` exec'd by the trampoline gets the trampoline as its interpreter, which says so and
    exits 126 (no loop, nothing run)."""
    script = tmp_path / "evil"
    script.write_text("#!/proc/self/exe\necho ran\n")
    script.chmod(0o755)
    err = tmp_path / "err"

    def go(w: int) -> None:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT)
        os.dup2(fd, 2)
        dmz.execve(str(script), ["evil"], {}, w)

    code, data = _child(go)
    assert code == 126 and data == b""
    assert "exec trampoline" in err.read_text()


def _overlay_exe() -> int:
    import tempfile

    fd = sealed_exe.overlay_exe(os.path.realpath(sys.executable), tempfile.gettempdir())
    assert fd is not None, "no read-only overlayfs could be made (root with overlayfs and fsopen expected here)"
    return fd


@pytest.mark.parametrize("make", [lambda: dmz.sealed_fd(), sealed_exe.sealed_copy], ids=["trampoline", "interpreter"])
def test_the_memfd_refuses_every_change(make):
    fd = make()
    path = f"/proc/self/fd/{fd}"
    before = open(path, "rb").read()
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        try:
            w = os.open(path, flags)
        except PermissionError:
            continue
        try:
            with pytest.raises(PermissionError):
                os.write(w, b"\x7fELF-overwritten")
        finally:
            os.close(w)
    with pytest.raises(PermissionError):
        os.truncate(path, 0)
    w = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(w, 1 << 20)
        import mmap

        with pytest.raises(PermissionError):
            mmap.mmap(w, os.fstat(w).st_size, mmap.MAP_SHARED, mmap.PROT_WRITE)
    finally:
        os.close(w)
    assert open(path, "rb").read() == before
    if fd != dmz.sealed_fd():
        os.close(fd)


def test_the_interpreter_through_the_read_only_overlay_refuses_every_change():
    """What the runelet of a PAL container runs from, as root where overlayfs and the new mount API exist: every way
    to change the file through its /proc/self/exe (content, size, mode, owner, times, extended attributes) is
    refused, and the host's interpreter is the same file, unchanged, after."""
    fd = _overlay_exe()
    host = os.path.realpath(sys.executable)
    try:
        assert sealed_exe.protected(fd)
        path = f"/proc/self/fd/{fd}"
        before, st = open(host, "rb").read(), os.stat(host)
        changes = [lambda: os.open(path, os.O_WRONLY), lambda: os.open(path, os.O_RDWR),
                   lambda: os.open(path, os.O_WRONLY | os.O_TRUNC), lambda: os.open(path, os.O_WRONLY | os.O_APPEND),
                   lambda: os.truncate(path, 0), lambda: os.chmod(path, 0o777), lambda: os.chown(path, 1, 1),
                   lambda: os.utime(path, (0, 0)), lambda: os.setxattr(path, "user.x", b"1")]
        for change in changes:
            with pytest.raises(OSError) as e:
                change()
            assert e.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES, errno.EBADF), e.value
        assert open(host, "rb").read() == before and os.stat(host).st_mtime_ns == st.st_mtime_ns
        assert os.stat(path).st_size == st.st_size  # the same program, seen through the overlay
    finally:
        os.close(fd)


NO_EXECVEAT = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
REFUSED = ('the seccomp profile (linux.seccomp) denies execveat (Operation not permitted), which rune needs to exec '
           '"{program}" through its sealed exec trampoline {where}; allow execveat in the profile')


def _no_execveat(c: dict) -> None:
    c["linux"]["seccomp"] = NO_EXECVEAT


def test_a_seccomp_profile_without_execveat(rune):
    """A profile that refuses execveat (with an errno) still runs the container: its init, in the mount namespace
    it made and before any program of the container ran there, execs the trampoline through /proc/self/fd with
    execve, which every profile allows since the program's exec needs it."""
    p = rune("run", "--bundle", str(rune.bundle(["sh", "-c", "echo ran; readlink /proc/self/exe"], edit=_no_execveat)),
             new_id("seccomp"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ran", "/bin/busybox"]


def _running(rune, args: list[str], edit) -> tuple[str, int]:  # noqa: ANN001
    cid = new_id("dmz")
    p = rune("run", "-d", "--bundle", str(rune.bundle(args, edit=edit)), cid)
    assert p.returncode == 0, p.stderr
    return cid, rune.state(cid)["pid"]


def _in_pid_namespace_of(pid: int) -> list[int]:
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    out = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.readlink(f"/proc/{name}/ns/pid") == ns:
                out.append(int(name))
        except OSError:
            pass  # ended meanwhile
    return out


def test_rune_exec_without_execveat_is_refused(rune):
    """In a running container /proc/self/fd is the container's to mount over, so `rune exec` never execs the
    trampoline by that path: a profile that refuses execveat gets one sentence naming it, on stderr and in the
    --log file, rune exec's status for a process that could not start (255, as runc), and no process is left."""
    cid, pid = _running(rune, ["sleep", "60"], _no_execveat)
    try:
        log = rune.tmp / "exec.log"
        p = rune("--log", str(log), "--log-format", "json", "exec", cid, "echo", "ran")
        want = REFUSED.format(program="echo", where="in a running container")
        assert (p.returncode, p.stdout, p.stderr) == (255, "", f"exec failed: {want}\n")
        assert [json.loads(line)["msg"] for line in log.read_text().splitlines()] == [f"exec failed: {want}"]
        assert _in_pid_namespace_of(pid) == [pid]
    finally:
        rune("delete", "--force", cid)


# the container mounts a tmpfs over /proc with a script at each /proc/self/fd/N, where a rune that exec'd its
# trampoline by that path would find one (with `#!/<a procfs mounted elsewhere>/self/exe` the script would be
# given the rune process's own exe, the host's interpreter: here it leaves a file to show that it ran), then waits
# (PROC_OVER, tests/security/conftest.py)


def test_a_mount_over_proc_does_not_choose_what_rune_exec_runs(rune):
    """A container with CAP_SYS_ADMIN and a profile that refuses execveat mounts over its /proc: `rune exec` is
    refused (it would have exec'd the container's /proc/self/fd/N, a file of the container's choosing, in a
    process whose /proc/self/exe is the host's interpreter), and nothing of the container's ran."""
    def edit(c: dict) -> None:
        _no_execveat(c)
        for caps in c["process"]["capabilities"].values():
            caps.append("CAP_SYS_ADMIN")

    cid, pid = _running(rune, ["sh", "-c", PROC_OVER], edit)
    try:
        wait_proc_over(pid)
        p = rune("exec", cid, "echo", "ran")
        assert (p.returncode, p.stdout) == (255, ""), p.stderr
        assert REFUSED.format(program="echo", where="in a running container") in p.stderr
        assert not os.path.exists(f"/proc/{pid}/root/dev/shm/hijacked")
    finally:
        rune("delete", "--force", cid)


def test_an_init_without_its_own_mount_namespace_needs_execveat(rune):
    """An init in a mount namespace it did not make (none in linux.namespaces: another's, whose processes may have
    mounted over /proc) is refused the path too, with the sentence saying where, and nothing is left behind."""
    def edit(c: dict) -> None:
        _no_execveat(c)
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "mount"]
        c["mounts"] = []
        c["root"]["readonly"] = False
        c["linux"].pop("maskedPaths", None)
        c["linux"].pop("readonlyPaths", None)

    cid = new_id("dmz")
    p = rune("run", "--bundle", str(rune.bundle(["echo", "ran"], edit=edit)), cid)
    want = REFUSED.format(program="echo", where="in a mount namespace the container shares (linux.namespaces has "
                                                 "no mount namespace)")
    assert (p.returncode, p.stdout) == (1, ""), p.stderr
    assert want in p.stderr
    assert not (rune.root / cid).exists()


def test_a_start_container_hook_needs_execveat(rune):
    """A startContainer hook is a program of the container's, run in its mount namespace: it is refused the path (as
    the container's program after it would be), and the run fails with the hook's sentence."""
    def edit(c: dict) -> None:
        _no_execveat(c)
        c["hooks"] = {"startContainer": [{"path": "/bin/true"}]}

    cid = new_id("dmz")
    p = rune("run", "--bundle", str(rune.bundle(["echo", "ran"], edit=edit)), cid)
    assert (p.returncode, p.stdout) == (1, ""), p.stderr
    assert REFUSED.format(program="/bin/true", where="in the container") in p.stderr
    assert not (rune.root / cid).exists()


def test_the_interpreter_copy_is_made_again_when_sealing_finds_it_busy(monkeypatch):
    """EBUSY from F_ADD_SEALS (a page of the copy still referenced when the kernel gave up waiting): a fresh copy,
    twice at most; then one sentence naming the copy, not a bare 'Device or resource busy'."""
    import fcntl

    real = fcntl.fcntl
    busy = {"left": 2}

    def flaky(fd, cmd, arg=0):  # noqa: ANN001, ANN202
        if cmd == 1033 and busy["left"] > 0:
            busy["left"] -= 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", flaky)
    fd = sealed_exe.sealed_copy()
    try:
        assert busy["left"] == 0 and real(fd, 1034) & 0xF == 0xF  # sealed, on the third copy
    finally:
        os.close(fd)
    busy["left"] = 3
    with pytest.raises(OSError) as e:
        sealed_exe.sealed_copy()
    assert e.value.errno == errno.EBUSY and "cannot seal the memfd copy of the interpreter" in str(e.value)
    assert busy["left"] == 0
