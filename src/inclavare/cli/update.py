"""rune update [resource flags] [-r FILE|-] ID: change the container's resource limits."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError

_RESOURCE_FLAGS = ("memory", "memory-reservation", "memory-swap", "kernel-memory", "kernel-memory-tcp", "cpu-shares",
                   "cpu-quota", "cpu-period", "cpu-rt-runtime", "cpu-rt-period", "cpuset-cpus", "cpuset-mems",
                   "blkio-weight", "pids-limit")  # fmt: skip
FLAGS = {name: (a.STR, name) for name in _RESOURCE_FLAGS}
FLAGS.update({"resources": (a.STR, "resources"), "r": (a.STR, "resources"), "l3-cache-schema": (a.STR, "l3"),
              "mem-bw-schema": (a.STR, "membw")})


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    if p.l3 is not None or p.membw is not None:
        flag = "--l3-cache-schema" if p.l3 is not None else "--mem-bw-schema"
        raise RuneError(f"{flag}: Intel RDT (resctrl) is not supported by rune; drop the flag")
    from inclavare.runtime import update as up

    changes: dict = {}
    if p.resources:
        changes = _read_resources(p.resources)
    flags = {name: p.values[name] for name in _RESOURCE_FLAGS if p.values.get(name) is not None}
    if flags:
        changes = up.merge(changes, up.from_flags(flags))
    from inclavare.runtime.store import Container

    up.update(Container(g.root, cid), changes)
    return 0


def _read_resources(path: str) -> dict:
    import json
    import sys

    try:
        if path == "-":
            text = sys.stdin.read()
            name = "the resources on stdin"
        else:
            with open(path) as f:
                text = f.read()
            name = path
    except OSError as e:
        raise RuneError(f"--resources {path}: cannot read: {e.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise RuneError(f"{name}: not valid JSON: {e}") from None
    if type(value) is not dict:
        raise RuneError(f"{name}: must be a JSON object (linux.resources)")
    return value
