"""A container's processes as the task service sees them: the init (init.py) and exec'd processes (exec.py), each a
small state machine (created, running, paused, stopped, deleted) over the runtime, as pkg/process in containerd.

Errors a client can cause or see are TtrpcError with the code containerd maps to its errdefs.
"""

from __future__ import annotations

import time

from inclavare.shim import api, sync
from inclavare.shim.stdio import Stdio
from inclavare.shim.ttrpc import FAILED_PRECONDITION, NOT_FOUND, UNKNOWN, TtrpcError

IO_WAIT = 2.0  # how long Delete waits for the output to be copied, as runc's shim


def kill_error(message: str) -> TtrpcError:
    """A failed kill in containerd's words: a process that is gone is NotFound."""
    low = message.lower()
    if "not running" in low or "no such process" in low or "already finished" in low:
        return TtrpcError(NOT_FOUND, "process already finished: not found")
    if "does not exist" in low:
        return TtrpcError(NOT_FOUND, "no such container: not found")
    return TtrpcError(UNKNOWN, f"unknown error after kill: {message}")


def precondition(message: str) -> TtrpcError:
    return TtrpcError(FAILED_PRECONDITION, message)


class Process:
    """What init and exec'd processes share: identity, stdio, exit status and the latch Wait blocks on."""

    def __init__(self, pid_id: str, stdio: Stdio) -> None:
        self.id = pid_id
        self.stdio = stdio
        self.pid = 0
        self.state = "created"
        self.exit_status = 0
        self.exited_ns = 0
        self.io = None  # one of the stdio kinds, once created
        self.lock = sync.RLock()
        self.done = sync.Event()

    def set_exited(self, status: int) -> None:
        with self.lock:
            if self.state in ("stopped", "deleted"):
                return
            self.exit_status = status
            self.exited_ns = time.time_ns()
            self.state = "stopped"
            self.done.set()

    def wait(self) -> None:
        self.done.wait()

    def exited_at(self) -> api.Timestamp | None:
        return api.Timestamp.from_ns(self.exited_ns) if self.exited_ns else None

    def close_stdin(self) -> None:
        if self.io is not None:
            self.io.close_stdin()

    def resize(self, width: int, height: int) -> None:
        resize = getattr(self.io, "resize", None)
        if resize is not None:
            resize(width, height)

    def release_io(self) -> None:
        if self.io is not None:
            self.io.wait(IO_WAIT)
            self.io.close()
