"""`delete`: remove a stopped (or created, or with --force running) container and everything it left."""

from __future__ import annotations

import os
import time

from inclavare.errors import RuneError
from inclavare.linux import proc
from inclavare.runtime.kill import signal_cgroup
from inclavare.runtime.status import status
from inclavare.runtime.store import Container


def delete(container: Container, force: bool) -> None:
    from inclavare.runtime.interrupt import Guard

    with Guard(f"deleting container {container.id!r}", "the container was removed all the same") as guard:
        if not container.lock():
            if force:
                return
            raise RuneError(f"container {container.id!r} does not exist")
        try:
            try:
                state = container.read()
            except RuneError:
                if not force:
                    raise
                # a corrupt state.json: --force removes what can be found without it
                with guard.deferred():
                    _remove_unreadable(container)
                return
            try:
                container.hooks(state, "poststop")  # config.json, when it holds them: read before anything is done
            except RuneError:
                if not force:
                    raise
                assert state is not None
                state["hooks"] = []  # a corrupt config.json: --force removes the container without its hooks
            st = status(container, state)
            if st in ("running", "paused") and not force:
                raise RuneError(f"cannot delete container {container.id!r} that is not stopped: {st} (use --force)")
            if st == "creating" and not force and state is None:
                raise RuneError(f"container {container.id!r} is being created (use --force to remove it)")
            with guard.deferred():
                destroy(container, state, st, guard)
        finally:
            container.unlock()


def _remove_unreadable(container: Container) -> None:
    """The cgroups a default cgroupsPath would have given the container, then its directory."""
    try:
        from inclavare.linux import cgroups

        mgr = cgroups.Manager(container.id, None)
        remove_cgroup({"id": container.id, "cgroup_paths": mgr.paths})
    except (OSError, RuneError):
        pass
    container.remove()


def destroy(container: Container, state: dict | None, st: str, guard=None) -> None:  # noqa: ANN001
    """Kill what runs, remove the cgroups, run the poststop hooks (a failure of theirs is a warning, and a stop
    signal ends them), then remove the state directory: whatever the hooks do, the container is gone after. A cgroup
    that cannot be removed keeps the state, so that the delete can be retried."""
    if state is not None:
        pid = state.get("pid") or 0
        if st != "stopped" and pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            if state.get("paused"):
                _thaw(state)  # a frozen process does not die until thawed
            wait_gone(pid, state.get("init_start"))
        remove_cgroup(state)
        poststop = container.hooks(state, "poststop") if pid else []
        if poststop:
            _poststop(poststop, state, guard)
    container.remove()


def _poststop(hooks: list, state: dict, guard) -> None:  # noqa: ANN001
    from inclavare.cli import log
    from inclavare.oci import hooks as oci_hooks

    spec = oci_hooks.spec_state(state, "stopped", pid=0)
    try:
        if guard is None:
            oci_hooks.run("poststop", hooks, spec, warn=log.warning)
        else:
            with guard.interruptible():
                oci_hooks.run("poststop", hooks, spec, warn=log.warning)
    except Exception as e:  # noqa: BLE001 - the container is removed whatever its hooks do
        log.warning(f"hooks.poststop: cannot be run: {type(e).__name__}: {e}")


def _thaw(state: dict) -> None:
    from inclavare.linux import cgroups

    try:
        cgroups.Manager.from_paths(state["id"], state.get("cgroup_paths") or {}).thaw()
    except (OSError, RuneError):
        pass


def wait_child(pid: int, timeout: float) -> None:
    """Reap a child process, SIGKILLed if it has not exited within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    try:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    except (ChildProcessError, ProcessLookupError):
        pass


def wait_gone(pid: int, start: int | None, timeout: float = 10.0) -> None:
    """Until the process (of that start time) has exited, at most `timeout` seconds; reaped if it is our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:
        fd = -1  # a kernel before 5.3: polled below
    if fd >= 0:
        try:
            if proc.alive(pid, start):  # the pidfd is of that process, not of one that reused its pid
                import select

                poller = select.poll()
                poller.register(fd, select.POLLIN)
                poller.poll(int(timeout * 1000))  # readable once it has exited (a zombie, or reaped)
        finally:
            os.close(fd)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while proc.alive(pid, start) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def remove_cgroup(state: dict) -> None:
    paths = state.get("cgroup_paths")
    unit = state.get("systemd_unit")  # --systemd-cgroup: the transient scope, stopped once its processes are gone
    if not paths and not unit:
        return
    from inclavare.linux import cgroups

    mgr = cgroups.Manager.from_paths(state["id"], paths or {})
    for _ in range(100):
        if not paths or not signal_cgroup(state, 9):
            break
        time.sleep(0.005)
    stop_error = None
    if unit:
        from inclavare.linux.cgroups import systemd

        try:
            systemd.stop(unit)
        except RuneError as e:
            stop_error = e  # the directories rune made are removed all the same, then the delete fails
    try:
        mgr.destroy()
    except OSError as e:
        raise RuneError(f"cannot remove the cgroup of container {state['id']!r}: {e.strerror}") from None
    if stop_error is not None:
        raise stop_error
    for parent in reversed(state.get("cgroup_parents") or ()):  # those the create made, deepest first
        try:
            os.rmdir(parent)
        except OSError:
            pass  # shared with another container by now
