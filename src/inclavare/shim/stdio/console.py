"""Terminals: the runtime creates the pty and sends its master over a console socket (--console-socket), as runc
does; the shim copies the stdin FIFO to the master and the master to the stdout FIFO (stderr is unused), and
ResizePty sets the master's window size.
"""

from __future__ import annotations

import _socket
import os
import shutil
import tempfile

from inclavare.linux import console as pty
from inclavare.shim import sync
from inclavare.shim.stdio import Stdio, StdioError, scheme
from inclavare.shim.stdio.copy import pump
from inclavare.shim.stdio.pipes import StdinFifo, _close, open_output

RECEIVE_TIMEOUT = 30.0


class ConsoleSocket:
    """A unix socket in a private temporary directory that receives one pty master."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rune-shim-pty-")
        self.path = os.path.join(self.dir, "pty.sock")
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)

    def receive(self) -> int:
        self.sock.settimeout(RECEIVE_TIMEOUT)
        try:
            fd, _ = self.sock._accept()
        except OSError as e:
            raise StdioError(f"the runtime sent no terminal on its console socket: {e}") from None
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        try:
            conn.settimeout(RECEIVE_TIMEOUT)
            _data, fds = pty.recv_fds(conn, 4096, 1)
        finally:
            conn.close()
        if not fds:
            raise StdioError("the runtime's console socket message carried no terminal")
        return fds[0]

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ConsoleIO:
    def __init__(self, stdio: Stdio) -> None:
        self.stdio = stdio
        self.socket = ConsoleSocket()
        self.null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.master = -1
        self.stdin: StdinFifo | None = None
        self.out = self.extra = -1
        self.copied = sync.Event()
        self.lock = sync.Lock()
        self.running = False
        self.closed = False
        try:
            if stdio.stdin:
                self.stdin = StdinFifo(scheme(stdio.stdin)[1])
            if stdio.stdout:
                self.out, self.extra = open_output(stdio.stdout, "stdout FIFO")
        except BaseException:
            self.close()
            raise

    @property
    def console_socket(self) -> str:
        return self.socket.path

    def child_fds(self) -> tuple[int, int, int]:
        return self.null, self.null, self.null

    def started(self) -> None:
        """The runtime created the pty: take its master and start copying."""
        _close(self.null)
        self.null = -1
        try:
            master = self.socket.receive()
        finally:
            self.socket.close()
        self.master = master
        self.running = True
        if self.out >= 0:
            out = self.out
            self.out = -1

            def done() -> None:
                _close(out)
                with self.lock:
                    self.copied.set()
                    if self.closed:
                        self._close_master()

            pump(master, out, done)
        else:
            self.copied.set()
        if self.stdin is not None:
            self.stdin.copy_to(os.dup(master), lambda: None)

    def resize(self, width: int, height: int) -> None:
        with self.lock:
            if self.master >= 0:
                pty.set_size(self.master, height, width)

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close_holder()

    def wait(self, timeout: float) -> bool:
        return self.copied.wait(timeout)

    def close(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
        _close(self.extra, self.null, self.out)
        self.extra = self.null = self.out = -1
        if not self.running:
            self.socket.close()
        # the master stays open while the output copy reads it: whichever of the two ends last closes it
        with self.lock:
            self.closed = True
            if self.copied.is_set():
                self._close_master()

    def _close_master(self) -> None:
        _close(self.master)
        self.master = -1
