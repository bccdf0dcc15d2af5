"""A process's command line and environment as /proc/PID/cmdline and /proc/PID/environ show them.

rune's processes start with the caller's command line (the interpreter's path, --root, --log, the bundle) and
environment. A long-lived one inside a container (the init-runelet, PID 1 of an enclave container) must not show
them to the container: /proc/PID/cmdline is readable by every process of its pid namespace. prctl(PR_SET_MM_MAP)
points the kernel's argument and environment ranges at new memory (no capability needed when the executable stays)
and the original arguments are wiped. The original environment strings stay in the process's memory, where glibc's
`environ` points: an enclave runtime (PAL) loaded by the process reads its settings there with getenv(3), and no
other process can read that memory of a non-dumpable process.
"""

from __future__ import annotations

import os

_PR_SET_MM = 35
_PR_SET_MM_MAP = 14
_keep: list = []  # the new strings must stay mapped for the life of the process


def _stat_fields() -> list[int]:
    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    return [int(x) for x in data[data.rindex(b")") + 2 :].split()[1:]]


def set_cmdline(argv: list[str]) -> None:
    """Replace the command line by argv and the environment by nothing (OSError if the kernel refuses)."""
    from inclavare.linux import syscalls as c  # its light C types, not the ctypes package

    f = _stat_fields()  # fields 4.. of /proc/PID/stat: index i is field i + 4 of proc(5)
    start_code, end_code, start_stack = f[22], f[23], f[24]
    start_data, end_data, start_brk, arg_start, arg_end, env_start, env_end = f[41:48]
    libc = c.Library()
    brk = libc.function("sbrk", (c.c_long,), c.c_void_p)(0)
    args = b"\0".join(a.encode() for a in argv) + b"\0"
    buf = c.buffer(len(args) + 1, args)  # one NUL more: the empty environment
    _keep.append(buf)
    new_args = c.addressof(buf)
    fields = [start_code, end_code, start_data, end_data, start_brk, brk, start_stack, new_args, new_args + len(args),
              new_args + len(args), new_args + len(args) + 1]
    mm_map = b"".join(v.to_bytes(8, "little") for v in fields) + bytes(8) + bytes(4) + (0xFFFFFFFF).to_bytes(4, "little")
    raw = c.buffer(len(mm_map), mm_map)
    prctl = libc.function("prctl", (c.c_int, c.c_ulong, c.c_void_p, c.c_ulong, c.c_ulong))
    if prctl(_PR_SET_MM, _PR_SET_MM_MAP, c.addressof(raw), len(mm_map), 0) != 0:
        e = c.get_errno()
        raise OSError(e, f"prctl(PR_SET_MM_MAP): {os.strerror(e)}")
    libc.function("memset", (c.c_void_p, c.c_int, c.c_size_t), c.c_void_p)(arg_start, 0, arg_end - arg_start)
