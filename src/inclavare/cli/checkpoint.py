"""rune checkpoint [options] ID / rune restore [options] ID: need CRIU; they report why it cannot work here."""

from __future__ import annotations

from inclavare.cli import args as a

# runc's flags, accepted so that the error is about CRIU rather than about a flag
_STR = ("image-path", "work-path", "parent-path", "page-server", "manage-cgroups-mode", "empty-ns", "lsm-profile",
        "lsm-mount-context", "bundle", "b", "console-socket", "pid-file")  # fmt: skip
_BOOL = ("leave-running", "tcp-established", "ext-unix-sk", "shell-job", "lazy-pages", "file-locks",
         "pre-dump", "auto-dedup", "detach", "d", "no-subreaper", "no-pivot", "no-new-keyring")  # fmt: skip
FLAGS = {**{n: (a.STR, n) for n in _STR}, **{n: (a.BOOL, n) for n in _BOOL}, "status-fd": (a.INT, "status-fd")}


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    from inclavare.runtime import checkpoint as cp
    from inclavare.runtime.store import Container

    c = Container(g.root, cid)
    (cp.checkpoint if cmd == "checkpoint" else cp.restore)(c, g.criu)
    return 0
