"""ctypes bindings to libseccomp 2.5+ (libseccomp.so.2), loaded once on first use.

Only what the runtime and a seccomp agent need: filter contexts, rules with argument comparisons, attributes, load,
and the user-notification calls. Constants are the values of <seccomp.h> and <linux/seccomp.h>.
"""

from __future__ import annotations

import ctypes

from inclavare.errors import RuneError

LIBRARY = "libseccomp.so.2"

# Actions (uint32 as in <seccomp.h>); ERRNO and TRACE carry 16 bits of data in their low half.
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_NOTIFY = 0x7FC00000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

# enum scmp_compare
CMP_NE = 1
CMP_LT = 2
CMP_LE = 3
CMP_EQ = 4
CMP_GE = 5
CMP_GT = 6
CMP_MASKED_EQ = 7

# enum scmp_filter_attr
FLTATR_ACT_DEFAULT = 1
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3
FLTATR_CTL_TSYNC = 4
FLTATR_API_TSKIP = 5
FLTATR_CTL_LOG = 6
FLTATR_CTL_SSB = 7
FLTATR_CTL_OPTIMIZE = 8
FLTATR_API_SYSRAWRC = 9
FLTATR_CTL_WAITKILL = 10  # libseccomp 2.6+

NR_SCMP_ERROR = -1  # __NR_SCMP_ERROR: a name libseccomp does not know on any architecture

# struct seccomp_notif_resp.flags
USER_NOTIF_FLAG_CONTINUE = 1


class ScmpArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: for SCMP_CMP_MASKED_EQ datum_a is the mask and datum_b the value."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class SeccompData(ctypes.Structure):
    """struct seccomp_data: the syscall as the filter saw it."""

    _fields_ = (
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class SeccompNotif(ctypes.Structure):
    """struct seccomp_notif: one notification read from the listener fd."""

    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", SeccompData),
    )


class SeccompNotifResp(ctypes.Structure):
    """struct seccomp_notif_resp: the answer; error is a negative errno or 0."""

    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded libseccomp with its prototypes declared; RuneError if it is not installed."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        cdll = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError:
        raise RuneError(f"{LIBRARY} not found: install libseccomp2") from None
    c_void_p, c_int, c_uint, c_uint32, c_char_p = (
        ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint32, ctypes.c_char_p)
    protos = (
        ("seccomp_init", c_void_p, (c_uint32,)),
        ("seccomp_release", None, (c_void_p,)),
        ("seccomp_load", c_int, (c_void_p,)),
        ("seccomp_arch_add", c_int, (c_void_p, c_uint32)),
        ("seccomp_arch_native", c_uint32, ()),
        ("seccomp_arch_resolve_name", c_uint32, (c_char_p,)),
        ("seccomp_syscall_resolve_name", c_int, (c_char_p,)),
        ("seccomp_rule_add_array", c_int, (c_void_p, c_uint32, c_int, c_uint, ctypes.POINTER(ScmpArgCmp))),
        ("seccomp_attr_set", c_int, (c_void_p, c_int, c_uint32)),
        ("seccomp_api_get", c_uint, ()),
        ("seccomp_version", ctypes.POINTER(c_uint * 3), ()),
        ("seccomp_export_bpf", c_int, (c_void_p, c_int)),
        ("seccomp_notify_fd", c_int, (c_void_p,)),
        ("seccomp_notify_alloc", c_int,
         (ctypes.POINTER(ctypes.POINTER(SeccompNotif)), ctypes.POINTER(ctypes.POINTER(SeccompNotifResp)))),
        ("seccomp_notify_free", None, (ctypes.POINTER(SeccompNotif), ctypes.POINTER(SeccompNotifResp))),
        ("seccomp_notify_receive", c_int, (c_int, ctypes.POINTER(SeccompNotif))),
        ("seccomp_notify_respond", c_int, (c_int, ctypes.POINTER(SeccompNotifResp))),
        ("seccomp_notify_id_valid", c_int, (c_int, ctypes.c_uint64)),
    )
    for name, restype, argtypes in protos:
        func = getattr(cdll, name)
        func.restype = restype
        func.argtypes = argtypes
    _lib = cdll
    return cdll


def version() -> tuple[int, int, int]:
    """libseccomp's (major, minor, micro)."""
    v = lib().seccomp_version().contents
    return (v[0], v[1], v[2])


def version_string() -> str:
    major, minor, micro = version()
    return f"{major}.{minor}.{micro}"


def api_level() -> int:
    """libseccomp's API level for this kernel: 3 adds LOG and KILL_PROCESS, 4 SPEC_ALLOW, 5 NOTIFY, 6 TSYNC with NOTIFY."""
    return int(lib().seccomp_api_get())


def resolve_syscall(name: str) -> int:
    """The native syscall number of name; a negative pseudo number for a syscall of another architecture only;
    NR_SCMP_ERROR if libseccomp does not know the name at all."""
    return int(lib().seccomp_syscall_resolve_name(name.encode()))


def resolve_arch(name: str) -> int:
    """The AUDIT_ARCH_* token of a libseccomp arch name such as 'x86_64'; 0 when unknown to this libseccomp."""
    return int(lib().seccomp_arch_resolve_name(name.encode()))
