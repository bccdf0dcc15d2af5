"""The runtime-spec 1.0 to 1.2 config.json, field by field: JSON type, range and encoding, in one table.

`validate(doc, CONFIG)` walks a parsed document along the table before anything is made and raises Refusal naming
the first field that is wrong by its JSON path ("linux.resources.pids.limit"):
- integers are JSON integers (not 1.0, not true) within the range the kernel takes (uid and gid up to 2**32-2,
  since -1 means "unchanged" to it; device numbers within dev_t; hook timeouts up to 2**31-1 seconds);
- strings hold no NUL byte (every one ends up in a C string) and encode to UTF-8 (no lone surrogate from a "\\ud800"
  escape), within the kernel's length (PATH_MAX for paths, HOST_NAME_MAX for the host name, MAX_ARG_STRLEN for an
  argument or an environment entry); paths are absolute where the spec says so; env entries are NAME=VALUE with a
  non-empty NAME;
- names the runtime looks up (namespace types, rlimits, capabilities ...) are among those it knows.
Properties the table does not name are ignored, as the spec asks. A member given as null counts as absent (as Go's
encoding/json reads it into runc's structs); null inside an array is refused. What one field means for another
(a uid mapping needs a user namespace) is checked in config.py, on the validated document.
"""

from __future__ import annotations

from inclavare.errors import shown

PATH_MAX = 4096  # with its NUL
MAX_ARG_STRLEN = 131072  # one argument or environment entry, with its NUL
HOST_NAME_MAX = 64
HOOK_TIMEOUT_MAX = (1 << 31) - 1  # seconds


class Refusal(Exception):
    """The first field that is wrong: its JSON path and what is wrong, as one clause."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def describe(v: object) -> str:
    """A JSON value as "got ..." names it."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "a boolean"
    if type(v) is str:
        return "a string"
    if type(v) is list:
        return "an array"
    if type(v) is dict:
        return "an object"
    return shown(v)


def member(path: str, key: str) -> str:
    """The JSON path of an object member: a.b, or a["odd key"] where the key would not read as one name."""
    if key and key.isprintable() and not any(c in key for c in ' "[]\\'):
        return f"{path}.{key}" if path else key
    from inclavare.oci import jsonlite

    return f"{path}[{jsonlite.dumps(key)}]"


class Node:
    __slots__ = ()

    def check(self, v: object, path: str) -> None:
        raise NotImplementedError


class Anything(Node):
    """Any JSON value (a platform other than Linux: its section is not ours to read)."""

    __slots__ = ()

    def check(self, v: object, path: str) -> None:
        pass


class Bool(Node):
    __slots__ = ()

    def check(self, v: object, path: str) -> None:
        if v is not True and v is not False:
            raise Refusal(path, f"must be a boolean, got {describe(v)}")


class Int(Node):
    __slots__ = ("lo", "hi", "below")

    def __init__(self, lo: int, hi: int, below: str = "") -> None:
        self.lo, self.hi, self.below = lo, hi, below

    def check(self, v: object, path: str) -> None:
        if type(v) is not int:
            raise Refusal(path, f"must be an integer, got {describe(v)}")
        if v < self.lo and self.below:
            raise Refusal(path, self.below)
        if not self.lo <= v <= self.hi:
            raise Refusal(path, f"{v} is out of range ({self.lo} to {self.hi})")


class Str(Node):
    """A string: no NUL, valid Unicode, at most `limit` bytes in UTF-8; optionally absolute, non-empty, or one of
    `choices` (a `noun` names what they are in the refusal; `known` lists them there)."""

    __slots__ = ("limit", "absolute", "nonempty", "choices", "noun", "known")

    def __init__(self, limit: int = 1 << 20, absolute: bool = False, nonempty: bool = False,
                 choices: object = None, noun: str = "", known: bool = True) -> None:
        self.limit, self.absolute, self.nonempty = limit, absolute, nonempty
        self.choices, self.noun, self.known = choices, noun, known

    def check(self, v: object, path: str) -> None:
        if type(v) is not str:
            raise Refusal(path, f"must be a string, got {describe(v)}")
        text(v, path, self.limit)
        if self.nonempty and not v:
            raise Refusal(path, "must not be empty")
        if self.absolute and v and v[0] != "/":
            raise Refusal(path, f"{shown(v)} must be an absolute path")
        if self.choices is not None and v not in self.choices:
            known = f" (known: {', '.join(self.choices)})" if self.known else ""
            raise Refusal(path, f"unknown {self.noun} {shown(v)}{known}")


