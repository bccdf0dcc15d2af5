"""A process's stdio as containerd describes it (three paths and a terminal flag), one module per kind:

- null (every path empty, as CRI's sandboxes): /dev/null;
- fifo (a bare path or fifo://), and file:// : pipes.py, the process writes to pipes the shim copies to the FIFOs
  (or appends to the file), as containerd-shim-runc-v2 does;
- binary://PATH?ARGS: binary.py, a logging binary started by the shim that reads the process's pipes;
- a terminal: console.py, the pty master the runtime sends over a console socket, copied to and from the FIFOs.

Every kind gives the runtime three fds (`child_fds`), starts copying once the runtime has handed them to the process
(`started`), and answers `close_stdin` (CloseIO), `wait` (output copied) and `close`.
"""

from __future__ import annotations

import os


class Stdio:
    def __init__(self, stdin: str = "", stdout: str = "", stderr: str = "", terminal: bool = False) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal

    @property
    def null(self) -> bool:
        return not (self.stdin or self.stdout or self.stderr)


class StdioError(Exception):
    """A stdio path the shim cannot use; str() names it."""


class NullIO:
    def __init__(self) -> None:
        self.null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)

    def child_fds(self) -> tuple[int, int, int]:
        return self.null, self.null, self.null

    def started(self) -> None:
        self._close_null()

    def close_stdin(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self._close_null()

    def _close_null(self) -> None:
        if self.null >= 0:
            os.close(self.null)
            self.null = -1


def scheme(uri: str) -> tuple[str, str]:
    """(kind, rest) of a stdio path: fifo (bare path or fifo://), file://, binary://."""
    for kind in ("fifo", "file", "binary"):
        if uri.startswith(kind + "://"):
            return kind, uri[len(kind) + 3:]
    if "://" in uri:
        raise StdioError(f"unknown stdio scheme in {uri!r}: use a FIFO path, fifo://, file:// or binary://")
    return "fifo", uri


def open_io(stdio: Stdio, spawn, cid: str, namespace: str):  # noqa: ANN001, ANN201 - one of the IO kinds
    """The IO of a process without a terminal."""
    if stdio.null:
        return NullIO()
    kind, _ = scheme(stdio.stdout or stdio.stderr or stdio.stdin)
    if kind == "binary":
        from inclavare.shim.stdio.binary import BinaryIO

        return BinaryIO(stdio, spawn, cid, namespace)
    from inclavare.shim.stdio.pipes import PipeIO

    return PipeIO(stdio)
