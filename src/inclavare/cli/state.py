"""rune state ID: the runtime-spec state as indented JSON."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError


def main(g, cmd: str, argv: list[str]) -> int:
    cid = a.need_id(cmd, a.parse(cmd, argv, {}))
    import json

    from inclavare.runtime.status import oci_state
    from inclavare.runtime.store import Container

    c = Container(g.root, cid)
    if not c.lock():
        raise RuneError(f"container {cid!r} does not exist")
    try:
        print(json.dumps(oci_state(c, c.read()), indent=2))
    finally:
        c.unlock()
    return 0
