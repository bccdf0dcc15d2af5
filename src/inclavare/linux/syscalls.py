"""Thin wrappers over the system calls Python's os module lacks (libc through the _ctypes extension).

Each wrapper raises OSError with errno set, like os functions, so callers can name the path and the call in their
error message. This module is on the hot path of every container start: it uses the `_ctypes` extension directly
and defines the four C types it needs, because `import ctypes` costs about 2 ms more (the package builds dozens of
types at import). Modules that need structures or callbacks (seccomp, eBPF) import ctypes themselves.
"""

from __future__ import annotations

import _ctypes
import os


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


class _c_char(_ctypes._SimpleCData):
    _type_ = "c"


class c_void_p(_ctypes._SimpleCData):
    _type_ = "P"


class c_uint64(_ctypes._SimpleCData):
    _type_ = "Q"


c_size_t = c_ulong  # LP64
byref = _ctypes.byref
addressof = _ctypes.addressof
POINTER = _ctypes.POINTER
_buffer_types: dict[int, type] = {}


def buffer(size: int, init: bytes = b"") -> _ctypes.Array:
    """A writable char[size] (ctypes.create_string_buffer without the ctypes package), holding `init` first;
    .raw gives its bytes."""
    t = _buffer_types.get(size)
    if t is None:
        t = _buffer_types[size] = type(f"char_{size}", (_ctypes.Array,), {"_type_": _c_char, "_length_": size})
    b = t()
    if init:
        b.raw = init  # the first len(init) bytes; the rest stay zero
    return b


class _CapBuffer(_ctypes.Array):
    """struct __user_cap_data_struct[2], as raw bytes."""

    _type_ = _c_char
    _length_ = 24


class Library:
    """A shared library, dlopen'ed RTLD_NOW (None: the running program and its libc); OSError when it cannot be."""

    def __init__(self, path: str | None = None) -> None:
        self._handle = _ctypes.dlopen(path, 2)

    def function(self, name: str, argtypes: tuple | None, restype: type = c_int) -> _Function:
        """The C function `name` (AttributeError when the library has none), errno kept for get_errno."""
        f = _Function((name, self))
        f.restype = restype
        if argtypes is not None:
            f.argtypes = argtypes
        return f


_Libc = Library


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


_libc = _Libc()


def _fn(name: str, argtypes: tuple | None, restype: type = c_int) -> _Function:
    return _libc.function(name, argtypes, restype)


_mount = _fn("mount", (c_char_p, c_char_p, c_char_p, c_ulong, c_char_p))
_umount2 = _fn("umount2", (c_char_p, c_int))
_unshare = _fn("unshare", (c_int,))
_setns = _fn("setns", (c_int, c_int))
_prctl = _fn("prctl", (c_int, c_ulong, c_ulong, c_ulong, c_ulong))
_sethostname = _fn("sethostname", (c_char_p, c_ulong))
_setdomainname = _fn("setdomainname", (c_char_p, c_ulong))
_personality = _fn("personality", (c_ulong,))
_syscall = _fn("syscall", None, c_long)
get_errno = _ctypes.get_errno


# clone(2) / unshare(2) namespace flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
MNT_DETACH = 0x2

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# syscall numbers (x86_64) for calls glibc 2.36 has no wrapper for
_NR = {"pidfd_send_signal": 424, "pivot_root": 155, "capset": 126, "capget": 125, "keyctl": 250, "prlimit64": 302, "gettid": 186,
       "clone3": 435, "close_range": 436, "openat2": 437, "fstatfs": 138, "fcntl": 72, "fsopen": 430, "fsconfig": 431,
       "fsmount": 432}

# resource numbers of setrlimit(2) / prlimit(2), by their OCI names
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4, "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip

def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret == -1:
        e = get_errno()
        if path is None:
            raise OSError(e, f"{what}: {os.strerror(e)}")
        raise OSError(e, f"{what}: {os.strerror(e)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(c_long(_NR["pivot_root"]), _b(new_root), _b(put_old)), "pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_prctl(option, arg2, arg3, arg4, arg5), "prctl")


