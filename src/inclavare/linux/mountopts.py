"""mount(8)-style option strings to mount(2) flags, propagation flags and filesystem data."""

from __future__ import annotations

from inclavare.linux import syscalls as s

# option -> (clear, flag); clear=True means the option removes the flag
FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, s.MS_SYNCHRONOUS), "atime": (True, s.MS_NOATIME), "bind": (False, s.MS_BIND),
    "defaults": (False, 0), "dev": (True, s.MS_NODEV), "diratime": (True, s.MS_NODIRATIME),
    "dirsync": (False, s.MS_DIRSYNC), "exec": (True, s.MS_NOEXEC), "iversion": (False, s.MS_I_VERSION),
    "lazytime": (False, s.MS_LAZYTIME), "loud": (True, s.MS_SILENT), "mand": (False, s.MS_MANDLOCK),
    "noatime": (False, s.MS_NOATIME), "nodev": (False, s.MS_NODEV), "nodiratime": (False, s.MS_NODIRATIME),
    "noexec": (False, s.MS_NOEXEC), "noiversion": (True, s.MS_I_VERSION), "nolazytime": (True, s.MS_LAZYTIME),
    "nomand": (True, s.MS_MANDLOCK), "norelatime": (True, s.MS_RELATIME), "nostrictatime": (True, s.MS_STRICTATIME),
    "nosuid": (False, s.MS_NOSUID), "nosymfollow": (False, s.MS_NOSYMFOLLOW), "rbind": (False, s.MS_BIND | s.MS_REC),
    "relatime": (False, s.MS_RELATIME), "remount": (False, s.MS_REMOUNT), "ro": (False, s.MS_RDONLY),
    "rw": (True, s.MS_RDONLY), "silent": (False, s.MS_SILENT), "strictatime": (False, s.MS_STRICTATIME),
    "suid": (True, s.MS_NOSUID), "sync": (False, s.MS_SYNCHRONOUS),
}  # fmt: skip

PROPAGATION = {
    "private": s.MS_PRIVATE, "rprivate": s.MS_PRIVATE | s.MS_REC, "shared": s.MS_SHARED,
    "rshared": s.MS_SHARED | s.MS_REC, "slave": s.MS_SLAVE, "rslave": s.MS_SLAVE | s.MS_REC,
    "unbindable": s.MS_UNBINDABLE, "runbindable": s.MS_UNBINDABLE | s.MS_REC,
}  # fmt: skip

# Recursive mount attributes (runtime-spec 1.1, mount_setattr(2)); recognised so they get a clear error.
RECURSIVE = ("rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnodiratime", "rdiratime",
             "rrelatime", "rnorelatime", "rnoatime", "ratime", "rstrictatime", "rnostrictatime", "rnosymfollow",
             "rsymfollow")  # fmt: skip

# Options of the runtime itself rather than of mount(2).
RUNTIME_ONLY = ("tmpcopyup", "idmap", "ridmap")


def parse(options: list[str]) -> tuple[int, list[int], str, list[str]]:
    """(flags, propagation flags, data, runtime-only options) of an OCI mount's options list."""
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    extra: list[str] = []
    for o in options:
        f = FLAGS.get(o)
        if f is not None:
            if f[0]:
                flags &= ~f[1]
            else:
                flags |= f[1]
            continue
        p = PROPAGATION.get(o)
        if p is not None:
            prop.append(p)
        elif o in RUNTIME_ONLY or o in RECURSIVE:
            extra.append(o)
        else:
            data.append(o)
    return flags, prop, ",".join(data), extra


# statvfs f_flag bits -> mount flags, for the flags a bind remount must keep (locked in user namespaces)
STATVFS_TO_MS = ((1, s.MS_RDONLY), (2, s.MS_NOSUID), (4, s.MS_NODEV), (8, s.MS_NOEXEC), (1024, s.MS_NOATIME),
                 (2048, s.MS_NODIRATIME), (4096, s.MS_RELATIME))  # fmt: skip


def locked_flags(path: str) -> int:
    import os

    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in STATVFS_TO_MS:
        if f & st:
            out |= ms
    return out
