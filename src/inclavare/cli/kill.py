"""rune kill [--all] ID [SIGNAL]"""

from __future__ import annotations

from inclavare.cli import args as a

FLAGS = {"all": (a.BOOL, "all"), "a": (a.BOOL, "all")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p, extra=1)
    from inclavare.errors import RuneError
    from inclavare.runtime.kill import kill, parse_signal
    from inclavare.runtime.store import Container

    if len(p.positional) > 2:
        raise RuneError(f'rune kill: "kill" takes a container id and at most one signal, got {len(p.positional)} arguments')
    sig = parse_signal(p.positional[1]) if len(p.positional) > 1 else 15
    kill(Container(g.root, cid), sig, p.all)
    return 0