def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
    """fcntl(2) with an integer argument (the fcntl module is one more import on the hot path)."""
    return _check(_syscall(c_long(_NR["fcntl"]), c_int(fd), c_int(cmd), c_ulong(arg)), "fcntl")


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    """Close every fd from first to last (Linux 5.9+); OSError(ENOSYS) on older kernels."""
    _check(_syscall(c_long(_NR["close_range"]), c_ulong(first), c_ulong(last), c_ulong(0)), "close_range")


RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
PROC_SUPER_MAGIC = 0x9FA0


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2) (Linux 5.6+): open path under dirfd with RESOLVE_* restrictions on how it is reached."""
    how = flags.to_bytes(8, "little") + mode.to_bytes(8, "little") + resolve.to_bytes(8, "little")
    return _check(_syscall(c_long(_NR["openat2"]), c_int(dirfd), _b(path), how, c_ulong(len(how))), "openat2", path)


# the new mount API (Linux 5.2): a filesystem context, configured, then a detached mount of it
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
OVERLAYFS_SUPER_MAGIC = 0x794C7630


def fsopen(fsname: str) -> int:
    """A close-on-exec filesystem context of type `fsname`."""
    return _check(_syscall(c_long(_NR["fsopen"]), _b(fsname), c_ulong(FSOPEN_CLOEXEC)), f"fsopen {fsname}")


def fsconfig_string(fd: int, key: str, value: str) -> None:
    _check(_syscall(c_long(_NR["fsconfig"]), c_int(fd), c_ulong(FSCONFIG_SET_STRING), _b(key), _b(value), c_int(0)),
           f"fsconfig {key}={value}")


def fsconfig_create(fd: int) -> None:
    _check(_syscall(c_long(_NR["fsconfig"]), c_int(fd), c_ulong(FSCONFIG_CMD_CREATE), None, None, c_int(0)),
           "fsconfig create")


def fsmount(fd: int, attrs: int) -> int:
    """A close-on-exec fd of a detached mount of the filesystem context `fd`, with MOUNT_ATTR_* `attrs`."""
    return _check(_syscall(c_long(_NR["fsmount"]), c_int(fd), c_ulong(FSMOUNT_CLOEXEC), c_ulong(attrs)), "fsmount")


def fstatfs_type(fd: int) -> int:
    """The f_type (filesystem magic) of the filesystem holding fd."""
    buf = (_c_char * 120)()
    _check(_syscall(c_long(_NR["fstatfs"]), c_int(fd), buf), "fstatfs")
    return int.from_bytes(bytes(buf)[:8], "little")


SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


_sync_file_range: list = []


def sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
    """sync_file_range(2): write back the dirty pages of `fd`'s range (nbytes 0: to its end), as `flags` say."""
    if not _sync_file_range:
        _sync_file_range.append(_fn("sync_file_range", (c_int, c_long, c_long, c_int)))
    _check(_sync_file_range[0](fd, offset, nbytes, flags), "sync_file_range")


def mmap(fd: int, length: int, prot: int, flags: int, offset: int = 0) -> int:
    """The address of a new mapping of `length` bytes of `fd` from `offset` (mmap(2) with no address hint)."""
    addr = _fn("mmap", (c_void_p, c_size_t, c_int, c_int, c_int, c_long), c_void_p)(None, length, prot, flags, fd,
                                                                                   offset)
    if addr is None or addr == (1 << 64) - 1:  # MAP_FAILED
        err = get_errno()
        raise OSError(err, os.strerror(err))
    return addr


STATX_MNT_ID_UNIQUE = 0x4000  # Linux 6.8
_statx: list = []


