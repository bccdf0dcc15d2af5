"""rune state ID: the runtime-spec state as indented JSON."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError


def main(g, cmd: str, argv: list[str]) -> int:
    cid = a.need_id(cmd, a.parse(cmd, argv, {}))
    from inclavare.oci.jsonlite import dumps_indent
    from inclavare.runtime.status import oci_state
    from inclavare.runtime.store import Container

    c = Container(g.root, cid)
    if not c.lock(shared=True):
        raise RuneError(f"container {cid!r} does not exist")
    try:
        print(dumps_indent(oci_state(c, c.read())))
    finally:
        c.unlock()
    return 0
