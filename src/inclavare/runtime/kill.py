"""`kill`: send a signal to a container's init, or with --all to every process in its cgroup."""

from __future__ import annotations

import os

from inclavare.errors import RuneError
from inclavare.runtime.status import status
from inclavare.runtime.store import Container


def parse_signal(text: str) -> int:
    import _signal

    if text.isascii() and text.isdigit():
        n = int(text) if len(text) < 8 else 0
        if 0 < n < _signal.NSIG:
            return n
        raise RuneError(f"invalid signal {ascii(text)}")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base = _signal.SIGRTMIN if "MIN" in name else _signal.SIGRTMAX
        off = name[9:]
        if off.isascii() and off.isdigit() and len(off) < 8:
            n = base + int(off) if "MIN" in name else base - int(off)
            if _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
                return n
        raise RuneError(f"invalid signal {ascii(text)}")
    n = getattr(_signal, name, None)
    if not isinstance(n, int) or name.startswith("SIG_"):
        raise RuneError(f"unknown signal {ascii(text)}")
    return n


def kill(container: Container, sig: int, all_processes: bool) -> None:
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        state = container.read()
        st = status(container, state)
        if st in ("stopped", "creating"):
            if all_processes and st == "stopped":
                signal_cgroup(state, sig)  # strays of a container without its own pid namespace
                return
            raise RuneError(f"container {container.id!r} is not running")
        if all_processes and signal_cgroup(state, sig):
            return
        # without --all, or with no cgroup to list (--rootless without cgroups): the init
        try:
            os.kill(state["pid"], sig)
        except ProcessLookupError:
            raise RuneError(f"container {container.id!r} is not running") from None
    finally:
        container.unlock()


def signal_cgroup(state: dict | None, sig: int) -> int:
    """Signal every process in the container's cgroup (thawing a frozen one so that it can die); how many."""
    if not state or not state.get("cgroup_paths"):
        return 0
    from inclavare.linux import cgroups

    mgr = cgroups.Manager.from_paths(state["id"], state["cgroup_paths"])
    try:
        pids = mgr.pids()
    except OSError:
        return 0
    frozen = False
    if sig == 9 and state.get("paused"):
        frozen = True
    n = 0
    for p in pids:
        try:
            os.kill(p, sig)
            n += 1
        except ProcessLookupError:
            pass
    if frozen:
        try:
            mgr.thaw()
        except OSError:
            pass
    return n
