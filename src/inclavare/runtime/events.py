"""`events`: a container's resource usage as runc's JSON events, once (`--stats`) or as a stream every interval,
with "oom" events when the kernel's OOM killer acts in the container's memory cgroup.

    {"type": "stats", "id": ID, "data": {"cpu": ..., "memory": ..., "pids": ..., "blkio": ..., "hugetlb": ...}}
    {"type": "oom", "id": ID}

OOM events come from an eventfd registered on memory.oom_control (cgroup v1) or from the oom_kill counter of
memory.events (cgroup v2), which is checked at every wake-up.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from inclavare.errors import RuneError
from inclavare.runtime.status import status
from inclavare.runtime.store import Container

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str) -> float:
    """Seconds from a Go duration ("5s", "250ms", "1m30s") or a plain number of seconds."""
    t = text.strip()
    try:
        value = float(t)
    except ValueError:
        value = -1.0
        total = 0.0
        i = 0
        ok = bool(t)
        while ok and i < len(t):
            j = i
            while j < len(t) and (t[j].isdigit() or t[j] == "."):
                j += 1
            k = j
            while k < len(t) and not (t[k].isdigit() or t[k] == "."):
                k += 1
            unit = t[j:k]
            if j == i or unit not in _DURATION_UNITS:
                ok = False
                break
            total += float(t[i:j]) * _DURATION_UNITS[unit]
            i = k
        if ok:
            value = total
    if value <= 0:
        raise RuneError(f"--interval {text!r}: give a positive duration such as 5s or 500ms")
    return value


def _running_state(container: Container) -> dict:
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        state = container.read()
        st = status(container, state)
    finally:
        container.unlock()
    if st in ("stopped", "creating") or state is None:
        raise RuneError(f"container {container.id!r} is not running ({st})")
    return state


def _manager(container: Container, state: dict):
    from inclavare.linux import cgroups

    if not state.get("cgroup_paths"):
        raise RuneError(f"container {container.id!r} has no cgroup to report on")
    return cgroups.Manager.from_paths(container.id, state["cgroup_paths"])


def stats(container: Container) -> dict:
    state = _running_state(container)
    return {"type": "stats", "id": container.id, "data": _manager(container, state).stats()}


def stream(container: Container, interval: float, emit: Callable[[dict], None]) -> None:
    """Emit a stats event every interval and an oom event when one happens, until the container stops."""
    state = _running_state(container)
    mgr = _manager(container, state)
    watch = _OomWatch(state.get("cgroup_paths") or {})
    try:
        next_stats = time.monotonic()
        while True:
            if not _alive(container):
                return
            now = time.monotonic()
            if now >= next_stats:
                try:
                    data = mgr.stats()
                except OSError:
                    return  # the cgroup is gone: the container was deleted
                emit({"type": "stats", "id": container.id, "data": data})
                next_stats = now + interval
            if watch.wait(max(0.0, min(next_stats - time.monotonic(), 1.0))):
                emit({"type": "oom", "id": container.id})
    finally:
        watch.close()


def _alive(container: Container) -> bool:
    if not os.path.isdir(container.dir):
        return False
    try:
        return status(container, container.read()) not in ("stopped", "creating")
    except RuneError:
        return False


class _OomWatch:
    """OOM notifications of the container's memory cgroup."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.efd = -1
        self.events_path = ""
        self.kills = 0
        mem = paths.get("memory")
        if mem:
            try:
                self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                ofd = os.open(mem + "/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    with open(mem + "/cgroup.event_control", "w") as f:
                        f.write(f"{self.efd} {ofd}")
                finally:
                    os.close(ofd)
            except OSError:
                self.close()
        else:
            unified = paths.get("unified", paths.get(""))
            if unified and os.path.exists(unified + "/memory.events"):
                self.events_path = unified + "/memory.events"
                self.kills = self._v2_kills()

    def _v2_kills(self) -> int:
        try:
            with open(self.events_path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return self.kills

    def wait(self, timeout: float) -> bool:
        """Sleep up to timeout; True if an OOM happened."""
        if self.efd >= 0:
            ready, _, _ = select.select([self.efd], [], [], timeout)
            if ready:
                try:
                    os.eventfd_read(self.efd)
                except BlockingIOError:
                    return False
                return True
            return False
        time.sleep(timeout)
        if self.events_path:
            kills = self._v2_kills()
            if kills > self.kills:
                self.kills = kills
                return True
        return False

    def close(self) -> None:
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1
