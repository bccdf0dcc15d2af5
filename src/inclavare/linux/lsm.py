"""Linux security modules as runc applies them to a container's process: an AppArmor profile and an SELinux label
written to the process's exec attributes (/proc/<pid>/task/<tid>/attr/...) right before execve, so that the program
starts confined; the SELinux mount label as the `context=` option of the container's mounts.

The attributes are written through the procfs mounted in the container, checked to be a procfs and reached with
openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) from its root: no path
component can be a symlink or a mount that the container placed there (the attack runc's CVE-2019-16884 and
CVE-2019-19921 fixes close). /proc/thread-self is such a symlink, so the task's own directory is named by its ids.
"""

from __future__ import annotations

import os

from inclavare.linux import syscalls

# where the host says its LSMs are on (module-level so that tests can point them elsewhere)
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"

_RESOLVE = (syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
            | syscalls.RESOLVE_NO_XDEV)  # fmt: skip


def apparmor_enabled() -> bool:
    try:
        with open(APPARMOR_ENABLED) as f:
            return f.read().startswith("Y")
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists(SELINUX_ENFORCE)


class AttrError(OSError):
    """A write of an exec attribute failed: `attr` is "apparmor" or "selinux", `value` what was written."""

    def __init__(self, errno: int, attr: str, value: str) -> None:
        super().__init__(errno, os.strerror(errno))
        self.attr = attr
        self.value = value


def exec_attrs(apparmor_profile: str | None, selinux_label: str | None) -> list[tuple[str, tuple[str, ...], bytes]]:
    """What to write before execve: (LSM, candidate attribute files under the task's attr/, bytes), as runc writes
    them: AppArmor "exec PROFILE" to attr/apparmor/exec (Linux 5.8+, where LSMs stack) or else the shared
    attr/exec; the SELinux label to attr/exec."""
    out = []
    if apparmor_profile:
        out.append(("apparmor", ("apparmor/exec", "exec"), b"exec " + apparmor_profile.encode()))
    if selinux_label:
        out.append(("selinux", ("exec",), selinux_label.encode()))
    return out


def open_proc(path: str = "/proc") -> int:
    """An O_PATH fd of the procfs at path, refused if anything else is mounted (or linked) there."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if syscalls.fstatfs_type(fd) != syscalls.PROC_SUPER_MAGIC:
            raise OSError(22, f"{path} is not a procfs")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_exec_attrs(proc_fd: int, writes: list[tuple[str, tuple[str, ...], bytes]], pid: int | None = None,
                     tid: int | None = None) -> None:
    """Write each attribute of this task (pid and tid as the container's procfs numbers them; the init and rune's
    exec process are single-threaded, so the tid is the pid). Raises AttrError naming the LSM."""
    pid = os.getpid() if pid is None else pid
    tid = pid if tid is None else tid
    task = f"{pid}/task/{tid}/attr/"
    for lsm, candidates, value in writes:
        fd = -1
        for i, name in enumerate(candidates):
            try:
                fd = syscalls.openat2(proc_fd, task + name, os.O_WRONLY | os.O_CLOEXEC, _RESOLVE)
                break
            except OSError as e:
                if e.errno != 2 or i == len(candidates) - 1:  # ENOENT: an older kernel without the LSM's own dir
                    raise AttrError(e.errno or 5, lsm, value.decode(errors="replace")) from None
        try:
            os.write(fd, value)
        except OSError as e:
            raise AttrError(e.errno or 5, lsm, value.decode(errors="replace")) from None
        finally:
            os.close(fd)


def format_mount_label(data: str, label: str | None) -> str:
    """A mount's data with the SELinux context option added (runc's label.FormatMountLabel)."""
    if not label:
        return data
    option = f'context="{label}"'
    return f"{data},{option}" if data else option


# the mount types runc labels with linux.mountLabel: proc, sysfs, cgroups and bind mounts take no context= (a bind
# mount keeps its source's labels; runc labels mqueue's directory after mounting it instead)
UNLABELLED_TYPES = ("proc", "sysfs", "cgroup", "cgroup2", "bind", "mqueue")


def why(e: AttrError, field: str) -> str:
    """The sentence for a failed attribute write."""
    if e.attr == "apparmor":
        profile = e.value[5:]
        if e.errno == 2:
            return (f"{field}: the AppArmor profile {profile!r} is not loaded on this host (load it with "
                    f"apparmor_parser, or name a loaded one)")
        return f"{field}: cannot apply the AppArmor profile {profile!r}: {e.strerror}"
    if e.errno == 22:
        return f"{field}: {e.value!r} is not a valid SELinux label on this host (Invalid argument)"
    return f"{field}: cannot apply the SELinux label {e.value!r}: {e.strerror}"
