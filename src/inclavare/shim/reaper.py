"""The shim is a child subreaper: every process it starts, and every container process orphaned below it, is reaped
here, on the main thread, which waits for SIGCHLD (blocked in every thread, so no handler races a waitpid).

Commands (rune invocations, logging binaries) are spawned through `Reaper.spawn`, which registers the pid under the
reaper's lock before the child can be reaped, so their exits go to their waiters. Every other exit (a container's init
or exec'd process, or an orphan) goes to `on_exit(pid, status)`, which must not block: the task service queues it.
Exit statuses are containerd's: the exit code, or 128 + the signal that killed the process.
"""

from __future__ import annotations

import _signal
import os

from inclavare.shim import sync

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SIGCHLD = 17
_RESET_SIGNALS = (13, 25)  # SIGPIPE, SIGXFSZ: Python ignores them, children must not inherit that


def exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Command:
    """A spawned process whose exit status is delivered by the reaper."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None
        self._done = sync.Event()

    def _set(self, status: int) -> None:
        self.status = status
        self._done.set()

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.status


class Reaper:
    def __init__(self) -> None:
        self.lock = sync.Lock()
        self.commands: dict[int, Command] = {}
        self.on_exit: Callable[[int, int], None] = lambda _pid, _status: None

    @staticmethod
    def block_sigchld() -> None:
        """Call on the main thread before any other thread starts: threads inherit the mask."""
        _signal.pthread_sigmask(_signal.SIG_BLOCK, {SIGCHLD})

    def spawn(self, argv: Sequence[str], fds: Sequence[int], env: dict[str, str] | None = None,
              extra: Sequence[int] = (), setsid: bool = False, path: str | None = None) -> Command:
        """Start argv[0] (an absolute path), or `path` with argv as it is, with fds as its 0, 1, 2 (then `extra` as
        3, 4, ...)."""
        targets = [*fds, *extra]
        # dup every source above the targets first, so that no dup2 overwrites a source still to be used (nor the fd
        # that `path` names, /proc/self/fd/N, which execve opens after the file actions)
        n = path.removeprefix("/proc/self/fd/") if path else ""
        named = [int(n)] if n != path and n.isdigit() else []
        actions: list[tuple] = []
        base = max([*targets, *named, 2]) + 1
        for i, fd in enumerate(targets):
            actions.append((os.POSIX_SPAWN_DUP2, fd, base + i))
        for i in range(len(targets)):
            actions.append((os.POSIX_SPAWN_DUP2, base + i, i))
            actions.append((os.POSIX_SPAWN_CLOSE, base + i))
        with self.lock:
            pid = os.posix_spawn(path or argv[0], list(argv), os.environ if env is None else env, file_actions=actions,
                                 setsigmask=(), setsigdef=_RESET_SIGNALS, setsid=setsid)
            cmd = Command(pid)
            self.commands[pid] = cmd
        return cmd

    def track(self, pid: int) -> Command:
        """A child started otherwise (forked), whose exit goes to the returned Command."""
        with self.lock:
            cmd = self.commands[pid] = Command(pid)
        return cmd

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            code = exit_status(status)
            with self.lock:
                cmd = self.commands.pop(pid, None)
            if cmd is not None:
                cmd._set(code)
            else:
                self.on_exit(pid, code)

    def run(self) -> None:
        """Reap forever (the main thread's loop)."""
        while True:
            _signal.sigwaitinfo({SIGCHLD})
            self.reap()
