"""The few threading primitives the shim uses, on the `_thread` extension: `threading` imports functools,
collections and weakref (about 2 ms and 1 MB per shim), which the shim does not need."""

from __future__ import annotations

import _thread

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

Lock = _thread.allocate_lock
RLock = _thread.RLock


def spawn(fn: Callable[..., object], *args: object) -> None:
    """Run fn(*args) on a new thread (daemonic: the shim exits with os._exit)."""
    _thread.start_new_thread(fn, args)


class Event:
    """A latch: wait() blocks until set(); every waiter is released, now and later."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            try:
                self._lock.release()
            except RuntimeError:
                pass

    def clear(self) -> None:
        if self._set:
            self._lock.acquire()
            self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # hand the latch on to the next waiter
        return self._set
