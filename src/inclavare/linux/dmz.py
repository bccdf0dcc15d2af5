"""The exec trampoline: the last program rune's own processes exec inside a container, so that no container ever
reaches the host's interpreter through /proc/self/exe (CVE-2019-5736).

rune's init and exec processes are Python: until they execve, /proc/self/exe is the host's interpreter. A container
program whose file is a script with `#!/proc/self/exe` (or a startContainer hook) would have the kernel run that
interpreter, in the container, with the attacker's library or script, and the host's file open for writing once
rune's processes end. So rune never execs a container's file itself: it execs this trampoline from a sealed memfd
(its bytes below, 559 in all), and the trampoline execs the container's program. At that moment /proc/self/exe is
the memfd: a script naming /proc/self/exe as its interpreter runs the trampoline again, which refuses to run as an
interpreter (exit 126), and the memfd's seals refuse every write. runc does the same with a sealed copy of itself
(runc-dmz, or its memfd/overlay clone); rune's copy is a 559-byte static program instead of the interpreter, so the
cost is one memfd and one extra execve of a binary without a loader (about 0.1 ms).

Its contract (the assembly source is dmz_x86_64.S next to this file; tests/security/test_dmz.py assembles it and
compares): argv = [MAGIC, REPORT_FD or "-", PATH, ARGV0, ARGS...], environment passed on. It marks REPORT_FD
close-on-exec and execs PATH with [ARGV0, ARGS...]; if that fails it writes "X" and the errno in decimal to
REPORT_FD and exits 1 (as runc's init does when the user's program cannot be exec'd: engines show that status),
or without a REPORT_FD exits 127 (ENOENT) or 126, as a shell does. Called with another argv[0] (as a script's interpreter) it says so on
stderr and exits 126.
"""

from __future__ import annotations

import os

MAGIC = "rune-exec"
EXEC_FAILED = b"X"  # what the trampoline writes on the report fd, followed by the errno in decimal

# x86-64 machine code of dmz_x86_64.S (`as --64`, then the .text section as a flat binary)
_CODE_X86_64 = bytes.fromhex(
    "488b1c244c8d6424084d8d6cdc084883fb030f8ce1000000498b3424488d3dfa0000008a073a060f85cc00000048ffc7"
    "48ffc684c075ec498b74240849c7c6ffffffff66833e2d74364531f60fb60684c0741883e83083f8090f879a0000004d"
    "6bf60a4901c648ffc6ebe14489f7be02000000ba01000000b8480000000f05498b7c2410498d7424184c89eab83b0000"
    "000f0548f7d84989c74d85f678444883ec20488d4c24204889cf41b80a00000031d249f7f080c23048ffcf88174885c0"
    "75ee48ffcfc607584889fe4889ca4829fa4489f7b8010000000f05bf01000000eb10bf7e0000004983ff027505bf7f00"
    "0000b8e70000000f05bf02000000488d3522000000ba58000000b8010000000f05bf7e000000b8e70000000f0572756e"
    "652d657865630072756e653a20746869732069732072756e6527732065786563207472616d706f6c696e653b20697420"
    "72756e73206f6e6c792061732072756e6520737461727473206120636f6e7461696e657227732070726f6772616d0a"
)

_BASE = 0x400000
_HEADERS = 64 + 2 * 56  # ELF header, PT_LOAD and PT_GNU_STACK program headers


def _u(v: int, n: int) -> bytes:
    return v.to_bytes(n, "little")


def elf(code: bytes = _CODE_X86_64) -> bytes:
    """A static ELF64 executable for x86-64: one read+execute segment holding the headers and the code, and a
    non-executable stack (PT_GNU_STACK, so that no READ_IMPLIES_EXEC personality is passed on to the program)."""
    size = _HEADERS + len(code)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, System V
              + _u(2, 2) + _u(0x3E, 2) + _u(1, 4)  # ET_EXEC, EM_X86_64, EV_CURRENT
              + _u(_BASE + _HEADERS, 8) + _u(64, 8) + _u(0, 8)  # entry, program headers, no section headers
              + _u(0, 4) + _u(64, 2) + _u(56, 2) + _u(2, 2) + _u(64, 2) + _u(0, 2) + _u(0, 2))
    load = _u(1, 4) + _u(5, 4) + _u(0, 8) + _u(_BASE, 8) + _u(_BASE, 8) + _u(size, 8) + _u(size, 8) + _u(0x1000, 8)
    stack = _u(0x6474E551, 4) + _u(6, 4) + bytes(48)  # PT_GNU_STACK, read+write
    return header + load + stack + code