def mount_id_unique(fd: int) -> int | None:
    """The unique id of the mount holding the open file `fd` (statx STATX_MNT_ID_UNIQUE: never reused while the
    system runs), or None where the kernel does not give it."""
    if not _statx:
        _statx.append(_fn("statx", (c_int, c_char_p, c_int, c_int, c_void_p)))
    buf = (_c_char * 256)()
    if _statx[0](fd, b"", 0x1000 | 0x100, STATX_MNT_ID_UNIQUE, buf) != 0:  # AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
        return None
    raw = bytes(buf)
    if not int.from_bytes(raw[0:4], "little") & STATX_MNT_ID_UNIQUE:  # stx_mask
        return None
    return int.from_bytes(raw[144:152], "little")  # stx_mnt_id


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """prlimit64 on this process: unsigned 64-bit limits (2**64-1 is RLIM_INFINITY), every resource the kernel has."""
    new = (soft & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") + (hard & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    _check(_syscall(c_long(_NR["prlimit64"]), c_long(0), c_long(resource), new, None), "prlimit")


def getrlimit(resource: int) -> tuple[int, int]:
    """(soft, hard) of this process, unsigned (2**64-1 is RLIM_INFINITY)."""
    old = _CapBuffer()  # 24 bytes; prlimit64 writes 16
    _check(_syscall(c_long(_NR["prlimit64"]), c_long(0), c_long(resource), None, old), "prlimit")
    raw = old.raw
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")


_CLONE_CHILD_SETTID = 0x01000000
_CLONE_INTO_CGROUP = 1 << 33
_SIGCHLD = 17
_TID_OFFSET = 0x2D0  # offsetof(struct pthread, tid) in glibc 2.34+ on x86-64; checked before use
_pthread_self = _fn("pthread_self", (), c_ulong)


def can_fork_into_cgroup() -> bool:
    """True when glibc's thread descriptor has the thread id where fork_into_cgroup expects it."""
    return c_int.from_address(_pthread_self() + _TID_OFFSET).value == _syscall(c_long(_NR["gettid"]))


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork(2) as clone3(CLONE_INTO_CGROUP): the child starts in the cgroup2 directory cgroup_fd.

    Moving a task through cgroup.procs takes the cgroup write lock, whose first writer waits for an RCU grace
    period (5-17 ms measured here); a child born in its cgroup takes the read side only. Returns like os.fork.
    The kernel writes the child's thread id into glibc's thread descriptor (CLONE_CHILD_SETTID), as glibc's own
    fork does; the offset is checked against gettid() first, and OSError(ENOSYS) tells the caller to os.fork
    instead. The child skips CPython's after-fork bookkeeping, which a single-threaded process that goes on to
    execve does not need (os.fork's child would reinitialise thread and import-lock state it does not use).
    """
    if not can_fork_into_cgroup():
        raise OSError(38, "clone3 into a cgroup: unknown thread descriptor layout")
    tcb = _pthread_self()
    args = b"".join(v.to_bytes(8, "little") for v in (
        _CLONE_CHILD_SETTID | _CLONE_INTO_CGROUP, 0, tcb + _TID_OFFSET, 0, _SIGCHLD, 0, 0, 0, 0, 0, cgroup_fd))
    return _check(_syscall(c_long(_NR["clone3"]), args, c_long(len(args))), "clone3")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_setdomainname(b, len(b)), "setdomainname")


def personality(persona: int) -> None:
    _check(_personality(persona), "personality")


def join_session_keyring(name: str | None = None) -> None:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring, as runc gives each container."""
    _check(_syscall(c_long(_NR["keyctl"]), c_long(1), _b(name), c_long(0), c_long(0), c_long(0)), "keyctl")


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _cap_header(pid: int) -> bytes:
    return _LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + pid.to_bytes(4, "little", signed=True)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    data = b""
    for shift in (0, 32):
        for m in (effective, permitted, inheritable):
            data += ((m >> shift) & 0xFFFFFFFF).to_bytes(4, "little")
    _check(_syscall(c_long(_NR["capset"]), _cap_header(0), data), "capset")


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of a thread, as 64-bit masks."""
    buf = _CapBuffer()
    _check(_syscall(c_long(_NR["capget"]), _cap_header(pid), buf), "capget")
    raw = buf.raw
    words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, 24, 4)]
    return words[0] | words[3] << 32, words[1] | words[4] << 32, words[2] | words[5] << 32


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal the process a pidfd refers to: never another one that reused its pid (Linux 5.1)."""
    _check(_syscall(c_long(_NR["pidfd_send_signal"]), c_int(pidfd), c_int(sig), None, c_ulong(0)), "pidfd_send_signal")

