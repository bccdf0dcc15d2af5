"""The Enclave Runtime PAL API: v1, v2 and v3 of the C ABI through ctypes, and the same operations as a Python
protocol for enclave runtimes that ship with rune (the built-in `sim`).

C ABI (x86-64, natural alignment, as rune and liberpal-skeleton use it; spec_v2.md's `packed` is not what the code
does):

    typedef struct { const char *args; const char *log_level; } pal_attr_t;               // 16 bytes
    typedef struct { pal_attr_t attr_v1; int fd; uint64_t addr; } pal_attr_v3_t;          // 32 bytes
    typedef struct { int stdin, stdout, stderr; } pal_stdio_fds;                           // 12 bytes
    typedef struct { char *path; char **argv; char **env; pal_stdio_fds *stdio; int *pid; }
            pal_create_process_args;                                                       // 40 bytes
    typedef struct { int pid; int *exit_value; } pal_exec_args;                            // 16 bytes
    int pal_get_version(void);                                         // v2+; absent = v1; > 3 refused
    int pal_init(pal_attr_t *);                                        // v3: pal_attr_v3_t *
    int pal_exec(char *path, char *argv[], pal_stdio_fds *, int *exit_code);   // v1, synchronous
    int pal_create_process(pal_create_process_args *);                 // v2+
    int pal_exec(pal_exec_args *);                                     // v2+, blocks until the process ends
    int pal_kill(int pid, int sig);                                    // v2+
    int pal_destroy(void);
    int pal_get_local_report(void *ti, int ti_len, void *report, int *report_len);    // v3

A negative return is an error: -errno (the v1 spec lists -ENOENT, -EACCES, -ENOEXEC, -ENOMEM, -EINVAL).
"""

from __future__ import annotations

import ctypes
import os

from inclavare.errors import RuneError

TYPE_CHECKING = False  # typing itself costs an enclave start several milliseconds
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

MAX_VERSION = 3
TARGET_INFO_SIZE = 512
REPORT_SIZE = 432


class PalAttr(ctypes.Structure):
    _fields_ = [("args", ctypes.c_char_p), ("log_level", ctypes.c_char_p)]


class PalAttrV3(ctypes.Structure):
    _fields_ = [("attr_v1", PalAttr), ("fd", ctypes.c_int), ("addr", ctypes.c_uint64)]


class PalStdioFds(ctypes.Structure):
    _fields_ = [("stdin", ctypes.c_int), ("stdout", ctypes.c_int), ("stderr", ctypes.c_int)]


class PalCreateProcessArgs(ctypes.Structure):
    _fields_ = [("path", ctypes.c_char_p), ("argv", ctypes.POINTER(ctypes.c_char_p)),
                ("env", ctypes.POINTER(ctypes.c_char_p)), ("stdio", ctypes.POINTER(PalStdioFds)),
                ("pid", ctypes.POINTER(ctypes.c_int))]


class PalExecArgs(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int), ("exit_value", ctypes.POINTER(ctypes.c_int))]


SIZES = {PalAttr: 16, PalAttrV3: 32, PalStdioFds: 12, PalCreateProcessArgs: 40, PalExecArgs: 16}


class Pal(Protocol):
    """One enclave runtime, as the init-runelet drives it (the six operations, plus the v3 report)."""

    name: str
    version: int

    def init(self, args: str, log_level: str) -> None: ...

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        """v2+: start the process (not yet waited for); its pid."""

    def exec(self, pid: int) -> int:
        """v2+: wait for the process `pid`; its exit status (128+signal when killed)."""

    def exec_v1(self, path: str, argv: list[str], stdio: tuple[int, int, int]) -> int:
        """v1: run the process to its end; its exit status."""

    def kill(self, pid: int, sig: int) -> None: ...

    def destroy(self) -> None: ...

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        """v3: a REPORT (432 bytes) for the enclave `target_info` (512 bytes) designates."""


def _cstrings(items: list[str]):  # noqa: ANN202 - a ctypes array
    arr = (ctypes.c_char_p * (len(items) + 1))()
    for i, s in enumerate(items):
        arr[i] = os.fsencode(s)
    arr[len(items)] = None
    return arr


