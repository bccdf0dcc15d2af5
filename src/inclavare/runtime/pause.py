"""`pause` and `resume`: freeze and thaw every process of a container (v1 freezer.state, v2 cgroup.freeze).

The state records "paused" under the container's lock, so that `state` reports "paused" (runtime/status.py also
checks the freezer, so a container thawed behind rune's back shows "running").
"""

from __future__ import annotations

from inclavare.errors import RuneError
from inclavare.runtime.status import status
from inclavare.runtime.store import Container


def pause(container: Container) -> None:
    _change(container, True)


def resume(container: Container) -> None:
    _change(container, False)


def _change(container: Container, frozen: bool) -> None:
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        state = container.read()
        st = status(container, state)
        if frozen and st not in ("running", "created"):
            raise RuneError(f"container {container.id!r} is not running ({st}): cannot pause it")
        if not frozen and st != "paused":
            raise RuneError(f"container {container.id!r} is not paused ({st}): cannot resume it")
        assert state is not None
        if not state.get("cgroup_paths"):
            raise RuneError(f"container {container.id!r} has no cgroup to freeze")
        from inclavare.linux import cgroups

        mgr = cgroups.Manager.from_paths(container.id, state["cgroup_paths"])
        if frozen:
            mgr.freeze()
            state["paused"] = True
        else:
            mgr.thaw()
            state.pop("paused", None)
        try:
            container.write(state)
        except OSError as e:
            if frozen:
                mgr.thaw()
            raise RuneError(f"{container.state_path}: cannot record the new state: {e.strerror}") from None
    finally:
        container.unlock()
