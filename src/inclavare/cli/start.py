"""rune start ID"""

from __future__ import annotations

from inclavare.cli import args as a


def main(g, cmd: str, argv: list[str]) -> int:
    cid = a.need_id(cmd, a.parse(cmd, argv, {}))
    from inclavare.runtime.start import start
    from inclavare.runtime.store import Container

    start(Container(g.root, cid))
    return 0
