"""rune update [resource flags] [-r FILE|-] ID: change the container's resource limits."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError, q

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
    source = ""
    if p.resources:
        changes, source = _read_resources(p.resources)
    flags = {name: p.values[name] for name in _RESOURCE_FLAGS if p.values.get(name) is not None}
    if flags:
        changes = up.merge(changes, up.from_flags(flags))
    from inclavare.runtime.store import Container

    up.update(Container(g.root, cid), changes, source)
    return 0


def _read_resources(path: str) -> tuple[dict, str]:
    """The linux.resources object of --resources FILE (or - for stdin), validated; and how messages name it."""
    from inclavare.oci import config, jsonlite

    if path == "-":
        import sys

        name = "the resources on stdin"
        data = sys.stdin.buffer.read(config.MAX_BYTES + 1)
        if len(data) > config.MAX_BYTES:
            raise RuneError(f"{name}: larger than {config.MAX_BYTES >> 20} MiB")
        try:
            if jsonlite.too_deep(data):
                raise ValueError(f"arrays and objects are nested more than {jsonlite.MAX_DEPTH} levels deep")
            value = jsonlite.loads(data)
        except ValueError as e:
            raise RuneError(f"{name}: not valid JSON: {e}") from None
    else:
        name = q(path)
        try:
            value = jsonlite.read_json(path, config.MAX_BYTES)
        except OSError as e:
            raise RuneError(f"--resources {name}: cannot read: {e.strerror}") from None
    if type(value) is not dict:
        raise RuneError(f"{name}: must be a JSON object (linux.resources)")
    return value, name
