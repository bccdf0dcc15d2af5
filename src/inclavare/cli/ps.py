"""rune ps [--format table|json] ID [ps options]: the processes in the container's cgroup."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError

FLAGS = {"format": (a.STR, "format"), "f": (a.STR, "format")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p, extra=1)
    fmt = p.format or "table"
    if fmt not in ("table", "json"):
        raise RuneError(f"rune ps: invalid format option {fmt!r} (table or json)")
    from inclavare.runtime.status import status
    from inclavare.runtime.store import Container

    c = Container(g.root, cid)
    if not c.lock(shared=True):
        raise RuneError(f"container {cid!r} does not exist")
    try:
        state = c.read()
        if status(c, state) in ("stopped", "creating"):
            raise RuneError(f"container {cid!r} is not running")
        from inclavare.linux import cgroups

        pids = sorted(cgroups.Manager.from_paths(cid, state.get("cgroup_paths") or {}).pids())
    finally:
        c.unlock()
    if fmt == "json":
        import json

        print(json.dumps(pids or None))  # Go encodes an empty list as null
        return 0
    import subprocess

    ps_args = p.positional[1:] or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        raise RuneError("rune ps: the ps command is not installed (Debian package procps)") from None
    except subprocess.CalledProcessError as e:
        raise RuneError(f"rune ps: ps {' '.join(ps_args)} failed: {e.stderr.strip()}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise RuneError("rune ps: the ps output has no PID column")
    col = header.index("PID")
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0
