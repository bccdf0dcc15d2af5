"""config.json of an OCI bundle (runtime-spec 1.0 to 1.2): loaded and checked field by field.

The parsed config stays a plain dict (it is also stored in state.json); `load` checks every field the runtime
applies and raises RuneError with one sentence naming the file and the field, e.g.
"/b/config.json: linux.namespaces[1].type: unknown namespace type "foo"". Unknown properties are ignored, as the
spec requires.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError
from inclavare.linux.syscalls import RLIMITS as RLIMIT_NUMBERS

NAMESPACES = {
    "pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000, "ipc": 0x08000000, "uts": 0x04000000,
    "user": 0x10000000, "cgroup": 0x02000000, "time": 0x00000080,
}  # fmt: skip
NS_PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
                 "cgroup": "cgroup", "time": "time"}  # fmt: skip
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable")
DEVICE_TYPES = ("c", "b", "u", "p")
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE")
INT64_MAX = (1 << 63) - 1


def _jtype(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


class Checker:
    """Field checks that raise RuneError naming config.json and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> RuneError:
        return RuneError(f"{self.source}: {field}: {problem}")

    def typed(self, v: object, t: type | tuple, field: str, what: str) -> None:
        if not isinstance(v, t) or (isinstance(v, bool) and bool not in (t if isinstance(t, tuple) else (t,))):
            raise self.fail(field, f"must be {what}, got {_jtype(v)}")

    def obj(self, d: dict, key: str, field: str) -> dict | None:
        v = d.get(key)
        if v is not None:
            self.typed(v, dict, field, "an object")
        return v

    def string(self, d: dict, key: str, field: str, required: bool = False) -> str | None:
        v = d.get(key)
        if v is None:
            if required:
                raise self.fail(field, "is required")
            return None
        self.typed(v, str, field, "a string")
        return v

    def boolean(self, d: dict, key: str, field: str) -> None:
        v = d.get(key)
        if v is not None:
            self.typed(v, bool, field, "a boolean")

    def integer(self, d: dict, key: str, field: str, required: bool = False, lo: int = -INT64_MAX - 1,
                hi: int = (1 << 64) - 1) -> int | None:
        v = d.get(key)
        if v is None:
            if required:
                raise self.fail(field, "is required")
            return None
        self.typed(v, int, field, "an integer")
        if not lo <= v <= hi:
            raise self.fail(field, f"{v} is out of range ({lo} to {hi})")
        return v

    def array(self, d: dict, key: str, field: str) -> list:
        v = d.get(key)
        if v is None:
            return []
        self.typed(v, list, field, "an array")
        return v

    def strings(self, d: dict, key: str, field: str) -> list[str]:
        v = self.array(d, key, field)
        for i, s in enumerate(v):
            self.typed(s, str, f"{field}[{i}]", "a string")
        return v

    def abspath(self, v: str, field: str) -> None:
        if not v.startswith("/"):
            raise self.fail(field, f"{v!r} must be an absolute path")


