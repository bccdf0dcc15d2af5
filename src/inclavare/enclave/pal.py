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

import _ctypes
import os

from inclavare.errors import RuneError
from inclavare.linux.syscalls import POINTER, Library, buffer, byref, c_char_p, c_int, c_uint64, c_void_p

TYPE_CHECKING = False  # typing itself costs an enclave start several milliseconds
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

MAX_VERSION = 3
TARGET_INFO_SIZE = 512
REPORT_SIZE = 432

# The structures through the _ctypes extension and linux/syscalls.py's C types, not the ctypes package, whose import
# (it builds dozens of types) cost PID 1 of a PAL container about 3 ms


class PalAttr(_ctypes.Structure):
    _fields_ = [("args", c_char_p), ("log_level", c_char_p)]


class PalAttrV3(_ctypes.Structure):
    _fields_ = [("attr_v1", PalAttr), ("fd", c_int), ("addr", c_uint64)]


class PalStdioFds(_ctypes.Structure):
    _fields_ = [("stdin", c_int), ("stdout", c_int), ("stderr", c_int)]


class PalCreateProcessArgs(_ctypes.Structure):
    _fields_ = [("path", c_char_p), ("argv", POINTER(c_char_p)), ("env", POINTER(c_char_p)),
                ("stdio", POINTER(PalStdioFds)), ("pid", POINTER(c_int))]


class PalExecArgs(_ctypes.Structure):
    _fields_ = [("pid", c_int), ("exit_value", POINTER(c_int))]


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
    arr = (c_char_p * (len(items) + 1))()
    for i, s in enumerate(items):
        arr[i] = os.fsencode(s)
    arr[len(items)] = None
    return arr


class CPal:
    """A PAL shared library loaded with dlopen(RTLD_NOW)."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self.lib = Library(path)
        except OSError as e:
            raise RuneError(f"enclave runtime {path} cannot be loaded: {e}") from None
        for sym in ("pal_init", "pal_exec", "pal_destroy"):
            if not self._has(sym):
                raise RuneError(f"enclave runtime {path} is not a PAL library: it has no {sym} function")
        if self._has("pal_get_version"):
            self.version = self._check("pal_get_version", self._fn("pal_get_version", ())())
            if not 1 <= self.version <= MAX_VERSION:
                raise RuneError(f"enclave runtime {path} implements PAL API version {self.version}; this rune "
                                f"supports versions 1 to {MAX_VERSION}")
        else:
            self.version = 1
        need = {1: (), 2: ("pal_create_process", "pal_kill"), 3: ("pal_create_process", "pal_kill",
                                                                    "pal_get_local_report")}[self.version]
        for sym in need:
            if not self._has(sym):
                raise RuneError(f"enclave runtime {path} says PAL API v{self.version} but has no {sym} function")
        self._attr: _ctypes.Structure | None = None  # kept alive: a PAL may keep the pointers
        self.enclave: tuple[int, int] = (-1, 0)  # v3 fd, addr: a pre-initialised enclave from epm's pool

    def _has(self, sym: str) -> bool:
        try:
            _ctypes.dlsym(self.lib._handle, sym)
        except OSError:
            return False
        return True

    def _fn(self, sym: str, argtypes: tuple):  # noqa: ANN202 - a C function of the library, returning an int
        return self.lib.function(sym, argtypes)

    def _check(self, fn: str, ret: int) -> int:
        if ret < 0:
            err = -ret  # the PAL convention: -errno (-1 is -EPERM)
            raise RuneError(f"enclave runtime {self.name}: {fn} failed: {os.strerror(err)} (errno {err})")
        return ret

    def init(self, args: str, log_level: str) -> None:
        base = PalAttr(os.fsencode(args), os.fsencode(log_level))
        # v3: epm's pre-initialised enclave (enclave_pool.take, checked there), else none
        attr: _ctypes.Structure = PalAttrV3(base, *self.enclave) if self.version >= 3 else base
        self._attr = attr
        self._check("pal_init", self._fn("pal_init", (c_void_p,))(byref(attr)))

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        pid = c_int(0)
        fds = PalStdioFds(*stdio)
        a_argv, a_env = _cstrings(argv), _cstrings(env)
        args = PalCreateProcessArgs(os.fsencode(path), a_argv, a_env, _ctypes.pointer(fds), _ctypes.pointer(pid))
        f = self._fn("pal_create_process", (POINTER(PalCreateProcessArgs),))
        self._check("pal_create_process", f(byref(args)))
        return pid.value

    def exec(self, pid: int) -> int:
        code = c_int(0)
        args = PalExecArgs(pid, _ctypes.pointer(code))
        self._check("pal_exec", self._fn("pal_exec", (POINTER(PalExecArgs),))(byref(args)))
        return code.value

    def exec_v1(self, path: str, argv: list[str], stdio: tuple[int, int, int]) -> int:
        code = c_int(0)
        fds = PalStdioFds(*stdio)
        f = self._fn("pal_exec", (c_char_p, POINTER(c_char_p), POINTER(PalStdioFds), POINTER(c_int)))
        self._check("pal_exec", f(os.fsencode(path), _cstrings(argv), byref(fds), byref(code)))
        return code.value

    def kill(self, pid: int, sig: int) -> None:
        self._check("pal_kill", self._fn("pal_kill", (c_int, c_int))(pid, sig))

    def destroy(self) -> None:
        self._check("pal_destroy", self._fn("pal_destroy", ())())

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        if self.version < 3:
            raise RuneError(f"enclave runtime {self.name} implements PAL API v{self.version}: local reports need v3")
        if len(target_info) != TARGET_INFO_SIZE:
            raise RuneError(f"a TARGETINFO is {TARGET_INFO_SIZE} bytes, got {len(target_info)}")
        ti = buffer(TARGET_INFO_SIZE, target_info)
        report = buffer(REPORT_SIZE)
        n = c_int(REPORT_SIZE)
        f = self._fn("pal_get_local_report", (c_void_p, c_int, c_void_p, POINTER(c_int)))
        self._check("pal_get_local_report", f(ti, TARGET_INFO_SIZE, report, byref(n)))
        if n.value != REPORT_SIZE:
            raise RuneError(f"enclave runtime {self.name}: pal_get_local_report returned {n.value} bytes, not a "
                            f"{REPORT_SIZE}-byte REPORT")
        return report.raw


def load(path: str) -> Pal:
    """The PAL library at `path` (a host path; call before pivot_root)."""
    return CPal(path)