def text(v: str, path: str, limit: int) -> None:
    """The encoding checks of every string: NUL, lone surrogates, length in bytes."""
    if v.isascii():
        size = len(v)
    else:
        try:
            size = len(v.encode())
        except UnicodeEncodeError as e:
            raise Refusal(path, f"is not valid Unicode: it holds the lone surrogate {ascii(v[e.start])}") from None
    if "\0" in v:
        raise Refusal(path, f"must not contain a NUL byte (at character {v.index(chr(0))})")
    if size > limit:
        raise Refusal(path, f"is {size} bytes long, more than the {limit} allowed")


class Env(Str):
    """An environment entry: NAME=VALUE with a non-empty NAME."""

    __slots__ = ()

    def check(self, v: object, path: str) -> None:
        Str.check(self, v, path)
        name, eq, _ = v.partition("=")  # type: ignore[union-attr]
        if not eq or not name:
            raise Refusal(path, f"{shown(v)} is not of the form NAME=VALUE")


class Arr(Node):
    __slots__ = ("item", "limit")

    def __init__(self, item: Node, limit: int = 1 << 20) -> None:
        self.item, self.limit = item, limit

    def check(self, v: object, path: str) -> None:
        if type(v) is not list:
            raise Refusal(path, f"must be an array, got {describe(v)}")
        if len(v) > self.limit:
            raise Refusal(path, f"has {len(v)} entries, more than the {self.limit} allowed")
        item = self.item
        for i, x in enumerate(v):
            item.check(x, f"{path}[{i}]")


class Obj(Node):
    __slots__ = ("fields", "required")

    def __init__(self, fields: dict[str, Node], required: tuple[str, ...] = ()) -> None:
        self.fields, self.required = fields, required

    def check(self, v: object, path: str) -> None:
        if type(v) is not dict:
            raise Refusal(path, f"must be an object, got {describe(v)}")
        fields = self.fields
        nulls = []
        for k, x in v.items():
            node = fields.get(k)
            if node is None:
                continue
            if x is None:
                nulls.append(k)
            else:
                node.check(x, f"{path}.{k}" if path else k)
        for k in nulls:
            del v[k]
        for k in self.required:
            if k not in v:
                raise Refusal(f"{path}.{k}" if path else k, "is required")


class Map(Node):
    """An object whose keys are names (annotations, sysctl): every key a string as Str checks it, every value
    checked by `value`."""

    __slots__ = ("value", "key_limit")

    def __init__(self, value: Node, key_limit: int = 1 << 16) -> None:
        self.value, self.key_limit = value, key_limit

    def check(self, v: object, path: str) -> None:
        if type(v) is not dict:
            raise Refusal(path, f"must be an object, got {describe(v)}")
        value = self.value
        for k, x in v.items():
            where = member(path, k)
            text(k, where, self.key_limit)
            value.check(x, where)


def validate(doc: object, node: Node, path: str = "") -> None:
    """Refusal naming the first field of `doc` that the table refuses; null members are dropped from `doc`."""
    node.check(doc, path)


# ---------------------------------------------------------------------------------------------------------- the table

BOOL = Bool()
STR = Str()
STRS = Arr(STR)
I32 = Int(-(1 << 31), (1 << 31) - 1)
I64 = Int(-(1 << 63), (1 << 63) - 1)
U16 = Int(0, 0xFFFF)
U32 = Int(0, 0xFFFFFFFF)
U64 = Int(0, (1 << 64) - 1)
ID = Int(0, 0xFFFFFFFE)  # a uid or gid: (uid_t)-1 means "leave unchanged" to chown and setresuid
PATH = Str(limit=PATH_MAX - 1)
ABS_PATH = Str(limit=PATH_MAX - 1, absolute=True, nonempty=True)
ARG = Str(limit=MAX_ARG_STRLEN - 1)
ENV = Arr(Env(limit=MAX_ARG_STRLEN - 1))

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable")
DEVICE_TYPES = ("c", "b", "u", "p")
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE")
PERSONALITY_DOMAINS = ("LINUX", "LINUX32")


def _names(loader, noun: str, lookup: bool) -> Str:  # noqa: ANN001
    """Kernel names (capabilities, rlimits): looked up when `lookup`, else only typed (state.json's copy of a config
    that was checked when the container was made: reading it need not load the tables of the linux layer)."""
    return Str(limit=64, choices=loader() if lookup else None, noun=noun, known=False)


def _capability_names() -> dict:
    from inclavare.linux.capabilities import NUMBERS

    return NUMBERS


def _rlimit_names() -> dict:
    from inclavare.linux.syscalls import RLIMITS

    return RLIMITS


CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def _tables(lookup: bool) -> dict[str, Node]:
    """The table: built on first use (schema.CONFIG, schema.STATE ...), not at import."""
    ID_MAPPING = Obj({"containerID": U32, "hostID": U32, "size": Int(1, 0xFFFFFFFF, below="must be greater than zero")},
                     required=("containerID", "hostID", "size"))  # fmt: skip

    HOOK = Obj({
        "path": ABS_PATH, "args": Arr(ARG), "env": ENV,
        "timeout": Int(1, HOOK_TIMEOUT_MAX, below="must be greater than zero"),
    }, required=("path",))  # fmt: skip

    PROCESS = Obj({
        "terminal": BOOL,
        "consoleSize": Obj({"height": U16, "width": U16}, required=("height", "width")),  # a struct winsize
        "user": Obj({"uid": ID, "gid": ID, "umask": Int(0, 0o777), "additionalGids": Arr(ID, limit=65536),
                     "username": STR}),
        "args": Arr(ARG), "commandLine": STR, "env": ENV,
        "cwd": Str(limit=PATH_MAX - 1, absolute=True),  # empty: the root, as runc takes it
        "capabilities": Obj({s: Arr(_names(_capability_names, "capability", lookup), limit=64)
                         for s in CAPABILITY_SETS}),
        "rlimits": Arr(Obj({"type": _names(_rlimit_names, "resource limit", lookup),
                            "soft": U64, "hard": U64}, required=("type", "soft", "hard"))),
        "noNewPrivileges": BOOL, "apparmorProfile": STR, "selinuxLabel": STR,
        "oomScoreAdj": Int(-1000, 1000),
        "scheduler": Obj({"policy": Str(limit=64, choices=SCHED_POLICIES, noun="policy"), "nice": Int(-20, 19),
                          "priority": Int(0, 99), "flags": STRS, "runtime": U64, "deadline": U64, "period": U64},
                         required=("policy",)),
        "ioPriority": Obj({"class": Str(limit=64, choices=IOPRIO_CLASSES, noun="class"), "priority": Int(0, 7)},
                          required=("class",)),
        "execCPUAffinity": Obj({"initial": Str(limit=PATH_MAX), "final": Str(limit=PATH_MAX)}),
    })  # fmt: skip

    _BLOCK_DEVICE = {"major": I64, "minor": I64}
    RESOURCES = Obj({
        "devices": Arr(Obj({"allow": BOOL, "type": Str(limit=1), "major": I64, "minor": I64, "access": Str(limit=3)},
                           required=("allow",))),
        "memory": Obj({k: I64 for k in ("limit", "reservation", "swap", "kernel", "kernelTCP")}
                      | {"swappiness": Int(-1, (1 << 64) - 1)}  # -1: Docker's "unset"
                      | {k: BOOL for k in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate")}),
        "cpu": Obj({"shares": U64, "quota": I64, "burst": U64, "period": U64, "realtimeRuntime": I64,
                    "realtimePeriod": U64, "cpus": Str(limit=PATH_MAX), "mems": Str(limit=PATH_MAX), "idle": I64}),
        "pids": Obj({"limit": I64}),
        "blockIO": Obj({"weight": U16, "leafWeight": U16,
                        "weightDevice": Arr(Obj(_BLOCK_DEVICE | {"weight": U16, "leafWeight": U16},
                                                required=("major", "minor")))}
                       | {k: Arr(Obj(_BLOCK_DEVICE | {"rate": U64}, required=("major", "minor", "rate")))
                          for k in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                                    "throttleWriteIOPSDevice")}),
        "hugepageLimits": Arr(Obj({"pageSize": Str(limit=64), "limit": U64}, required=("pageSize", "limit"))),
        "network": Obj({"classID": U32, "priorities": Arr(Obj({"name": Str(limit=64), "priority": U32},
                                                              required=("name", "priority")))}),
        "rdma": Map(Obj({"hcaHandles": U32, "hcaObjects": U32}), key_limit=64),
        "unified": Map(Str(limit=PATH_MAX), key_limit=255),
    })  # fmt: skip

    SECCOMP = Obj({
        "defaultAction": Str(limit=64), "defaultErrnoRet": U32, "architectures": Arr(Str(limit=64)),
        "flags": Arr(Str(limit=64)), "listenerPath": PATH, "listenerMetadata": Str(limit=PATH_MAX),
        "syscalls": Arr(Obj({"names": Arr(Str(limit=64)), "action": Str(limit=64), "errnoRet": U32,
                             "args": Arr(Obj({"index": U32, "value": U64, "valueTwo": U64, "op": Str(limit=64)}))})),
    })  # fmt: skip

    LINUX = Obj({
        "namespaces": Arr(Obj({"type": Str(limit=16, choices=NAMESPACE_TYPES, noun="namespace type"), "path": ABS_PATH},
                              required=("type",))),
        "uidMappings": Arr(ID_MAPPING, limit=340), "gidMappings": Arr(ID_MAPPING, limit=340),  # the kernel's maximum
        "timeOffsets": Map(Obj({"secs": I64, "nanosecs": Int(0, 999_999_999)}), key_limit=16),
        "devices": Arr(Obj({"type": Str(limit=1, choices=DEVICE_TYPES, noun="device type"), "path": ABS_PATH,
                            "major": Int(0, 4095), "minor": Int(0, (1 << 20) - 1),  # what mknod(2) encodes
                            "fileMode": Int(0, 0o7777), "uid": ID, "gid": ID}, required=("type", "path"))),
        "netDevices": Map(Obj({"name": Str(limit=15)}), key_limit=15),  # IFNAMSIZ
        "cgroupsPath": PATH,
        "resources": RESOURCES,
        "rootfsPropagation": Str(limit=16, choices=PROPAGATIONS, noun="propagation"),
        "maskedPaths": Arr(ABS_PATH), "readonlyPaths": Arr(ABS_PATH),
        "mountLabel": STR,
        "sysctl": Map(Str(limit=PATH_MAX), key_limit=255),
        "seccomp": SECCOMP,
        "personality": Obj({"domain": Str(limit=16, choices=PERSONALITY_DOMAINS, noun="domain"), "flags": STRS},
                           required=("domain",)),
        "intelRdt": Obj({"closID": STR, "l3CacheSchema": STR, "memBwSchema": STR, "schemata": STRS, "enableCMT": BOOL,
                         "enableMBM": BOOL, "enableMonitoring": BOOL}),
    })  # fmt: skip

    CONFIG = Obj({
        "ociVersion": Str(limit=64),
        "root": Obj({"path": Str(limit=PATH_MAX - 1, nonempty=True), "readonly": BOOL}, required=("path",)),
        "mounts": Arr(Obj({"destination": Str(limit=PATH_MAX - 1, nonempty=True), "source": PATH, "type": Str(limit=255),
                           "options": Arr(Str(limit=PATH_MAX)), "uidMappings": Arr(ID_MAPPING),
                           "gidMappings": Arr(ID_MAPPING)}, required=("destination",))),
        "process": PROCESS,
        "hostname": Str(limit=HOST_NAME_MAX), "domainname": Str(limit=HOST_NAME_MAX),
        "hooks": Obj({kind: Arr(HOOK) for kind in HOOK_KINDS}),
        "annotations": Map(STR),
        "linux": LINUX,
        "solaris": Anything(), "windows": Anything(), "vm": Anything(), "zos": Anything(),
    }, required=("ociVersion", "root"))  # fmt: skip

    return {"CONFIG": CONFIG, "PROCESS": PROCESS, "RESOURCES": RESOURCES, "LINUX": LINUX, "HOOK": HOOK}


def _state_table() -> Node:
    """state.json as rune writes it (runtime/create.py), read back by every command: small, without the config
    (config.json beside it, read only by the commands that need it), so `state`, `start` and `delete` build only
    this table."""
    return Obj({
        "ociVersion": Str(limit=64), "id": Str(limit=1024), "pid": Int(0, 1 << 22),  # PID_MAX_LIMIT
        "status": Str(limit=16, choices=("creating", "created", "running", "paused", "stopped"), noun="status"),
        "bundle": PATH, "rootfs": PATH, "created": Str(limit=64), "owner": Str(limit=64),
        "annotations": Map(STR),
        "cgroup_paths": Map(ABS_PATH, key_limit=64), "cgroup_parents": Arr(ABS_PATH),
        "hooks": Arr(Str(limit=16, choices=HOOK_KINDS, noun="hook kind"), limit=len(HOOK_KINDS)),
        "use_fifo": BOOL, "rootless": BOOL, "paused": BOOL, "init_start": U64,
        "enclave": Obj({k: STR for k in ("type", "runtime_path", "runtime_args", "loglevel", "ra_type", "ra_epid_spid",
                                         "agent", "sim_dir")} | {"ra_epid_subscription_key_set": BOOL}),
    })  # fmt: skip


_built: dict[bool, dict[str, Node]] = {}
STATE_DEPTH = 65  # a config of MAX_DEPTH levels, inside state.json (as rune before config.json wrote it)
_state: list[Node] = []


def __getattr__(name: str) -> Node:
    """CONFIG, PROCESS, RESOURCES, LINUX, HOOK (with kernel names looked up), STORED_CONFIG (a container's
    config.json in the state store: only typed, its names were looked up at create) and STATE, built once, when
    first asked for."""
    if name == "STATE":
        if not _state:
            _state.append(_state_table())
        return _state[0]
    if name == "STORED_CONFIG":
        name, lookup = "CONFIG", False
    elif name in ("CONFIG", "PROCESS", "RESOURCES", "LINUX", "HOOK"):
        lookup = True
    else:
        raise AttributeError(name)
    if lookup not in _built:
        _built[lookup] = _tables(lookup)
    return _built[lookup][name]
