"""rune list [--quiet] [--format table|json]"""

from __future__ import annotations

import os

from inclavare.cli import args as a
from inclavare.errors import RuneError

FLAGS = {"quiet": (a.BOOL, "quiet"), "q": (a.BOOL, "quiet"), "format": (a.STR, "format"), "f": (a.STR, "format")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    fmt = p.format or "table"
    if fmt not in ("table", "json"):
        raise RuneError(f"rune list: invalid format option {fmt!r} (table or json)")
    from inclavare.runtime.status import oci_state
    from inclavare.runtime.store import Container, list_ids

    rows = []
    for cid in list_ids(g.root):
        try:
            c = Container(g.root, cid)
            st = oci_state(c, c.read())
        except (RuneError, OSError):
            continue
        try:
            st["owner"] = _owner(os.stat(c.dir).st_uid)
        except FileNotFoundError:
            continue
        rows.append(st)
    if p.quiet:
        for r in rows:
            print(r["id"])
        return 0
    if fmt == "json":
        import json

        print(json.dumps(rows or None, separators=(",", ":")))
        return 0
    table = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    table += [[r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]] for r in rows]
    widths = [max(12, max(len(row[i]) for row in table) + 3) for i in range(5)]
    for row in table:
        print("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + row[5])
    return 0


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"#{uid}"
