"""The OCI `linux.seccomp` object (runtime-spec config-linux.md#seccomp) turned into a libseccomp filter.

compile() validates the whole object and builds the filter; every error is one RuneError sentence naming the
config.json field. The runtime compiles in `rune create` (so a bad profile fails before any process exists) and the
container init calls Filter.load() right before execve.

Semantics follow runc, so that profiles written for Docker, Podman and Kubernetes behave the same:
- a syscall name libseccomp does not know at all is skipped (Filter.skipped), so newer profiles work with older
  libraries; a name known only on another architecture (socketcall on x86_64) is kept and libseccomp places it on
  the architectures that have it;
- a rule whose action (errno included) equals the default action is skipped, as libseccomp refuses it;
- the args of one rule are ANDed, except when one argument index appears more than once: then every arg becomes a
  rule of its own (ORed), as runc does;
- errnoRet and defaultErrnoRet default to EPERM for SCMP_ACT_ERRNO and SCMP_ACT_TRACE;
- libseccomp is told not to set no_new_privs (that is process.noNewPrivileges' business): load() needs
  no_new_privs already set or CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import os

from inclavare.errors import RuneError

from . import libseccomp as _ls

FIELD = "linux.seccomp"
EPERM = 1
MAX_ERRNO = 4095
MAX_U64 = (1 << 64) - 1

# OCI action name -> (libseccomp action, takes errnoRet)
ACTIONS: dict[str, tuple[int, bool]] = {
    "SCMP_ACT_KILL": (_ls.ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (_ls.ACT_KILL_PROCESS, False),
    "SCMP_ACT_KILL_THREAD": (_ls.ACT_KILL_THREAD, False),
    "SCMP_ACT_TRAP": (_ls.ACT_TRAP, False),
    "SCMP_ACT_ERRNO": (_ls.ACT_ERRNO, True),
    "SCMP_ACT_TRACE": (_ls.ACT_TRACE, True),
    "SCMP_ACT_ALLOW": (_ls.ACT_ALLOW, False),
    "SCMP_ACT_LOG": (_ls.ACT_LOG, False),
    "SCMP_ACT_NOTIFY": (_ls.ACT_NOTIFY, False),
}

OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": _ls.CMP_NE,
    "SCMP_CMP_LT": _ls.CMP_LT,
    "SCMP_CMP_LE": _ls.CMP_LE,
    "SCMP_CMP_EQ": _ls.CMP_EQ,
    "SCMP_CMP_GE": _ls.CMP_GE,
    "SCMP_CMP_GT": _ls.CMP_GT,
    "SCMP_CMP_MASKED_EQ": _ls.CMP_MASKED_EQ,
}

# OCI architecture name -> libseccomp architecture name
ARCHES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

# OCI flag -> libseccomp filter attribute
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": _ls.FLTATR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _ls.FLTATR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ls.FLTATR_CTL_SSB,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _ls.FLTATR_CTL_WAITKILL,
}


class Filter:
    """A compiled libseccomp filter context, ready to load in the calling process."""

    __slots__ = ("_ctx", "notify", "listener_path", "listener_metadata", "skipped", "rules")

    def __init__(self, ctx: int, notify: bool, listener_path: str, listener_metadata: str,
                 skipped: list[str], rules: int) -> None:
        self._ctx: int | None = ctx
        self.notify = notify  # the profile has SCMP_ACT_NOTIFY rules: load() returns a listener fd
        self.listener_path = listener_path  # "" when unset
        self.listener_metadata = listener_metadata
        self.skipped = skipped  # syscall names unknown to libseccomp, left out like runc does
        self.rules = rules  # rules handed to libseccomp

    def load(self) -> int | None:
        """seccomp_load into the calling thread; the notify listener fd if the filter has NOTIFY rules, else None.

        Everything the process does after this is filtered: call it last, right before execve. With NOTIFY rules,
        nothing answers a notification until the agent holds the fd, so the init must hand the fd on (sendmsg to
        the runtime, then close it) before it makes any notified syscall; a profile that notifies sendmsg, close or
        execve itself would hang the init (runc refuses NOTIFY on write for the same reason). libseccomp keeps
        one listener fd per process: close it in the init once it has been sent.
        """
        ctx = self._ctx
        if ctx is None:
            raise RuneError(f"{FIELD}: the seccomp filter was already released and cannot be loaded")
        lib = _ls.lib()
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            err = -rc
            if err == 13:  # EACCES
                raise RuneError(f"{FIELD}: loading the seccomp filter was refused (permission denied): the process "
                                "needs no_new_privs (process.noNewPrivileges) or CAP_SYS_ADMIN")
            raise RuneError(f"{FIELD}: loading the seccomp filter failed: {os.strerror(err)}")
        if not self.notify:
            return None
        fd = lib.seccomp_notify_fd(ctx)
        if fd < 0:
            raise RuneError(f"{FIELD}: the seccomp filter was loaded but its notify fd is missing: "
                            f"{os.strerror(-fd)}")
        return fd

    def export_bpf(self) -> bytes:
        """The BPF program libseccomp generates (struct sock_filter[]), for debugging and tests."""
        ctx = self._ctx
        if ctx is None:
            raise RuneError(f"{FIELD}: the seccomp filter was already released")
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = _ls.lib().seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise RuneError(f"{FIELD}: exporting the seccomp filter failed: {os.strerror(-rc)}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)

    def release(self) -> None:
        """seccomp_release; idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            _ls.lib().seccomp_release(ctx)

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing left to free into
            pass


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _uint(value: object, where: str, maximum: int, what: str) -> int:
    if type(value) is not int or value < 0 or value > maximum:
        shown = repr(value) if isinstance(value, int | float | str) else _type_name(value)
        raise RuneError(f"{where}: {what} must be an integer from 0 to {maximum}, not {shown}")
    return value


