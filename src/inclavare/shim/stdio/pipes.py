"""FIFO and file:// stdio: the process gets pipes; the shim copies them to the client's FIFOs or appends them to a file.

For an output FIFO the shim opens a reader first (non-blocking, so it never waits for the client) and then the writer:
the extra reader keeps the process's writes from failing with EPIPE while no client reads (ctr detached, containerd
restarting), as containerd-shim-runc-v2 keeps one. For the stdin FIFO the shim holds a writer of its own, so the
process sees end of file only once the client closed its end and CloseIO released the shim's.

Once copying started, each copy thread owns (and closes) the fds it uses; `close` releases only the rest, so that no
fd number is closed twice while a thread may still use it.
"""

from __future__ import annotations

import os
import stat
import time

from inclavare.shim import sync
from inclavare.shim.stdio import Stdio, StdioError, scheme
from inclavare.shim.stdio.copy import pump, pump_input

_O = os.O_CLOEXEC


def _open(path: str, flags: int, what: str) -> int:
    try:
        return os.open(path, flags | _O)
    except OSError as e:
        raise StdioError(f"cannot open the {what} {path}: {e.strerror}") from None


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def open_output(uri: str, what: str) -> tuple[int, int]:
    """(writer, extra reader or -1) for an output path: a FIFO, or a file appended to."""
    kind, path = scheme(uri)
    if kind == "file":
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, 0o755, exist_ok=True)
        return _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what), -1
    try:
        is_fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError as e:
        raise StdioError(f"cannot open the {what} {path}: {e.strerror}") from None
    if not is_fifo:
        return _open(path, os.O_WRONLY | os.O_APPEND, what), -1
    reader = _open(path, os.O_RDONLY | os.O_NONBLOCK, what)
    try:
        writer = _open(path, os.O_WRONLY, what)
    except BaseException:
        _close(reader)
        raise
    return writer, reader


class StdinFifo:
    """The client's stdin FIFO: a non-blocking reader for the copy, and the shim's own writer until CloseIO."""

    def __init__(self, path: str) -> None:
        self.reader = _open(path, os.O_RDONLY | os.O_NONBLOCK, "stdin FIFO")
        try:
            self.holder = _open(path, os.O_WRONLY | os.O_NONBLOCK, "stdin FIFO")
        except BaseException:
            _close(self.reader)
            raise
        self.wake_r, self.wake_w = os.pipe()
        self.copying = False
        self.lock = sync.Lock()

    def close_holder(self) -> None:
        with self.lock:
            fd, self.holder = self.holder, -1
        _close(fd)

    def copy_to(self, dst: int, done) -> None:  # noqa: ANN001 - called when the copy ends, dst closed by it
        self.copying = True
        reader, wake = self.reader, self.wake_r

        def finished() -> None:
            _close(reader, wake, dst)
            done()

        pump_input(reader, dst, wake, finished)

    def close(self) -> None:
        self.close_holder()
        if self.copying:
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass
            _close(self.wake_w)
        else:
            _close(self.reader, self.wake_r, self.wake_w)
        self.reader = self.wake_r = self.wake_w = -1


class PipeIO:
    def __init__(self, stdio: Stdio) -> None:
        self.stdio = stdio
        self.null = os.open("/dev/null", os.O_RDWR | _O)
        self.child = [self.null, self.null, self.null]
        self.extra_readers: list[int] = []
        self.outputs: list[tuple[int, int]] = []  # (pipe read end, destination)
        self.users: dict[int, int] = {}  # destination -> streams writing to it
        self.stdin: StdinFifo | None = None
        self.stdin_w = -1
        self.copies: list[sync.Event] = []
        self.lock = sync.Lock()
        self.running = False
        try:
            shared = -1
            for i, uri, what in ((1, stdio.stdout, "stdout FIFO"), (2, stdio.stderr, "stderr FIFO")):
                if not uri:
                    continue
                if i == 2 and shared >= 0 and uri == stdio.stdout:
                    dest = shared  # stdout and stderr append to the same file
                else:
                    dest, reader = open_output(uri, what)
                    if reader >= 0:
                        self.extra_readers.append(reader)
                    else:
                        shared = dest
                r, w = os.pipe()
                self.child[i] = w
                self.outputs.append((r, dest))
                self.users[dest] = self.users.get(dest, 0) + 1
            if stdio.stdin:
                self.stdin = StdinFifo(scheme(stdio.stdin)[1])
                self.child[0], self.stdin_w = os.pipe()
        except BaseException:
            self.close()
            raise

    def child_fds(self) -> tuple[int, int, int]:
        return self.child[0], self.child[1], self.child[2]

    def started(self) -> None:
        """The runtime gave the child ends to the process: drop ours and start copying."""
        _close(*({*self.child, self.null}))
        self.child, self.null = [-1, -1, -1], -1
        self.running = True
        for src, dest in self.outputs:
            ev = sync.Event()
            self.copies.append(ev)

            def done(src: int = src, dest: int = dest, ev: sync.Event = ev) -> None:
                with self.lock:
                    self.users[dest] -= 1
                    last = self.users[dest] == 0
                _close(src, *([dest] if last else []))
                ev.set()

            pump(src, dest, done)
        if self.stdin is not None:
            self.stdin.copy_to(self.stdin_w, lambda: None)
            self.stdin_w = -1

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close_holder()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(ev.wait(max(0.0, deadline - time.monotonic())) for ev in self.copies)

    def close(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
        _close(*self.extra_readers)
        self.extra_readers = []
        if not self.running:  # nothing was handed to a copy thread
            _close(*({*self.child, self.null}), self.stdin_w, *(src for src, _ in self.outputs), *self.users)
            self.child, self.null, self.stdin_w, self.outputs, self.users = [-1, -1, -1], -1, -1, [], {}
