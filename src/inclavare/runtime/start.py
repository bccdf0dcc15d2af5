"""`start`: release a created container's init from the exec fifo, then run the poststart hooks."""

from __future__ import annotations

import os
import time

from inclavare.errors import RuneError
from inclavare.linux import proc
from inclavare.runtime.status import status
from inclavare.runtime.store import Container


def start(container: Container) -> None:
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        state = container.read()
        st = status(container, state)
        if st != "created":
            if st == "stopped":
                raise RuneError(f"cannot start container {container.id!r}: it has stopped")
            raise RuneError(f"cannot start container {container.id!r}: it is {st}, not created")
        release(container, state)
        poststart = container.hooks(state, "poststart")
        if poststart:
            run_poststart(poststart, state)
    finally:
        container.unlock()


def release(container: Container, state: dict) -> None:
    """Open the fifo (which unblocks the init's open for writing), read its byte, remove the fifo."""
    pid = state["pid"]
    stderr = _container_stderr(pid)  # before the fifo is opened, which lets the init go on
    try:
        fd = os.open(container.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if stderr >= 0:
            os.close(stderr)
        raise RuneError(f"cannot start container {container.id!r}: it was already started") from None
    failure = b""
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + 10
        # the init is blocked opening the fifo for writing: our open lets it go on, and it writes one byte
        while not (poller.poll(10) and os.read(fd, 1)):
            if not proc.alive(pid, state.get("init_start")):
                raise RuneError(f"cannot start container {container.id!r}: its init process has exited")
            if time.monotonic() > deadline:
                raise RuneError(f"cannot start container {container.id!r}: its init process does not answer")
        # then it runs the startContainer hooks and execs, which closes its end: wait for that end of file, or for
        # the message it writes when a hook or the exec failed
        while True:
            if poller.poll(100):
                data = os.read(fd, 4096)
                if not data:
                    break
                failure += data
            elif not proc.alive(pid, state.get("init_start")):
                break
    finally:
        os.close(fd)
        if stderr >= 0 and failure[:1] != b"X":
            os.close(stderr)
    os.unlink(container.fifo_path)
    if failure.startswith(b"E"):
        raise RuneError(failure[1:].decode(errors="replace"))
    if failure:
        from inclavare.linux import dmz

        errno = dmz.failure(failure)
        if errno is not None:
            # the container started and its program could not be exec'd: as with runc, `start` succeeds and the
            # container exits 1 with the error on its stderr (what `docker logs` and CRI logs show)
            exec_failed(state, (container.config(state).get("process") or {}).get("args", ["?"])[0], errno,
                        stderr)
        elif stderr >= 0:
            os.close(stderr)


def _container_stderr(pid: int) -> int:
    """The init's stderr, opened before the fifo lets the init go on (after a failed execve it is gone), to report
    that failure where runc's init writes it; -1 where it cannot be opened (a socket, a closed fd). Through /proc
    rather than pidfd_getfd, which would bring ctypes onto `start`'s path."""
    try:
        return os.open(f"/proc/{pid}/fd/2", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return -1


def exec_failed(state: dict, program: str, errno: int, stderr: int) -> None:
    from inclavare.cli import log
    from inclavare.runtime.init import exec_failure

    log.warning(f"container {state.get('id')!r} started, but its program could not run: "
                f"{exec_failure(b'X%d' % errno, program)}")
    if stderr >= 0:
        text = os.strerror(errno)
        try:
            os.write(stderr, f"exec {program}: {text[:1].lower()}{text[1:]}\n".encode(errors="replace"))
        except OSError:
            pass
        finally:
            os.close(stderr)


def run_poststart(hooks: list, state: dict) -> None:
    """poststart failures are warnings (runtime spec): each is logged and the next hook runs."""
    from inclavare.cli import log
    from inclavare.oci import hooks as oci_hooks

    oci_hooks.run("poststart", hooks, oci_hooks.spec_state(state, "running"), warn=log.warning)
