"""Hypothesis strategies for hostile config.json files and argument vectors.

A config is the default one (payload `true`) with one to four mutations. The fields to mutate are taken from the
validation table itself (oci/schema.py), so that every field of runtime-spec 1.0-1.2 is reached; each gets either a
value of its own type near the edges of its range, or anything (null, the wrong type, NUL bytes, lone surrogates,
newlines, huge numbers). Fields that run something or touch the host keep to values that are harmless on a shared
machine: programs and hook paths from a fixed list, cgroupsPath under a unique prefix, mount sources under the
test's own directory, no cgroup file that moves processes. What is refused must be refused with a sentence; what is
accepted must run and be removed without a trace.
"""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from inclavare.oci import schema as S

# ------------------------------------------------------------------------------------------------- hostile values

EDGE_INTS = [0, 1, -1, 2, 7, 64, 65, 999, 1000, 4095, 4096, 65535, 65536, 2**20 - 1, 2**20, 2**31 - 1, 2**31,
             2**32 - 2, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**31), -(2**63), -(2**63) - 1,
             10**30]  # fmt: skip
ODD_TEXT = ["", "\0", "a\0b", "\ud800", "x\udfffy", "a\nb", "\r", "\t", "=x", "=", "A=\0", "..", "../..", "/..",
            "//", "/", "a/b", "\u202e", "é", "\U0001f600", "x" * 70, "/a" * 2100, "0-99999999999", "-1", "1e3",
            "NaN", "null", "SCMP_ACT_KILL", "RLIMIT_NOFILE", "CAP_SYS_ADMIN", "user", "bind", "rbind", "ro",
            "tmpfs", "proc"]  # fmt: skip
ODD_FLOATS = [0.0, 1.0, 1.5, -1.0, 1e308, float("inf"), float("-inf"), float("nan")]


def odd_text() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12))


def unprintable_text() -> st.SearchStrategy:
    """Strings no program is named: with a NUL, a lone surrogate or a control character (for the fields that run
    something, where a plain random word could happen to name a real program)."""
    return st.builds(lambda a, bad, b: a + bad + b, st.text(max_size=4),
                     st.sampled_from(["\0", "\ud800", "\n", "\x1b", "\udc80"]), st.text(max_size=4))


def anything(depth: int = 2, text: st.SearchStrategy | None = None) -> st.SearchStrategy:
    text = text if text is not None else odd_text()
    scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(EDGE_INTS), st.integers(),
                        st.sampled_from(ODD_FLOATS), text)
    if depth <= 0:
        return scalars
    inner = anything(depth - 1, text)
    return st.one_of(scalars, st.lists(inner, max_size=3), st.dictionaries(odd_text(), inner, max_size=3))


# ------------------------------------------------------------------------------------------------ typed values


def typed(node: S.Node, path: tuple) -> st.SearchStrategy:
    """A value of the node's own kind, near the edges of what the table allows."""
    if isinstance(node, S.Bool):
        return st.booleans()
    if isinstance(node, S.Int):
        lo, hi = node.lo, node.hi
        inside = st.integers(lo, hi)
        return st.one_of(inside, inside, inside, st.sampled_from([lo, hi, lo - 1, hi + 1, 0, 1, -1]),
                         st.sampled_from(EDGE_INTS))
    if isinstance(node, S.Str):
        plain = st.text("abcxyz019-_./", max_size=12)
        if node.choices is not None:
            plain = st.sampled_from(list(node.choices))
        elif node.absolute:
            plain = st.builds(lambda t: "/" + t, st.text("abcxyz019-_./", max_size=10))
        return st.one_of(plain, plain, plain, odd_text())
    if isinstance(node, S.Arr):
        return st.lists(typed(node.item, path + (0,)), max_size=3)
    if isinstance(node, S.Map):
        return st.dictionaries(odd_text(), typed(node.value, path + ("k",)), max_size=3)
    if isinstance(node, S.Obj):
        return st.fixed_dictionaries({}, optional={k: typed(n, path + (k,)) for k, n in list(node.fields.items())[:12]})
    return anything(1)


def fields(node: S.Node = S.CONFIG, path: tuple = ()) -> list[tuple[tuple, S.Node]]:
    """Every field of the table as (JSON path, node); arrays by their first entry, maps by one key."""
    out = [(path, node)] if path else []
    if isinstance(node, S.Obj):
        for k, n in node.fields.items():
            if not isinstance(n, S.Anything):
                out += fields(n, path + (k,))
    elif isinstance(node, S.Arr):
        out += fields(node.item, path + (0,))
    elif isinstance(node, S.Map):
        out += fields(node.value, path + ("fuzz",))
    return out


# --------------------------------------------------------------------------- fields that run or touch something

SAFE_ARGS = [["true"], ["false"], ["sleep", "0.2"], ["/bin/nope"], ["nope"], ["sh", "-c", "exit 3"], [],
             ["echo", "hi"]]  # fmt: skip
