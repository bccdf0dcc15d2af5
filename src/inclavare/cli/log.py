"""rune's log: errors on stderr, and every message in the --log file (text or JSON lines, as runc writes them)."""

from __future__ import annotations

import os
import sys
import time

path = ""
fmt = "text"
debug_enabled = False
quiet_warnings = False  # --log-level error (or fatal, panic): warnings are not written
# --log-level values, as runc (logrus) reads them
LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")


def set_level(name: str) -> bool:
    """--log-level NAME; False if it is no level."""
    global debug_enabled, quiet_warnings
    if name not in LEVELS:
        return False
    debug_enabled = name in ("debug", "trace")
    quiet_warnings = name in ("panic", "fatal", "error")
    return True


def _stamp() -> str:
    t = time.time_ns()
    s, frac = divmod(t, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def one_line(msg: str) -> str:
    """The message with every character that would not print as itself escaped: one message is one line."""
    if msg.isprintable():
        return msg
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in msg)


def _line(level: str, msg: str) -> str:
    if fmt == "json":
        from inclavare.oci import jsonlite

        return jsonlite.dumps({"level": level, "msg": msg, "time": _stamp()}) + "\n"
    quoted = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{_stamp()}" level={level} msg="{quoted}"\n'


def write(level: str, msg: str) -> None:
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, _line(level, msg).encode(errors="backslashreplace"))
    finally:
        os.close(fd)


def error(msg: str) -> None:
    msg = one_line(msg)
    write("error", msg)
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def warning(msg: str) -> None:
    if quiet_warnings:
        return
    msg = one_line(msg)
    write("warning", msg)
    sys.stderr.write("warning: " + msg + "\n")


def debug(msg: str) -> None:
    if debug_enabled:
        msg = one_line(msg)
        write("debug", msg)
        if not path:
            sys.stderr.write("debug: " + msg + "\n")
