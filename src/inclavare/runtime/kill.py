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
        if not signal_init(state["pid"], state.get("init_start"), sig):
            raise RuneError(f"container {container.id!r} is not running")
    finally:
        container.unlock()


def signal_init(pid: int, start_time: int | None, sig: int) -> bool:
    """Signal the init through a pidfd taken before its start time is checked: the signal reaches that process or
    none, never one that reused its pid after it exited (as runc does with pidfd_send_signal). False if it is gone."""
    from inclavare.linux import proc, syscalls

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError as e:
        if e.errno != 38:  # ENOSYS: a kernel before 5.3; kill(2) after the start-time check, as before
            raise
        if not proc.alive(pid, start_time):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True
    try:
        if not proc.alive(pid, start_time):  # the pidfd is of this pid now: of the init only if it started then
            return False
        syscalls.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


def signal_cgroup(state: dict | None, sig: int) -> int:
    """Signal every process in the container's cgroup, frozen meanwhile (a paused one is thawed after a SIGKILL so
    that it can die); how many."""
    if not state or not state.get("cgroup_paths"):
        return 0
    from inclavare.linux import cgroups

    mgr = cgroups.Manager.from_paths(state["id"], state["cgroup_paths"])
    try:
        pids = mgr.pids()
    except OSError:
        return 0
    if not pids:
        return 0  # nothing in it can fork: no freeze needed (delete after the init is gone, every time)
    paused = bool(state.get("paused"))
    # frozen while listed and signalled, as runc does: no process can fork a child that the list misses
    froze = False
    if not paused:
        try:
            mgr.freeze()
            froze = True
            pids = mgr.pids()
        except (OSError, RuneError):
            pass  # no freezer here: signalled as listed
    n = 0
    try:
        for p in pids:
            try:
                os.kill(p, sig)
                n += 1
            except ProcessLookupError:
                pass
    finally:
        if froze or (paused and sig == 9):  # a paused container stays paused, unless killed (frozen, it cannot die)
            try:
                mgr.thaw()
            except (OSError, RuneError):
                pass
    return n