SAFE_HOOK_PATHS = ["/bin/true", "/bin/false", "/bin/sh", "/nonexistent/hook", "true", ""]
SAFE_HOOK_ARGS = [["sh", "-c", "exit 2"], ["sh", "-c", "sleep 0.2"], ["sh", "-c", "echo oops >&2; exit 1"], [],
                  ["true"]]  # fmt: skip


def overrides(work: str, token: str) -> dict[tuple, st.SearchStrategy]:
    """Strategies for the fields that must stay harmless; keys are path prefixes (0 stands for any index)."""
    unsafe = unprintable_text()
    hostile = anything(1, unsafe)
    cgroup_names = st.text("abcxyz", min_size=1, max_size=4)
    return {
        ("process", "args"): st.one_of(st.sampled_from(SAFE_ARGS), hostile, st.lists(hostile, max_size=2)),
        ("process", "commandLine"): st.one_of(st.just("true"), hostile),
        ("root", "path"): st.one_of(st.sampled_from([f"{work}/rootfs", "rootfs", "/nonexistent", ""]), hostile),
        ("mounts", 0, "source"): st.one_of(st.sampled_from([f"{work}/vol", "tmpfs", "proc", "/nonexistent", "none"]),
                                           hostile),
        ("linux", "cgroupsPath"): st.one_of(
            st.builds(lambda a, b: f"/rune-fuzz-{token}/{a}/{b}", cgroup_names, cgroup_names),
            st.builds(lambda a: f"rune-fuzz-{token}-{a}", cgroup_names), hostile),
        ("linux", "namespaces", 0, "path"): st.one_of(st.sampled_from(["/proc/self/ns/uts", "/nonexistent", "/"]),
                                                      hostile),
        ("linux", "resources", "unified"): st.one_of(
            st.dictionaries(st.sampled_from(["memory.high", "pids.max", "memory.nope", "cpu.weight", "x", "a/b",
                                             "cgroup.procs", "cgroup.kill", "\0"]),
                            st.one_of(st.sampled_from(["max", "10", "0", "-1", "1"]), hostile), max_size=2),
            hostile),
        ("linux", "seccomp", "listenerPath"): st.one_of(st.just("/nonexistent/sock"), hostile),
        ("hooks",): None,  # below, per kind
        **{("hooks", kind, 0, "path"): st.one_of(st.sampled_from(SAFE_HOOK_PATHS), hostile) for kind in S.HOOK_KINDS},
        **{("hooks", kind, 0, "args"): st.one_of(st.sampled_from(SAFE_HOOK_ARGS), hostile) for kind in S.HOOK_KINDS},
    }


def _override(table: dict, path: tuple) -> st.SearchStrategy | None:
    for n in range(len(path), 0, -1):
        if path[:n] in table:
            return table[path[:n]]
    return None


