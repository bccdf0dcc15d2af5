"""rune events [--stats] [--interval DURATION] ID: runc's JSON events of a container (stats, oom)."""

from __future__ import annotations

from inclavare.cli import args as a

FLAGS = {"stats": (a.BOOL, "stats"), "interval": (a.STR, "interval")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    import json
    import sys

    from inclavare.runtime import events
    from inclavare.runtime.store import Container

    c = Container(g.root, cid)
    if p.stats:
        print(json.dumps(events.stats(c), separators=(",", ":")))
        return 0
    interval = events.parse_interval(p.interval) if p.interval is not None else 5.0

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    try:
        events.stream(c, interval, emit)
    except BrokenPipeError:
        pass
    return 0
