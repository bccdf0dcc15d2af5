"""Reading /proc for process liveness and identity."""

from __future__ import annotations


def stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may contain spaces or parentheses itself
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19])


def alive(pid: int, start_time: int | None = None) -> bool:
    """True if pid runs (not a zombie) and, when given, started at start_time (guards against pid reuse)."""
    if pid <= 0:
        return False
    st = stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start_time is None or st[1] == start_time