def _action(name: object, errno_ret: object, where: str, errno_where: str) -> int:
    if not isinstance(name, str):
        raise RuneError(f"{where}: must be a string such as 'SCMP_ACT_ERRNO', not {_type_name(name)}")
    entry = ACTIONS.get(name)
    if entry is None:
        raise RuneError(f"{where}: unknown action {name!r} (known: {', '.join(ACTIONS)})")
    value, takes_errno = entry
    if errno_ret is None:
        return value | EPERM if takes_errno else value
    if not takes_errno:
        raise RuneError(f"{errno_where}: {name} takes no errno; set it only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE")
    return value | _uint(errno_ret, errno_where, MAX_ERRNO, "an errno")


def _list(value: object, where: str, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RuneError(f"{where}: must be an array of {what}, not {_type_name(value)}")
    return value


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RuneError(f"{where}: must be a string, not {_type_name(value)}")
    return value


def _conditions(args: list, where: str) -> list[ctypes.Array]:
    """The args of one syscall entry as arrays of scmp_arg_cmp, one array per libseccomp rule."""
    conds: list[tuple[int, int, int, int]] = []
    seen = 0
    repeated = False
    for j, arg in enumerate(args):
        at = f"{where}[{j}]"
        if not isinstance(arg, dict):
            raise RuneError(f"{at}: must be an object with index, value, valueTwo and op, not {_type_name(arg)}")
        index = _uint(arg.get("index"), f"{at}.index", 5, "a syscall argument index")
        value = _uint(arg.get("value"), f"{at}.value", MAX_U64, "a 64-bit unsigned value")
        two = arg.get("valueTwo")
        two = 0 if two is None else _uint(two, f"{at}.valueTwo", MAX_U64, "a 64-bit unsigned value")
        op_name = arg.get("op")
        op = OPERATORS.get(op_name) if isinstance(op_name, str) else None
        if op is None:
            if not isinstance(op_name, str):
                raise RuneError(f"{at}.op: must be a string such as 'SCMP_CMP_EQ', not {_type_name(op_name)}")
            raise RuneError(f"{at}.op: unknown operator {op_name!r} (known: {', '.join(OPERATORS)})")
        if op != _ls.CMP_MASKED_EQ:
            two = 0  # only SCMP_CMP_MASKED_EQ uses valueTwo: (arg & value) == valueTwo
        if seen & (1 << index):
            repeated = True
        seen |= 1 << index
        conds.append((index, op, value, two))
    if not conds:
        return []
    if repeated:  # runc: one index compared twice means each comparison is a rule of its own
        groups = [[c] for c in conds]
    else:
        groups = [conds]
    arrays = []
    for group in groups:
        arr = (_ls.ScmpArgCmp * len(group))()
        for k, (index, op, a, b) in enumerate(group):
            cmp = arr[k]
            cmp.arg, cmp.op, cmp.datum_a, cmp.datum_b = index, op, a, b
        arrays.append(arr)
    return arrays


def compile(profile: dict) -> Filter:  # noqa: A001 - the name the runtime calls
    """Validate the OCI linux.seccomp object and build its libseccomp filter (not loaded yet)."""
    if not isinstance(profile, dict):
        raise RuneError(f"{FIELD}: must be an object, not {_type_name(profile)}")
    if profile.get("defaultAction") is None:
        raise RuneError(f"{FIELD}.defaultAction: is required, for example 'SCMP_ACT_ERRNO'")
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"),
                      f"{FIELD}.defaultAction", f"{FIELD}.defaultErrnoRet")
    if default == _ls.ACT_NOTIFY:
        raise RuneError(f"{FIELD}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action; "
                        "use it in syscalls[].action")

    archs = _list(profile.get("architectures"), f"{FIELD}.architectures", "architecture names")
    arch_names: list[str] = []
    for i, arch in enumerate(archs):
        if not isinstance(arch, str) or arch not in ARCHES:
            shown = repr(arch) if isinstance(arch, str) else _type_name(arch)
            raise RuneError(f"{FIELD}.architectures[{i}]: unknown architecture {shown} "
                            "(expected SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_AARCH64 ...)")
        arch_names.append(ARCHES[arch])

    flags = _list(profile.get("flags"), f"{FIELD}.flags", "flag names")
    for i, flag in enumerate(flags):
        if not isinstance(flag, str) or flag not in FLAGS:
            shown = repr(flag) if isinstance(flag, str) else _type_name(flag)
            raise RuneError(f"{FIELD}.flags[{i}]: unknown flag {shown} (known: {', '.join(FLAGS)})")

    listener_path = _string(profile.get("listenerPath"), f"{FIELD}.listenerPath")
    metadata = _string(profile.get("listenerMetadata"), f"{FIELD}.listenerMetadata")
    if metadata and not listener_path:
        raise RuneError(f"{FIELD}.listenerMetadata: is set but listenerPath is not; set both or neither")

    syscalls = _list(profile.get("syscalls"), f"{FIELD}.syscalls", "syscall rules")

    lib = _ls.lib()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuneError(f"{FIELD}.defaultAction: libseccomp {_ls.version_string()} refused "
                        f"{profile.get('defaultAction')} on this kernel")
    try:
        return _build(lib, ctx, profile, default, arch_names, flags, listener_path, metadata, syscalls)
    except BaseException:
        lib.seccomp_release(ctx)
        raise


