"""config.json of an OCI bundle (runtime-spec 1.0 to 1.2): read, validated as a whole, then checked for meaning.

The parsed config stays a plain dict (it is also stored in state.json). `load` reads the file only if it is a regular
file of at most MAX_BYTES, nested at most jsonlite.MAX_DEPTH levels, validates every field against the table in
schema.py (types, kernel ranges, encodings), then checks what fields mean for each other here; any failure is a
RuneError with one sentence naming the file and the field, e.g.
"/b/config.json: linux.namespaces[1].type: unknown namespace type 'foo'". Unknown properties are ignored, as the
spec requires. All of it happens before anything is made.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError, q, shown
from inclavare.oci import jsonlite, schema
from inclavare.oci.schema import DEVICE_TYPES, HOOK_KINDS, IOPRIO_CLASSES, PROPAGATIONS, SCHED_POLICIES  # noqa: F401

MAX_BYTES = 8 << 20  # far above what engines write (tens of KiB), far below what would exhaust memory
NAMESPACES = {
    "pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000, "ipc": 0x08000000, "uts": 0x04000000,
    "user": 0x10000000, "cgroup": 0x02000000, "time": 0x00000080,
}  # fmt: skip
NS_PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
                 "cgroup": "cgroup", "time": "time"}  # fmt: skip
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}


class Checker:
    """Builds the RuneError of a field, naming the file (quoted if it would not print as one line)."""

    def __init__(self, source: str) -> None:
        self.source = q(source)

    def fail(self, field: str, problem: str) -> RuneError:
        return RuneError(f"{self.source}: {field}: {problem}")

    def validate(self, doc: object, node: schema.Node, field: str = "") -> None:
        try:
            schema.validate(doc, node, field)
        except schema.Refusal as e:
            raise RuneError(f"{self.source}: {e}") from None


def load(bundle: str, raw: bytes | None = None) -> tuple[dict, str]:
    """(config, absolute rootfs path) of the bundle directory; RuneError naming what is wrong. `raw`: config.json's
    bytes, when the caller has read them (as jsonlite.read_file reads them)."""
    path = os.path.join(bundle, "config.json")
    try:
        config = jsonlite.read_json(path, MAX_BYTES, raw=raw)
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise RuneError(f"bundle {q(bundle)}: no such directory") from None
        raise RuneError(f"{q(path)}: no such file: the bundle has no config.json") from None
    except OSError as e:
        raise RuneError(f"{q(path)}: cannot read: {e.strerror}") from None
    c = Checker(path)
    if type(config) is not dict:
        raise RuneError(f"{c.source}: must hold a JSON object, got {schema.describe(config)}")
    c.validate(config, schema.CONFIG)
    rootfs = check(config, c, bundle)
    return config, rootfs


def check(config: dict, c: Checker, bundle: str) -> str:
    """What the validated fields mean for each other and for this host; the absolute rootfs path."""
    version = config["ociVersion"]
    if not version.startswith("1."):
        raise c.fail("ociVersion", f"{shown(version)} is not supported (this runtime implements runtime-spec 1.0 to 1.2)")
    rootfs = os.path.normpath(os.path.join(bundle, config["root"]["path"]))
    if not os.path.isdir(rootfs):
        what = "is not a directory" if os.path.exists(rootfs) else "does not exist"
        raise c.fail("root.path", f"{q(rootfs)} {what}")
    for i, m in enumerate(config.get("mounts") or ()):
        _check_mount(c, m, f"mounts[{i}]")
    process = config.get("process")
    if process is not None:
        _process_meaning(c, process, "process")
    linux = config.get("linux")
    if linux is not None:
        _check_linux(c, linux, config)
    return rootfs


def _check_mount(c: Checker, m: dict, f: str) -> None:
    opts = m.get("options") or ()
    from inclavare.linux import mountopts

    for o in opts:
        if o in mountopts.RECURSIVE or o in ("idmap", "ridmap"):
            raise c.fail(f + ".options", f"option {shown(o)} is not supported by this runtime")
    if m.get("uidMappings") or m.get("gidMappings"):
        raise c.fail(f, "idmapped mounts (uidMappings, gidMappings) are not supported by this runtime")
    t = m.get("type") or ""
    if (t == "bind" or "bind" in opts or "rbind" in opts) and not m.get("source"):
        raise c.fail(f + ".source", "is required for a bind mount")


def check_process(c: Checker, p: object, f: str) -> None:
    """A process object on its own (`rune exec --process`): validated, then checked for meaning."""
    c.validate(p, schema.PROCESS, f)
    _process_meaning(c, p, f)  # type: ignore[arg-type]


def _process_meaning(c: Checker, p: dict, f: str) -> None:
    if not p.get("args") and not p.get("commandLine"):
        raise c.fail(f + ".args", "must name the program to run")
    seen = set()
    for i, r in enumerate(p.get("rlimits") or ()):
        rf = f"{f}.rlimits[{i}]"
        t = r["type"]
        if t in seen:
            raise c.fail(rf + ".type", f"{t} is given twice")
        seen.add(t)
        if r["soft"] > r["hard"]:
            raise c.fail(rf, f"soft limit {r['soft']} is above the hard limit {r['hard']}")
    sched = p.get("scheduler")
    if sched and sched["policy"] in ("SCHED_ISO", "SCHED_DEADLINE"):
        raise c.fail(f + ".scheduler.policy", f"{sched['policy']} is not supported by this runtime")
    for k, v in (p.get("execCPUAffinity") or {}).items():
        if k in ("initial", "final") and v:
            parse_cpus(v, c, f"{f}.execCPUAffinity.{k}")


MAX_CPUS = 1 << 16  # above any kernel's NR_CPUS; a range beyond it is a typo (or an attempt to exhaust memory)


def parse_cpus(v: str, c: Checker, field: str) -> set[int]:
    cpus: set[int] = set()
    try:
        for part in v.split(","):
            a, _, b = part.strip().partition("-")
            lo = int(a)
            hi = int(b) if b else lo
            if lo < 0 or hi < lo or hi >= MAX_CPUS:
                raise ValueError
            cpus.update(range(lo, hi + 1))
    except ValueError:
        raise c.fail(field, f"{shown(v)} is not a CPU list such as 0-3,7 (CPUs 0 to {MAX_CPUS - 1})") from None
    return cpus


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _check_linux(c: Checker, linux: dict, config: dict) -> None:
    types: dict[str, str] = {}
    for i, ns in enumerate(linux.get("namespaces") or ()):
        f = f"linux.namespaces[{i}]"
        t = ns["type"]
        if t in types:
            raise c.fail(f + ".type", f"namespace {t!r} is listed twice")
        p = ns.get("path") or ""
        if p and not os.path.exists(p):
            raise c.fail(f + ".path", f"{q(p)} does not exist")
        types[t] = p
    for key in ("uidMappings", "gidMappings"):
        maps = linux.get(key)
        if maps and "user" not in types:
            raise c.fail("linux." + key, "mappings need a user namespace: add {\"type\": \"user\"} to linux.namespaces")
        if "user" in types and not types["user"] and not maps:
            raise c.fail("linux." + key, "a new user namespace needs mappings")
    for i, d in enumerate(linux.get("devices") or ()):
        if d["type"] != "p":
            for k in ("major", "minor"):
                if k not in d:
                    raise c.fail(f"linux.devices[{i}].{k}", "is required")
    for k in (linux.get("sysctl") or {}):
        _check_sysctl(c, k, types)
    pers = linux.get("personality")
    if pers and pers.get("flags"):
        raise c.fail("linux.personality.flags", "no personality flags are supported yet; remove them")
    if linux.get("intelRdt"):
        raise c.fail("linux.intelRdt", "Intel RDT is not supported by this runtime")
    offsets = linux.get("timeOffsets")
    if offsets:
        if "time" not in types or types["time"]:
            raise c.fail("linux.timeOffsets", "needs a new time namespace in linux.namespaces")
        for k in offsets:
            if k not in ("monotonic", "boottime"):
                raise c.fail(schema.member("linux.timeOffsets", k), "only monotonic and boottime clocks have offsets")
    # a uts namespace joined by path is the container's too (runtime spec; runc sets the name in it)
    if config.get("hostname") and "uts" not in types:
        raise c.fail("hostname", "setting the hostname needs a uts namespace in linux.namespaces")
    if config.get("domainname") and "uts" not in types:
        raise c.fail("domainname", "setting the domainname needs a uts namespace in linux.namespaces")
    if "mount" not in types:
        # without a mount namespace these would change the host's mounts (runc makes `mounts` there, and refuses
        # masked and read-only paths): refused, naming the field
        for field, value in (("mounts", config.get("mounts")), ("linux.maskedPaths", linux.get("maskedPaths")),
                             ("linux.readonlyPaths", linux.get("readonlyPaths")),
                             ("root.readonly", (config.get("root") or {}).get("readonly"))):
            if value:
                raise c.fail(field, "needs a mount namespace in linux.namespaces (without one it would change the "
                                    "host's mounts): add {\"type\": \"mount\"} or remove it")


_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced")  # fmt: skip


def _check_sysctl(c: Checker, key: str, types: dict[str, str]) -> None:
    f = schema.member("linux.sysctl", key)
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