# entries made when a path goes through an array or object that is not there yet
TEMPLATES = {
    ("mounts",): {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"},
    ("process", "rlimits"): {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
    ("linux", "namespaces"): {"type": "cgroup"},
    ("linux", "uidMappings"): {"containerID": 0, "hostID": 100000, "size": 65536},
    ("linux", "gidMappings"): {"containerID": 0, "hostID": 100000, "size": 65536},
    ("linux", "devices"): {"type": "c", "path": "/dev/fuzz", "major": 1, "minor": 3},
    ("linux", "resources", "devices"): {"allow": True, "access": "rwm"},
    **{("hooks", kind): {"path": "/bin/true"} for kind in S.HOOK_KINDS},
}


def _set(doc: dict, path: tuple, value: object) -> None:
    cur = doc
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(key, int):
            if not isinstance(cur, list):
                return
            if not cur:
                cur.append(copy.deepcopy(TEMPLATES.get(path[:i], {})))
            cur = cur[0]
            continue
        if not isinstance(cur, dict):
            return
        if not isinstance(cur.get(key), (dict, list)):
            cur[key] = [] if isinstance(nxt, int) else {}
        cur = cur[key]
    last = path[-1]
    if isinstance(last, int):
        if isinstance(cur, list):
            if cur:
                cur[0] = value
            else:
                cur.append(value)
    elif isinstance(cur, dict):
        cur[last] = value


def _delete(doc: dict, path: tuple) -> None:
    cur = doc
    for key in path[:-1]:
        if isinstance(key, int):
            if not (isinstance(cur, list) and cur):
                return
            cur = cur[0]
        elif isinstance(cur, dict) and key in cur:
            cur = cur[key]
        else:
            return
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    elif isinstance(cur, list) and cur:
        cur.pop(0)


USERNS = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
          "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}  # fmt: skip


@st.composite
def mutation(draw, table: list, safe: dict):  # noqa: ANN001, ANN201
    kind = draw(st.sampled_from(["set", "set", "set", "set", "set", "anything", "delete", "userns"]))
    path, node = draw(st.sampled_from(table))
    if kind == "userns":
        return ("userns", (), None)
    if kind == "delete":
        return ("delete", path, None)
    guarded = _override(safe, path)
    if guarded is not None:
        return ("set", path, draw(guarded))
    if kind == "anything":
        return ("set", path, draw(anything(2)))
    return ("set", path, draw(typed(node, path)))


def apply(base: dict, mutations: list) -> dict:
    doc = copy.deepcopy(base)
    for kind, path, value in mutations:
        if kind == "delete":
            _delete(doc, path)
        elif kind == "userns":
            linux = doc.setdefault("linux", {}) if isinstance(doc.get("linux", {}), dict) else {}
            if isinstance(linux.get("namespaces"), list):
                linux["namespaces"].append({"type": "user"})
                linux.update(copy.deepcopy(USERNS))
        else:
            _set(doc, path, value)
    return doc


def configs(work: str, token: str) -> st.SearchStrategy:
    """(list of mutations, raw-bytes edit or None): what test_fuzz_config applies to the default config."""
    table = [f for f in fields() if f[0][:1] != ("hooks",) or len(f[0]) > 1]
    safe = overrides(work, token)
    raw = st.one_of(st.none(), st.none(), st.none(),
                    st.sampled_from(["truncate", "bom", "invalid-utf8", "deep", "trailing", "nan", "dup-key"]))
    return st.tuples(st.lists(mutation(table, safe), min_size=1, max_size=3), raw,
                     st.integers(0, 10**6))


def raw_edit(data: bytes, edit: str | None, n: int) -> bytes:
    if edit == "truncate":
        return data[: n % max(len(data), 1)]
    if edit == "bom":
        return b"\xef\xbb\xbf" + data
    if edit == "invalid-utf8":
        i = n % max(len(data), 1)
        return data[:i] + b"\xff" + data[i:]
    if edit == "deep":
        depth = 60 + n % 20
        return data[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    if edit == "trailing":
        return data + b" x"
    if edit == "nan":
        return data[:-1] + b', "y": NaN}'
    if edit == "dup-key":
        return data[:-1] + b', "ociVersion": 1}'
    return data


# ------------------------------------------------------------------------------------------------------- argv

GLOBAL_FLAGS = ["--debug", "--debug=false", "--debug=true", "--debug=0", "--debug=yes", "--systemd-cgroup=false",
                "--systemd-cgroup=true", "--rootless", "--rootless=true", "--log-format", "--log-format=text",
                "--log-format=xml", "-v", "--help", "--nope", "-", "--", "--criu=/nonexistent/criu"]  # fmt: skip
COMMANDS = ["create", "start", "run", "state", "kill", "delete", "list", "spec", "ps", "exec", "pause", "resume",
            "update", "events", "features", "checkpoint", "restore", "attest", "help", "nosuch", ""]  # fmt: skip
PATH_FLAGS = ("bundle", "b", "pid-file", "console-socket", "process", "p", "resources", "r", "image-path",
              "work-path", "parent-path", "reportFile", "page-server")  # fmt: skip


def argvs(work: str, bundle: str) -> st.SearchStrategy:
    """A sequence of one to three rune commands on one container: ([argv, ...], container id placeholder "{id}")."""
    from inclavare.cli import rune as cli

    paths = st.one_of(st.sampled_from([bundle, f"{work}/empty", f"{work}/pidfile", f"{work}/bad.json",
                                       f"{work}/process.json", "/nonexistent/x", "", "a\nb"]),
                      unprintable_text())
    values = st.one_of(odd_text(), st.sampled_from(["0", "1", "-5", "1000000", "64m", "-1", "0x10", "SIGKILL", "9",
                                                    "json", "table", "1s", "max", "2:3"]))

    @st.composite
    def command(draw):  # noqa: ANN001, ANN202
        name = draw(st.sampled_from(COMMANDS))
        argv = draw(st.lists(st.sampled_from(GLOBAL_FLAGS), max_size=2))
        if name:
            argv.append(name)
        module = cli.COMMANDS.get(name)
        flags = dict(getattr(__import__(f"inclavare.cli.{module}", fromlist=["FLAGS"]), "FLAGS", {})) if module else {}
        if name in ("create", "run"):
            argv += ["--bundle", bundle]
        for flag in draw(st.lists(st.sampled_from(sorted(flags) or ["x"]), max_size=3)):
            kind = flags.get(flag, ("bool", ""))[0]
            dash = draw(st.sampled_from(["--", "-"]))
            if kind == "bool":
                argv.append(dash + flag + draw(st.sampled_from(["", "", "=false", "=true", "=2", "=\n"])))
            else:
                value = draw(paths if flag in PATH_FLAGS else values)
                argv += [dash + flag, value] if draw(st.booleans()) else [f"{dash}{flag}={value}"]
        cid = draw(st.sampled_from(["{id}", "{id}", "{id}", "", "..", "a/b", "{id}\n", "-x", "\udcff"]))
        argv.append(cid)
        argv += draw(st.lists(st.one_of(st.sampled_from(["true", "SIGTERM", "9", "--all", "-e"]), odd_text()),
                              max_size=2))
        return argv

    first = st.one_of(st.just(["create", "--bundle", bundle, "{id}"]), command())
    return st.lists(command(), max_size=2).flatmap(lambda rest: first.map(lambda f: [f, *rest]))
