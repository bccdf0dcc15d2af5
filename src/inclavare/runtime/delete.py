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
            _remove_unreadable(container)
            return
        st = status(container, state)
        if st in ("running", "paused") and not force:
            raise RuneError(f"cannot delete container {container.id!r} that is not stopped: {st} (use --force)")
        if st == "creating" and not force and state is None:
            raise RuneError(f"container {container.id!r} is being created (use --force to remove it)")
        destroy(container, state, st)
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


def destroy(container: Container, state: dict | None, st: str) -> None:
    """Kill what runs, run poststop hooks, remove the cgroups and the state directory."""
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
        hooks = (state.get("config") or {}).get("hooks") or {}
        if hooks.get("poststop"):
            from inclavare.oci import hooks as oci_hooks

            try:
                oci_hooks.run("poststop", hooks["poststop"], oci_hooks.spec_state(state, "stopped", pid=0))
            except RuneError as e:
                from inclavare.cli import log

                log.warning(str(e))
    container.remove()


def _thaw(state: dict) -> None:
    from inclavare.linux import cgroups

    try:
        cgroups.Manager.from_paths(state["id"], state.get("cgroup_paths") or {}).thaw()
    except (OSError, RuneError):
        pass


def wait_gone(pid: int, start: int | None, timeout: float = 10.0) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
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
    if not paths:
        return
    from inclavare.linux import cgroups

    mgr = cgroups.Manager.from_paths(state["id"], paths)
    for _ in range(100):
        if not signal_cgroup(state, 9):
            break
        time.sleep(0.005)
    try:
        mgr.destroy()
    except OSError as e:
        raise RuneError(f"cannot remove the cgroup of container {state['id']!r}: {e.strerror}") from None