_MFD_CLOEXEC = 0x1
_MFD_ALLOW_SEALING = 0x2
_MFD_EXEC = 0x10  # Linux 6.3+: executable on hosts where vm.memfd_noexec would make memfds non-executable
_F_ADD_SEALS = 1033
_SEALS = 0x1 | 0x2 | 0x4 | 0x8 | 0x20  # F_SEAL_SEAL, SHRINK, GROW, WRITE, EXEC: no write, resize or chmod, ever

_fd = -1


def sealed_fd() -> int:
    """A close-on-exec fd of the trampoline in a sealed memfd (made once per process)."""
    global _fd
    if _fd >= 0:
        return _fd
    from inclavare.linux import syscalls

    if os.uname().machine != "x86_64":
        raise OSError(95, "rune's exec trampoline exists for x86-64 only")
    try:
        fd = os.memfd_create("rune-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
    except OSError as e:
        if e.errno != 22:  # EINVAL: a kernel before 6.3, where every memfd is executable
            raise
        fd = os.memfd_create("rune-exec", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
    try:
        data = elf()
        if os.write(fd, data) != len(data):
            raise OSError(5, "short write to the exec trampoline's memfd")
        os.fchmod(fd, 0o555)
        try:
            syscalls.fcntl(fd, _F_ADD_SEALS, _SEALS)
        except OSError:
            syscalls.fcntl(fd, _F_ADD_SEALS, _SEALS & ~0x20)  # F_SEAL_EXEC is Linux 6.3+
    except BaseException:
        os.close(fd)
        raise
    _fd = fd
    return fd


class NeedsExecveat(OSError):
    """execveat of the trampoline's memfd failed (a seccomp profile that refuses it) where exec'ing it by a path is
    not safe; nothing was exec'd. Its errno and strerror are execveat's."""


def execve(path: str, args: list[str], env: dict[str, str], report_fd: int = -1, by_path: bool = False) -> None:
    """Exec `path` through the sealed trampoline; returns only by raising OSError (then nothing was exec'd).

    report_fd: an fd on which the trampoline reports the errno of a failed execve of `path` ("X" + errno), made
    close-on-exec by the trampoline itself so that a successful exec closes it; -1 for none.

    The trampoline is exec'd by its fd (execveat AT_EMPTY_PATH), which no mount can redirect. Where a seccomp
    profile refuses execveat but allows execve, /proc/self/fd/N is the only other way to it, and that is a path,
    resolved in the caller's mount namespace: a process with CAP_SYS_ADMIN there (the capability given, or the root
    of a user namespace) can mount over /proc and put its own file at that name, a script whose interpreter is
    /proc/PID/exe of a rune process, which is the host's interpreter. Checking /proc first cannot help (it can be
    mounted over between the check and the execve). So the path is used only when the caller says so (by_path):
    when no process but rune's can have mounted anything in that namespace yet, which holds for the init of a
    container in the mount namespace it made itself, before any program of the container ran in it. Everywhere
    else (rune exec, a runelet's processes, a hook, an init in a joined namespace) a refused execveat raises
    NeedsExecveat, and the caller says which field to change."""
    fd = sealed_fd()
    if report_fd >= 0:
        os.set_inheritable(report_fd, True)
    argv = [MAGIC, str(report_fd) if report_fd >= 0 else "-", path, *args]
    try:
        os.execve(fd, argv, env)  # fexecve: execveat(fd, "", AT_EMPTY_PATH)
    except OSError as e:
        if e.errno in (7, 12):  # E2BIG, ENOMEM: the exec itself failed, as it would by any path
            raise
        if not by_path:
            raise NeedsExecveat(e.errno, e.strerror) from None
        if not os.path.exists(f"/proc/self/fd/{fd}"):
            raise OSError(e.errno, f"cannot exec rune's exec trampoline: {e.strerror}") from None
        os.execve(f"/proc/self/fd/{fd}", argv, env)


def failure(data: bytes) -> int | None:
    """The errno in a report the trampoline wrote, or None if `data` is not one."""
    if data[:1] == EXEC_FAILED and data[1:].isdigit():
        return int(data[1:])
    return None