def _build(lib: ctypes.CDLL, ctx: int, profile: dict, default: int, arch_names: list[str], flags: list,
           listener_path: str, metadata: str, syscalls: list) -> Filter:
    # The runtime owns no_new_privs (process.noNewPrivileges); report raw errnos instead of -ECANCELED.
    for attr, value in ((_ls.FLTATR_CTL_NNP, 0), (_ls.FLTATR_API_SYSRAWRC, 1)):
        rc = lib.seccomp_attr_set(ctx, attr, value)
        if rc < 0 and attr == _ls.FLTATR_CTL_NNP:
            raise RuneError(f"{FIELD}: libseccomp refused to leave no_new_privs alone: {os.strerror(-rc)}")

    for i, name in enumerate(arch_names):
        token = lib.seccomp_arch_resolve_name(name.encode())
        if not token:
            raise RuneError(f"{FIELD}.architectures[{i}]: {profile['architectures'][i]} is not supported by "
                            f"libseccomp {_ls.version_string()}")
        rc = lib.seccomp_arch_add(ctx, token)
        if rc == -33:  # -EDOM: libseccomp cannot mix byte orders in one filter
            raise RuneError(f"{FIELD}.architectures[{i}]: {profile['architectures'][i]} has another byte order than "
                            f"this machine and cannot be in the same filter; remove it")
        if rc < 0 and rc != -17:  # -EEXIST: the native architecture is always there
            raise RuneError(f"{FIELD}.architectures[{i}]: libseccomp could not add {profile['architectures'][i]}: "
                            f"{os.strerror(-rc)}")

    for i, flag in enumerate(flags):
        rc = lib.seccomp_attr_set(ctx, FLAGS[flag], 1)
        if rc < 0:
            raise RuneError(f"{FIELD}.flags[{i}]: {flag} is not supported by libseccomp "
                            f"{_ls.version_string()} on this kernel ({os.strerror(-rc)})")

    resolve = lib.seccomp_syscall_resolve_name
    rule_add = lib.seccomp_rule_add_array
    skipped: list[str] = []
    notify = False  # a NOTIFY rule reached libseccomp
    notify_in_config = False
    rules = 0
    for i, rule in enumerate(syscalls):
        where = f"{FIELD}.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise RuneError(f"{where}: must be an object with names and action, not {_type_name(rule)}")
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise RuneError(f"{where}.names: must be a non-empty array of syscall names, not "
                            f"{'an empty array' if isinstance(names, list) else _type_name(names)}")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not name or "\0" in name:
                shown = repr(name) if isinstance(name, str) else _type_name(name)
                raise RuneError(f"{where}.names[{j}]: must be a non-empty syscall name, not {shown}")
        if rule.get("action") is None:
            raise RuneError(f"{where}.action: is required, for example 'SCMP_ACT_ALLOW'")
        action = _action(rule.get("action"), rule.get("errnoRet"), f"{where}.action", f"{where}.errnoRet")
        arrays = _conditions(_list(rule.get("args"), f"{where}.args", "argument comparisons"), f"{where}.args")
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        if action == _ls.ACT_NOTIFY:
            notify_in_config = True
        for name in names:
            nr = resolve(name.encode())
            if nr == _ls.NR_SCMP_ERROR:
                skipped.append(name)
                continue
            if arrays:
                for arr in arrays:
                    rc = rule_add(ctx, action, nr, len(arr), arr)
                    if rc < 0:
                        break
                    rules += 1
            else:
                rc = rule_add(ctx, action, nr, 0, None)
                rules += 1
            if rc < 0:
                raise RuneError(f"{where}: libseccomp refused the rule for syscall {name!r}: {os.strerror(-rc)}")
            if action == _ls.ACT_NOTIFY:
                notify = True

    if notify_in_config and not listener_path:
        raise RuneError(f"{FIELD}.listenerPath: must be set when a rule uses SCMP_ACT_NOTIFY, "
                        "so that a seccomp agent receives the notify fd")
    return Filter(ctx, notify, listener_path, metadata, skipped, rules)


def supported_actions() -> list[str]:
    """The OCI action names this libseccomp and kernel can apply (for `rune features`)."""
    try:
        level = _ls.api_level()
    except RuneError:
        return []
    out = []
    for name in ACTIONS:
        if name in ("SCMP_ACT_LOG", "SCMP_ACT_KILL_PROCESS") and level < 3:
            continue
        if name == "SCMP_ACT_NOTIFY" and level < 5:
            continue
        out.append(name)
    return out


def supported_operators() -> list[str]:
    return list(OPERATORS)


def supported_archs() -> list[str]:
    """The OCI architecture names this libseccomp knows."""
    try:
        return [oci for oci, name in ARCHES.items() if _ls.resolve_arch(name)]
    except RuneError:
        return []


def supported_flags() -> list[str]:
    """The OCI flags this libseccomp and kernel accept, found by setting each on a scratch filter."""
    try:
        lib = _ls.lib()
    except RuneError:
        return []
    ctx = lib.seccomp_init(_ls.ACT_ALLOW)
    if not ctx:
        return []
    try:
        return [flag for flag, attr in FLAGS.items() if lib.seccomp_attr_set(ctx, attr, 1) == 0]
    finally:
        lib.seccomp_release(ctx)
