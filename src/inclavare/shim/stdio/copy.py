"""The copy loops between a process's pipes (or pty master) and the client's FIFOs, one thread per stream.

Output (`pump`) moves data with splice(2) (both ends are pipes: the process's pipe and the FIFO), falling back to
read/write for a pty master, until the source reaches end of file (every writer, the process and its children,
closed it) or reports EIO (a pty whose slave side is gone). Input (`pump_input`) waits with select(2) on the client's
FIFO and on a wake-up pipe, so that closing the process's IO ends it even when the client keeps its end open.
"""

from __future__ import annotations

import errno
import os
import select

from inclavare.shim import sync

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK = 1 << 16


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy(src: int, dst: int) -> None:
    use_splice = True
    while True:
        try:
            if use_splice:
                n = os.splice(src, dst, CHUNK)
                if n == 0:
                    return
                continue
            data = os.read(src, CHUNK)
            if not data:
                return
            _write_all(dst, data)
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.EINVAL and use_splice:
                use_splice = False  # not a pipe on one side (a pty master, a regular file on old kernels)
                continue
            if e.errno in (errno.EIO, errno.EPIPE, errno.EBADF, errno.ENXIO):
                return
            raise


def pump(src: int, dst: int, done: Callable[[], None]) -> None:
    def run() -> None:
        try:
            _copy(src, dst)
        except OSError:
            pass
        finally:
            done()

    sync.spawn(run)


def pump_input(src: int, dst: int, wake: int, done: Callable[[], None]) -> None:
    """Copy src (a FIFO opened non-blocking) to dst until end of file on src or a byte on `wake`."""

    def run() -> None:
        try:
            while True:
                r, _, _ = select.select([src, wake], [], [])
                if wake in r:
                    return
                try:
                    data = os.read(src, CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return
                _write_all(dst, data)
        except OSError:
            pass
        finally:
            done()

    sync.spawn(run)
