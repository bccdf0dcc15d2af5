"""What verdictd's socket listeners share: an accept loop with a bound on concurrent connections (more are closed at
once), one thread per connection, a stop that wakes the loop; and reading one newline-terminated request."""

from __future__ import annotations

import socket
import threading
from typing import Any


class AcceptLoop:
    def __init__(self, sock: socket.socket, max_connections: int) -> None:
        self.sock = sock
        self.slots = threading.BoundedSemaphore(max_connections)
        self.stopped = False

    def handle(self, conn: socket.socket, addr: Any) -> None:
        raise NotImplementedError

    def _run(self, conn: socket.socket, addr: Any) -> None:
        try:
            self.handle(conn, addr)
        finally:
            self.slots.release()

    def serve_forever(self) -> None:
        while not self.stopped:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                if self.stopped:
                    return
                continue
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._run, args=(conn, addr), daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def read_line(sock: Any, limit: int) -> bytes | None:
    """Bytes up to the first newline (without it), or to end of file; None past `limit` bytes."""
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            return None
    return buf.split(b"\n", 1)[0]
