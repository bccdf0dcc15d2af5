"""rune create [--bundle DIR] [--pid-file F] [--console-socket S] [--no-pivot] [--no-new-keyring]
[--preserve-fds N] ID"""

from __future__ import annotations

import os

from inclavare.cli import args as a

FLAGS = {
    "bundle": (a.STR, "bundle"), "b": (a.STR, "bundle"), "pid-file": (a.STR, "pid_file"),
    "console-socket": (a.STR, "console_socket"), "no-pivot": (a.BOOL, "no_pivot"),
    "no-new-keyring": (a.BOOL, "no_new_keyring"), "preserve-fds": (a.INT, "preserve_fds"),
}  # fmt: skip


def options(g, p: a.Args):
    from inclavare.runtime.create import Options

    o = Options()
    o.bundle = p.bundle or "."
    o.pid_file = p.pid_file or ""
    o.console_socket = p.console_socket or ""
    o.no_pivot = p.no_pivot
    o.no_new_keyring = p.no_new_keyring
    o.preserve_fds = a.fd_count("--preserve-fds", p.preserve_fds or 0)
    o.systemd_cgroup = g.systemd_cgroup
    o.rootless = g.rootless == "true" or (g.rootless == "auto" and os.geteuid() != 0)
    return o


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    from inclavare.linux import sealed_exe

    raw = sealed_exe.reexec_early(p.bundle or ".", "inclavare.cli.rune", g.root)  # a runtime library: sealed from here
    from inclavare.runtime.create import create

    o = options(g, p)
    o.config_raw = raw
    create(g.root, cid, o).sock.close()
    return 0
