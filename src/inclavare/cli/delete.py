"""rune delete [--force] ID"""

from __future__ import annotations

from inclavare.cli import args as a

FLAGS = {"force": (a.BOOL, "force"), "f": (a.BOOL, "force")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    from inclavare.runtime.delete import delete
    from inclavare.runtime.store import Container

    delete(Container(g.root, cid), p.force)
    return 0