class CPal:
    """A PAL shared library loaded with dlopen(RTLD_NOW)."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self.lib = ctypes.CDLL(path, mode=os.RTLD_NOW, )
        except OSError as e:
            raise RuneError(f"enclave runtime {path} cannot be loaded: {e}") from None
        for sym in ("pal_init", "pal_exec", "pal_destroy"):
            if not hasattr(self.lib, sym):
                raise RuneError(f"enclave runtime {path} is not a PAL library: it has no {sym} function")
        if hasattr(self.lib, "pal_get_version"):
            f = self.lib.pal_get_version
            f.restype, f.argtypes = ctypes.c_int, []
            self.version = self._check("pal_get_version", f())
            if not 1 <= self.version <= MAX_VERSION:
                raise RuneError(f"enclave runtime {path} implements PAL API version {self.version}; this rune "
                                f"supports versions 1 to {MAX_VERSION}")
        else:
            self.version = 1
        need = {1: (), 2: ("pal_create_process", "pal_kill"), 3: ("pal_create_process", "pal_kill",
                                                                    "pal_get_local_report")}[self.version]
        for sym in need:
            if not hasattr(self.lib, sym):
                raise RuneError(f"enclave runtime {path} says PAL API v{self.version} but has no {sym} function")
        self._attr: ctypes.Structure | None = None  # kept alive: a PAL may keep the pointers
        self.enclave: tuple[int, int] = (-1, 0)  # v3 fd, addr: a pre-initialised enclave from epm's pool

    def _check(self, fn: str, ret: int) -> int:
        if ret < 0:
            err = -ret  # the PAL convention: -errno (-1 is -EPERM)
            raise RuneError(f"enclave runtime {self.name}: {fn} failed: {os.strerror(err)} (errno {err})")
        return ret

    def init(self, args: str, log_level: str) -> None:
        base = PalAttr(os.fsencode(args), os.fsencode(log_level))
        # v3: epm's pre-initialised enclave (enclave_pool.take, checked there), else none
        attr: ctypes.Structure = PalAttrV3(base, *self.enclave) if self.version >= 3 else base
        self._attr = attr
        f = self.lib.pal_init
        f.restype, f.argtypes = ctypes.c_int, [ctypes.c_void_p]
        self._check("pal_init", f(ctypes.byref(attr)))

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        pid = ctypes.c_int(0)
        fds = PalStdioFds(*stdio)
        a_argv, a_env = _cstrings(argv), _cstrings(env)
        args = PalCreateProcessArgs(os.fsencode(path), a_argv, a_env, ctypes.pointer(fds), ctypes.pointer(pid))
        f = self.lib.pal_create_process
        f.restype, f.argtypes = ctypes.c_int, [ctypes.POINTER(PalCreateProcessArgs)]
        self._check("pal_create_process", f(ctypes.byref(args)))
        return pid.value

    def exec(self, pid: int) -> int:
        code = ctypes.c_int(0)
        args = PalExecArgs(pid, ctypes.pointer(code))
        f = self.lib.pal_exec
        f.restype, f.argtypes = ctypes.c_int, [ctypes.POINTER(PalExecArgs)]
        self._check("pal_exec", f(ctypes.byref(args)))
        return code.value

    def exec_v1(self, path: str, argv: list[str], stdio: tuple[int, int, int]) -> int:
        code = ctypes.c_int(0)
        fds = PalStdioFds(*stdio)
        f = self.lib.pal_exec
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(PalStdioFds),
                      ctypes.POINTER(ctypes.c_int)]
        self._check("pal_exec", f(os.fsencode(path), _cstrings(argv), ctypes.byref(fds), ctypes.byref(code)))
        return code.value

    def kill(self, pid: int, sig: int) -> None:
        f = self.lib.pal_kill
        f.restype, f.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
        self._check("pal_kill", f(pid, sig))

    def destroy(self) -> None:
        f = self.lib.pal_destroy
        f.restype, f.argtypes = ctypes.c_int, []
        self._check("pal_destroy", f())

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        if self.version < 3:
            raise RuneError(f"enclave runtime {self.name} implements PAL API v{self.version}: local reports need v3")
        if len(target_info) != TARGET_INFO_SIZE:
            raise RuneError(f"a TARGETINFO is {TARGET_INFO_SIZE} bytes, got {len(target_info)}")
        ti = ctypes.create_string_buffer(target_info, TARGET_INFO_SIZE)
        report = ctypes.create_string_buffer(REPORT_SIZE)
        n = ctypes.c_int(REPORT_SIZE)
        f = self.lib.pal_get_local_report
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        self._check("pal_get_local_report", f(ti, TARGET_INFO_SIZE, report, ctypes.byref(n)))
        if n.value != REPORT_SIZE:
            raise RuneError(f"enclave runtime {self.name}: pal_get_local_report returned {n.value} bytes, not a "
                            f"{REPORT_SIZE}-byte REPORT")
        return report.raw


def load(path: str) -> Pal:
    """The PAL library at `path` (a host path; call before pivot_root)."""
    return CPal(path)
