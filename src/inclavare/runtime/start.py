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
    try:
        fd = os.open(container.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RuneError(f"cannot start container {container.id!r}: it was already started") from None
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
        failure = b""
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
    os.unlink(container.fifo_path)
    if failure.startswith(b"E"):
        raise RuneError(failure[1:].decode(errors="replace"))
    if failure:
        from inclavare.runtime.init import exec_failure

        failed = exec_failure(failure, (container.config(state).get("process") or {}).get("args", ["?"])[0])
        if failed:
            raise RuneError(failed)


def run_poststart(hooks: list, state: dict) -> None:
    """poststart failures are warnings (runtime spec): each is logged and the next hook runs."""
    from inclavare.cli import log
    from inclavare.oci import hooks as oci_hooks

    oci_hooks.run("poststart", hooks, oci_hooks.spec_state(state, "running"), warn=log.warning)
