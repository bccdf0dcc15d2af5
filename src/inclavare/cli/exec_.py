"""rune exec [options] ID [COMMAND [ARGS...]]: run a new process inside a container.

As with runc, a failure to start the process exits with 255 (so that it is not mistaken for the exit status of the
process, which exec returns in the foreground).
"""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError

FLAGS = {
    "process": (a.STR, "process"), "p": (a.STR, "process"), "tty": (a.BOOL, "tty"), "t": (a.BOOL, "tty"),
    "console-socket": (a.STR, "console_socket"), "detach": (a.BOOL, "detach"), "d": (a.BOOL, "detach"),
    "pid-file": (a.STR, "pid_file"), "env": (a.LIST, "env"), "e": (a.LIST, "env"), "cwd": (a.STR, "cwd"),
    "user": (a.STR, "user"), "u": (a.STR, "user"), "additional-gids": (a.LIST, "additional_gids"),
    "g": (a.LIST, "additional_gids"), "cap": (a.LIST, "cap"), "c": (a.LIST, "cap"),
    "no-new-privs": (a.BOOL, "no_new_privs"), "process-label": (a.STR, "process_label"),
    "apparmor": (a.STR, "apparmor"), "preserve-fds": (a.INT, "preserve_fds"),
    "ignore-paused": (a.BOOL, "ignore_paused"), "cgroup": (a.LIST, "cgroup"),
}  # fmt: skip

EXEC_FAILED = 255


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p, extra=1)
    try:
        o = options(p)
        from inclavare.runtime.exec import exec_process

        return exec_process(g.root, cid, o)
    except RuneError as e:
        from inclavare.cli import log

        log.error(f"exec failed: {e}")
        return EXEC_FAILED


def options(p: a.Args):
    import os

    from inclavare.runtime.exec import ExecOptions

    o = ExecOptions()
    o.apparmor = p.apparmor or ""
    o.process_label = p.process_label or ""
    o.process_path = p.process or ""
    o.args = p.positional[1:]
    o.tty = p.tty
    o.console_socket = os.path.abspath(p.console_socket) if p.console_socket else ""
    o.detach = p.detach
    o.pid_file = p.pid_file or ""
    o.env = p.env
    o.cwd = p.cwd or ""
    o.user = p.user or ""
    for v in p.additional_gids:
        if not (v.isascii() and v.isdigit()) or int(v) > 0xFFFFFFFE:
            raise RuneError(f"--additional-gids {ascii(v)}: not a numeric group id (0 to 4294967294)")
        o.additional_gids.append(int(v))
    o.caps = p.cap
    o.no_new_privs = p.no_new_privs
    o.preserve_fds = a.fd_count("--preserve-fds", p.preserve_fds or 0)
    o.ignore_paused = p.ignore_paused
    o.cgroup = p.cgroup
    return o
