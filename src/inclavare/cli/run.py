"""rune run [create's flags] [--detach] [--keep] [--no-subreaper] ID: create and start; in the foreground, wait
and return the container's exit status."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.cli.create import FLAGS as CREATE_FLAGS
from inclavare.cli.create import options

FLAGS = dict(CREATE_FLAGS, detach=(a.BOOL, "detach"), d=(a.BOOL, "detach"), keep=(a.BOOL, "keep"),
             **{"no-subreaper": (a.BOOL, "no_subreaper")})  # fmt: skip


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    from inclavare.linux import sealed_exe

    raw = sealed_exe.reexec_early(p.bundle or ".", "inclavare.cli.rune", g.root)  # a runtime library: sealed from here
    o = options(g, p)
    o.config_raw = raw
    o.detach = p.detach
    o.use_fifo = False
    o.subreaper = not p.no_subreaper
    from inclavare.runtime.run import run

    return run(g.root, cid, o, keep=p.keep)
