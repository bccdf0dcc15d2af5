"""rune pause ID / rune resume ID"""

from __future__ import annotations

from inclavare.cli import args as a


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, {})
    cid = a.need_id(cmd, p)
    from inclavare.runtime.pause import pause, resume
    from inclavare.runtime.store import Container

    (pause if cmd == "pause" else resume)(Container(g.root, cid))
    return 0
