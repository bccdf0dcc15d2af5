"""A container's status, derived from its state and the live system: creating, created, running, paused,
stopped (runtime-spec runtime.md#state)."""

from __future__ import annotations

import os

from inclavare.linux import proc
from inclavare.runtime.store import Container


def status(container: Container, state: dict | None) -> str:
    if state is None or state.get("status") == "creating":
        # a create in progress, or one that was killed: its init, if any, decides
        pid = (state or {}).get("pid") or 0
        return "creating" if not pid or proc.alive(pid) else "stopped"
    return _live(container, state)


def _live(container: Container, state: dict) -> str:
    pid = state.get("pid") or 0
    if not proc.alive(pid, state.get("init_start")):
        return "stopped"
    if state.get("use_fifo") and os.path.exists(container.fifo_path):
        return "created"
    if state.get("paused") and _frozen(state):
        return "paused"
    return "running"


def _frozen(state: dict) -> bool:
    from inclavare.linux import cgroups

    try:
        return cgroups.Manager.from_paths(state["id"], state.get("cgroup_paths") or {}).freezer_state() == "FROZEN"
    except OSError:
        return False


def oci_state(container: Container, state: dict | None) -> dict:
    """The state object of the runtime spec, as `runc state` prints it."""
    from inclavare.oci import OCI_VERSION

    st = status(container, state)
    state = state or {}
    out = {
        "ociVersion": OCI_VERSION,  # the version of the spec the state complies with: the runtime's
        "id": container.id,
        "pid": state.get("pid", 0) if st != "stopped" else 0,
        "status": st,
        "bundle": state.get("bundle", ""),
        "rootfs": state.get("rootfs", ""),
        "created": state.get("created", ""),
        "owner": state.get("owner", ""),
    }
    if state.get("annotations"):
        out["annotations"] = state["annotations"]
    return out
