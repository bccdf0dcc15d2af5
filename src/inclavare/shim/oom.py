"""OOM events: TaskOOM when the kernel's OOM killer hits a container's memory cgroup.

cgroup v1 (and hybrid hosts, where memory is a v1 controller): an eventfd registered on memory.oom_control through
cgroup.event_control, which also fires once the cgroup is removed. cgroup v2: memory.events, whose changes wake a
poll for POLLPRI; an increase of its oom_kill count is an OOM kill.
"""

from __future__ import annotations

import os
import select

from inclavare.shim import sync

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

CGROUP = "/sys/fs/cgroup"


def memory_cgroup(pid: int) -> tuple[str, str] | None:
    """("v1" | "v2", directory) of the memory cgroup of pid, None when it has none."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = os.path.exists(f"{CGROUP}/cgroup.controllers")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if unified and controllers == "":
            return "v2", CGROUP + path
        if not unified and "memory" in controllers.split(","):
            return "v1", f"{CGROUP}/{controllers}{path}"
    return None


def _oom_kills(fd: int) -> int:
    data = os.pread(fd, 4096, 0).decode(errors="replace")
    for line in data.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value or 0)
    return 0


class Watcher:
    def __init__(self, on_oom: Callable[[str], None], log: Callable[[str], None]) -> None:
        self.on_oom = on_oom
        self.log = log
        self.epoll = select.epoll()
        self.lock = sync.Lock()
        self.watched: dict[int, tuple[str, str, str, int]] = {}  # fd -> (cid, kind, directory, oom kills)
        sync.spawn(self._run)

    def add(self, cid: str, pid: int) -> None:
        found = memory_cgroup(pid)
        if found is None:
            return
        kind, directory = found
        try:
            if kind == "v1":
                efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                cfd = os.open(f"{directory}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    with open(f"{directory}/cgroup.event_control", "w") as f:
                        f.write(f"{efd} {cfd}")
                finally:
                    os.close(cfd)
                fd, kills, mask = efd, 0, select.EPOLLIN
            else:
                fd = os.open(f"{directory}/memory.events", os.O_RDONLY | os.O_CLOEXEC)
                kills, mask = _oom_kills(fd), select.EPOLLPRI | select.EPOLLERR
        except OSError as e:
            self.log(f"cannot watch {cid} for OOM kills in {directory}: {e}")
            return
        with self.lock:
            self.watched[fd] = (cid, kind, directory, kills)
        self.epoll.register(fd, mask)

    def remove(self, cid: str) -> None:
        with self.lock:
            for fd in [fd for fd, w in self.watched.items() if w[0] == cid]:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        """Stop watching fd (the lock held: the watch thread touches fds only under it)."""
        del self.watched[fd]
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass
        os.close(fd)

    def _run(self) -> None:
        while True:
            try:
                events = self.epoll.poll()
            except InterruptedError:
                continue
            hits = []
            with self.lock:
                for fd, _mask in events:
                    w = self.watched.get(fd)
                    if w is None:
                        continue
                    cid, kind, directory, kills = w
                    try:
                        if kind == "v1":
                            os.eventfd_read(fd)
                            if os.path.isdir(directory):
                                hits.append(cid)
                            else:  # the eventfd also fires when the cgroup is removed
                                self._drop(fd)
                        else:
                            now = _oom_kills(fd)
                            if now > kills:
                                hits.append(cid)
                            self.watched[fd] = (cid, kind, directory, now)
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._drop(fd)
            for cid in hits:
                self.on_oom(cid)
