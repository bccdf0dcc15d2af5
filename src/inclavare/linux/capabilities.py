"""Linux capabilities by name, and applying the five OCI capability sets to the current process."""

from __future__ import annotations

from inclavare.linux import syscalls

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {name: i for i, name in enumerate(NAMES)}
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def mask(names: list[str]) -> int:
    m = 0
    for n in names:
        m |= 1 << NUMBERS[n]
    return m


class Unavailable(OSError):
    """capset(2) refused capabilities that this process does not hold itself (a host that withholds them from
    rune, such as CAP_SYS_RESOURCE here): `names` are the ones asked for and missing."""

    def __init__(self, errno: int, strerror: str, names: list[str]) -> None:
        super().__init__(errno, strerror)
        self.names = names


def setgroups_denied() -> bool:
    """True in a user namespace whose setgroups(2) was denied (by a rootless runtime, as the kernel requires)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def names_of(m: int) -> list[str]:
    return [NAMES[n] if n < len(NAMES) else f"capability {n}" for n in range(64) if m & (1 << n)]


def apply(caps: dict | None, uid: int, gid: int, additional_gids: list[int] | None) -> None:
    """Drop the bounding set, switch to uid/gid keeping capabilities, then set the other four sets.

    The order is the one the kernel requires: dropping from the bounding set needs CAP_SETPCAP, so it comes first;
    setresuid would clear the permitted set without PR_SET_KEEPCAPS; ambient capabilities must be in both the
    permitted and the inheritable set before they are raised.
    """
    caps = caps or {}
    top = last_cap()
    # the bounding set is always cut to what the config lists (nothing when it lists none), as runc does: a full
    # bounding set would give a root process every capability back at execve
    keep = mask(caps.get("bounding", ()))
    for n in range(top + 1):
        if not keep & (1 << n):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, n)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    import os

    if additional_gids or not setgroups_denied():
        os.setgroups(additional_gids or [])  # denied in a rootless user namespace: its process keeps its groups
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
    valid = (1 << (top + 1)) - 1
    permitted = mask(caps.get("permitted", ())) & valid
    inheritable = mask(caps.get("inheritable", ())) & valid
    effective = mask(caps.get("effective", ())) & valid
    try:
        syscalls.capset(effective, permitted, inheritable)
    except OSError as e:
        held = syscalls.capget()[1]
        missing = (effective | permitted) & ~held
        if e.errno == 1 and missing:  # EPERM: more than this process holds (the kernel never adds to permitted)
            raise Unavailable(e.errno, os.strerror(e.errno), names_of(missing)) from None
        raise
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    # The kernel raises an ambient capability only if it is permitted and inheritable; like runc, others are
    # left out rather than failing the container (runc's own default spec lists ambient caps without inheritable).
    for n in caps.get("ambient", ()):
        bit = 1 << NUMBERS[n]
        if NUMBERS[n] <= top and permitted & inheritable & bit:
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, NUMBERS[n])
