"""SIGHUP, SIGINT and SIGTERM while rune makes or removes a container: it stops, but only after removing what it made.

    with Guard("creating container 'x'") as guard:
        with guard.deferred():       # a step that must not be cut in half (mkdir + lock, the removal itself)
            ...
        ...                          # elsewhere a stop signal raises Interrupted at once
        with guard.deferred():
            cleanup()
            with guard.interruptible():
                run_poststop_hooks()  # a signal here ends the hook (hooks.run kills it) and the cleanup goes on

A signal that arrives inside a deferred step is kept and raised as Interrupted when the outermost step ends.
"""

from __future__ import annotations

import _signal

from inclavare.errors import RuneError

STOP_SIGNALS = (_signal.SIGHUP, _signal.SIGINT, _signal.SIGTERM)
_NAMES = {_signal.SIGHUP: "SIGHUP", _signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM"}


class Interrupted(RuneError):
    """A stop signal arrived: what was made has been removed (or is being removed) before rune exits."""

    def __init__(self, signum: int, guard: Guard) -> None:
        super().__init__(f"rune was interrupted by signal {signum} ({_NAMES.get(signum, '?')}) while {guard.doing}; "
                         f"{guard.outcome}")
        self.signum = signum


class Guard:
    def __init__(self, doing: str, outcome: str = "what it had made was removed") -> None:
        self.doing = doing
        self.outcome = outcome
        self.pending = 0
        self._defer = 0
        self._saved: list = []

    def __enter__(self) -> Guard:
        self._saved = [(s, _signal.signal(s, self._handle)) for s in STOP_SIGNALS]
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved:
            _signal.signal(s, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self._defer:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum, self)

    def deferred(self) -> _Deferred:
        return _Deferred(self)

    def interruptible(self) -> _Interruptible:
        return _Interruptible(self)


class _Deferred:
    __slots__ = ("guard",)

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        self.guard._defer += 1

    def __exit__(self, exc_type: object, *_: object) -> None:
        g = self.guard
        g._defer -= 1
        if not g._defer and g.pending and exc_type is None:
            signum, g.pending = g.pending, 0
            raise Interrupted(signum, g)


class _Interruptible:
    """Inside a deferred step: a signal (or one already pending) raises Interrupted here."""

    __slots__ = ("guard", "depth")

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.depth = 0

    def __enter__(self) -> None:
        g = self.guard
        if g.pending:
            signum, g.pending = g.pending, 0
            raise Interrupted(signum, g)
        self.depth, g._defer = g._defer, 0

    def __exit__(self, *_: object) -> None:
        self.guard._defer = self.depth