def load(bundle: str) -> tuple[dict, str]:
    """(config, absolute rootfs path) of the bundle directory; RuneError naming what is wrong."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise RuneError(f"bundle {bundle}: no such directory") from None
        raise RuneError(f"{path}: no such file: the bundle has no config.json") from None
    except OSError as e:
        raise RuneError(f"{path}: cannot read: {e.strerror}") from None
    from inclavare.oci import jsonlite

    try:
        config = jsonlite.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RuneError(f"{path}: not valid JSON: {e}") from None
    c = Checker(path)
    if not isinstance(config, dict):
        raise RuneError(f"{path}: must hold a JSON object, got {_jtype(config)}")
    rootfs = check(config, c, bundle)
    return config, rootfs


def check(config: dict, c: Checker, bundle: str) -> str:
    version = c.string(config, "ociVersion", "ociVersion", required=True)
    if not version.startswith("1."):
        raise c.fail("ociVersion", f"{version!r} is not supported (this runtime implements runtime-spec 1.0 to 1.2)")
    root = c.obj(config, "root", "root")
    if root is None:
        raise c.fail("root", "is required")
    rpath = c.string(root, "path", "root.path", required=True)
    c.boolean(root, "readonly", "root.readonly")
    rootfs = os.path.normpath(os.path.join(bundle, rpath))
    if not os.path.isdir(rootfs):
        what = "is not a directory" if os.path.exists(rootfs) else "does not exist"
        raise c.fail("root.path", f"{rootfs} {what}")
    for i, m in enumerate(c.array(config, "mounts", "mounts")):
        _check_mount(c, m, f"mounts[{i}]")
    process = c.obj(config, "process", "process")
    if process is not None:
        check_process(c, process, "process")
    c.string(config, "hostname", "hostname")
    c.string(config, "domainname", "domainname")
    hooks = c.obj(config, "hooks", "hooks")
    if hooks:
        for kind in HOOK_KINDS:
            for i, h in enumerate(c.array(hooks, kind, f"hooks.{kind}")):
                _check_hook(c, h, f"hooks.{kind}[{i}]")
    annotations = c.obj(config, "annotations", "annotations")
    if annotations:
        for k, v in annotations.items():
            c.typed(v, str, f"annotations.{k}", "a string")
    linux = c.obj(config, "linux", "linux")
    if linux is not None:
        _check_linux(c, linux, config)
    return rootfs


def _check_mount(c: Checker, m: object, f: str) -> None:
    c.typed(m, dict, f, "an object")
    dest = c.string(m, "destination", f + ".destination", required=True)
    if not dest:
        raise c.fail(f + ".destination", "must not be empty")
    c.string(m, "source", f + ".source")
    c.string(m, "type", f + ".type")
    opts = c.strings(m, "options", f + ".options")
    from inclavare.linux import mountopts

    for o in opts:
        if o in mountopts.RECURSIVE or o in ("idmap", "ridmap"):
            raise c.fail(f + ".options", f"option {o!r} is not supported by this runtime")
    if m.get("uidMappings") or m.get("gidMappings"):
        raise c.fail(f, "idmapped mounts (uidMappings, gidMappings) are not supported by this runtime")
    t = m.get("type") or ""
    if (t == "bind" or "bind" in opts or "rbind" in opts) and not m.get("source"):
        raise c.fail(f + ".source", "is required for a bind mount")


def _check_hook(c: Checker, h: object, f: str) -> None:
    c.typed(h, dict, f, "an object")
    p = c.string(h, "path", f + ".path", required=True)
    c.abspath(p, f + ".path")
    c.strings(h, "args", f + ".args")
    c.strings(h, "env", f + ".env")
    t = c.integer(h, "timeout", f + ".timeout")
    if t is not None and t <= 0:
        raise c.fail(f + ".timeout", f"must be greater than zero, got {t}")


def check_process(c: Checker, p: dict, f: str) -> None:
    """The process object: also used for `rune exec --process`."""
    args = c.strings(p, "args", f + ".args")
    if not args and not p.get("commandLine"):
        raise c.fail(f + ".args", "must name the program to run")
    for i, e in enumerate(c.strings(p, "env", f + ".env")):
        if "=" not in e:
            raise c.fail(f"{f}.env[{i}]", f"{e!r} is not of the form NAME=VALUE")
    cwd = c.string(p, "cwd", f + ".cwd")
    if cwd is not None and cwd != "":
        c.abspath(cwd, f + ".cwd")
    c.boolean(p, "terminal", f + ".terminal")
    c.boolean(p, "noNewPrivileges", f + ".noNewPrivileges")
    cs = c.obj(p, "consoleSize", f + ".consoleSize")
    if cs:
        c.integer(cs, "height", f + ".consoleSize.height", lo=0, hi=65535)
        c.integer(cs, "width", f + ".consoleSize.width", lo=0, hi=65535)
    user = c.obj(p, "user", f + ".user")
    if user:
        c.integer(user, "uid", f + ".user.uid", lo=0, hi=(1 << 32) - 2)
        c.integer(user, "gid", f + ".user.gid", lo=0, hi=(1 << 32) - 2)
        c.integer(user, "umask", f + ".user.umask", lo=0, hi=0o777)
        for i, g in enumerate(c.array(user, "additionalGids", f + ".user.additionalGids")):
            c.integer({"g": g}, "g", f"{f}.user.additionalGids[{i}]", lo=0, hi=(1 << 32) - 2)
    caps = c.obj(p, "capabilities", f + ".capabilities")
    if caps:
        from inclavare.linux.capabilities import NUMBERS, SETS

        for s in SETS:
            for i, name in enumerate(c.strings(caps, s, f"{f}.capabilities.{s}")):
                if name not in NUMBERS:
                    raise c.fail(f"{f}.capabilities.{s}[{i}]", f"unknown capability {name!r}")
    seen = set()
    for i, r in enumerate(c.array(p, "rlimits", f + ".rlimits")):
        rf = f"{f}.rlimits[{i}]"
        c.typed(r, dict, rf, "an object")
        t = c.string(r, "type", rf + ".type", required=True)
        if t not in RLIMIT_NUMBERS:
            raise c.fail(rf + ".type", f"unknown resource limit {t!r}")
        if t in seen:
            raise c.fail(rf + ".type", f"{t} is given twice")
        seen.add(t)
        soft = c.integer(r, "soft", rf + ".soft", required=True, lo=0)
        hard = c.integer(r, "hard", rf + ".hard", required=True, lo=0)
        if soft > hard:
            raise c.fail(rf, f"soft limit {soft} is above the hard limit {hard}")
    c.integer(p, "oomScoreAdj", f + ".oomScoreAdj", lo=-1000, hi=1000)
    if c.string(p, "apparmorProfile", f + ".apparmorProfile"):
        raise c.fail(f + ".apparmorProfile", _lsm_refusal("AppArmor", apparmor_enabled(), "apply AppArmor profiles",
                                                          "run the process unconfined"))
    if c.string(p, "selinuxLabel", f + ".selinuxLabel"):
        raise c.fail(f + ".selinuxLabel", _lsm_refusal("SELinux", selinux_enabled(), "apply SELinux labels",
                                                       "run the process unconfined"))
    io = c.obj(p, "ioPriority", f + ".ioPriority")
    if io:
        cls = c.string(io, "class", f + ".ioPriority.class", required=True)
        if cls not in IOPRIO_CLASSES:
            raise c.fail(f + ".ioPriority.class", f"unknown class {cls!r}")
        c.integer(io, "priority", f + ".ioPriority.priority", lo=0, hi=7)
    sched = c.obj(p, "scheduler", f + ".scheduler")
    if sched:
        pol = c.string(sched, "policy", f + ".scheduler.policy", required=True)
        if pol not in SCHED_POLICIES:
            raise c.fail(f + ".scheduler.policy", f"unknown policy {pol!r}")
        if pol in ("SCHED_ISO", "SCHED_DEADLINE"):
            raise c.fail(f + ".scheduler.policy", f"{pol} is not supported by this runtime")
        c.integer(sched, "nice", f + ".scheduler.nice", lo=-20, hi=19)
        c.integer(sched, "priority", f + ".scheduler.priority", lo=0, hi=99)
    aff = c.obj(p, "execCPUAffinity", f + ".execCPUAffinity")
    if aff:
        for k in ("initial", "final"):
            v = c.string(aff, k, f"{f}.execCPUAffinity.{k}")
            if v:
                parse_cpus(v, c, f"{f}.execCPUAffinity.{k}")


def parse_cpus(v: str, c: Checker, field: str) -> set[int]:
    cpus: set[int] = set()
    try:
        for part in v.split(","):
            a, _, b = part.strip().partition("-")
            lo = int(a)
            hi = int(b) if b else lo
            if lo < 0 or hi < lo:
                raise ValueError
            cpus.update(range(lo, hi + 1))
    except ValueError:
        raise c.fail(field, f"{v!r} is not a CPU list such as 0-3,7") from None
    return cpus


# where the host says its LSMs are on (module-level so that tests can point them elsewhere)
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"


def apparmor_enabled() -> bool:
    return _read(APPARMOR_ENABLED).startswith("Y")


def selinux_enabled() -> bool:
    return os.path.exists(SELINUX_ENFORCE)


def _lsm_refusal(lsm: str, enabled: bool, what: str, instead: str) -> str:
    """Why an LSM field is refused. rune applies no LSM: on a host where the LSM is on, ignoring the field would
    silently drop the confinement an engine asked for (docker-default, container_t); where it is off, runc refuses the
    field too (its apparmor write and selinux check fail)."""
    if enabled:
        return (f"{lsm} is enabled on this host but rune does not {what}: refusing to {instead} (remove the field to "
                "run without it)")
    return f"{lsm} is not enabled on this host; remove the field"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _check_linux(c: Checker, linux: dict, config: dict) -> None:
    types: dict[str, str] = {}
    for i, ns in enumerate(c.array(linux, "namespaces", "linux.namespaces")):
        f = f"linux.namespaces[{i}]"
        c.typed(ns, dict, f, "an object")
        t = c.string(ns, "type", f + ".type", required=True)
        if t not in NAMESPACES:
            raise c.fail(f + ".type", f"unknown namespace type {t!r} (known: {', '.join(NAMESPACES)})")
        if t in types:
            raise c.fail(f + ".type", f"namespace {t!r} is listed twice")
        p = c.string(ns, "path", f + ".path")
        if p:
            c.abspath(p, f + ".path")
            if not os.path.exists(p):
                raise c.fail(f + ".path", f"{p} does not exist")
        types[t] = p or ""
    for key in ("uidMappings", "gidMappings"):
        maps = c.array(linux, key, "linux." + key)
        for i, m in enumerate(maps):
            f = f"linux.{key}[{i}]"
            c.typed(m, dict, f, "an object")
            for k in ("containerID", "hostID", "size"):
                c.integer(m, k, f"{f}.{k}", required=True, lo=0, hi=(1 << 32) - 1)
            if m["size"] == 0:
                raise c.fail(f + ".size", "must be greater than zero")
        if maps and "user" not in types:
            raise c.fail("linux." + key, "mappings need a user namespace: add {\"type\": \"user\"} to linux.namespaces")
        if "user" in types and not types["user"] and not maps:
            raise c.fail("linux." + key, "a new user namespace needs mappings")
    for i, d in enumerate(c.array(linux, "devices", "linux.devices")):
        f = f"linux.devices[{i}]"
        c.typed(d, dict, f, "an object")
        p = c.string(d, "path", f + ".path", required=True)
        c.abspath(p, f + ".path")
        t = c.string(d, "type", f + ".type", required=True)
        if t not in DEVICE_TYPES:
            raise c.fail(f + ".type", f"unknown device type {t!r} (c, b, u or p)")
        for k in ("major", "minor"):
            c.integer(d, k, f"{f}.{k}", required=t != "p", lo=0, hi=(1 << 32) - 1)
        c.integer(d, "fileMode", f + ".fileMode", lo=0, hi=0o7777)
        c.integer(d, "uid", f + ".uid", lo=0, hi=(1 << 32) - 1)
        c.integer(d, "gid", f + ".gid", lo=0, hi=(1 << 32) - 1)
    c.string(linux, "cgroupsPath", "linux.cgroupsPath")
    c.obj(linux, "resources", "linux.resources")
    prop = c.string(linux, "rootfsPropagation", "linux.rootfsPropagation")
    if prop and prop not in PROPAGATIONS:
        raise c.fail("linux.rootfsPropagation", f"unknown propagation {prop!r} (known: {', '.join(PROPAGATIONS)})")
    for key in ("maskedPaths", "readonlyPaths"):
        for i, p in enumerate(c.strings(linux, key, "linux." + key)):
            c.abspath(p, f"linux.{key}[{i}]")
    sysctl = c.obj(linux, "sysctl", "linux.sysctl")
    if sysctl:
        for k, v in sysctl.items():
            c.typed(v, str, f"linux.sysctl.{k}", "a string")
            _check_sysctl(c, k, types)
    c.obj(linux, "seccomp", "linux.seccomp")
    pers = c.obj(linux, "personality", "linux.personality")
    if pers:
        dom = c.string(pers, "domain", "linux.personality.domain", required=True)
        if dom not in PERSONALITY_DOMAINS:
            raise c.fail("linux.personality.domain", f"unknown domain {dom!r} (LINUX or LINUX32)")
        if c.strings(pers, "flags", "linux.personality.flags"):
            raise c.fail("linux.personality.flags", "no personality flags are supported yet; remove them")
    if linux.get("intelRdt"):
        raise c.fail("linux.intelRdt", "Intel RDT is not supported by this runtime")
    offsets = c.obj(linux, "timeOffsets", "linux.timeOffsets")
    if offsets:
        if "time" not in types or types["time"]:
            raise c.fail("linux.timeOffsets", "needs a new time namespace in linux.namespaces")
        for k, v in offsets.items():
            if k not in ("monotonic", "boottime"):
                raise c.fail(f"linux.timeOffsets.{k}", "only monotonic and boottime clocks have offsets")
            c.typed(v, dict, f"linux.timeOffsets.{k}", "an object")
            c.integer(v, "secs", f"linux.timeOffsets.{k}.secs")
            c.integer(v, "nanosecs", f"linux.timeOffsets.{k}.nanosecs", lo=0, hi=999999999)
    if c.string(linux, "mountLabel", "linux.mountLabel"):
        raise c.fail("linux.mountLabel", _lsm_refusal("SELinux", selinux_enabled(), "label mounts",
                                                      "mount without the label"))
    if config.get("hostname") and ("uts" not in types or types["uts"]):
        raise c.fail("hostname", "setting the hostname needs a new uts namespace in linux.namespaces")
    if config.get("domainname") and ("uts" not in types or types["uts"]):
        raise c.fail("domainname", "setting the domainname needs a new uts namespace in linux.namespaces")


_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced")  # fmt: skip


def _check_sysctl(c: Checker, key: str, types: dict[str, str]) -> None:
    f = f"linux.sysctl.{key}"
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" not in types:
            raise c.fail(f, "needs a new ipc namespace (this would change the host)")
    elif key.startswith("net."):
        if "network" not in types:
            raise c.fail(f, "needs a network namespace (this would change the host)")
    elif key in ("kernel.hostname", "kernel.domainname"):
        if "uts" not in types:
            raise c.fail(f, "needs a uts namespace (this would change the host)")
    else:
        raise c.fail(f, "is not namespaced: a container may not change it")
    if "/" in key or ".." in key:
        raise c.fail(f, "is not a sysctl name")
