"""`update`: change a container's resource limits (linux.resources) while it runs, from runc's flags or a JSON file.

The new values are checked and written by the cgroups Manager (errors name the linux.resources field), then stored
in the container's config in state.json, under the container's lock.
"""

from __future__ import annotations

from inclavare.errors import RuneError
from inclavare.runtime.status import status
from inclavare.runtime.store import Container

# flag -> (resources section, key, kind): "size" takes runc's units (k, m, g ...; -1 for unlimited), "int" an integer,
# "str" is passed as it is
FLAGS = {
    "memory": ("memory", "limit", "size"),
    "memory-reservation": ("memory", "reservation", "size"),
    "memory-swap": ("memory", "swap", "size"),
    "kernel-memory": ("memory", "kernel", "size"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "size"),
    "cpu-shares": ("cpu", "shares", "int"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "blkio-weight": ("blockIO", "weight", "int"),
    "pids-limit": ("pids", "limit", "int"),
}
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(flag: str, text: str) -> int:
    """Bytes from "1024", "64m", "1.5g", "2GiB" (binary units, as runc's --memory); -1 means unlimited."""
    t = text.strip()
    if t == "-1":
        return -1
    low = t.lower()
    for suffix in ("ib", "b", "i"):
        if low.endswith(suffix) and len(low) > len(suffix) and low[-len(suffix) - 1] in "kmgtp":
            low = low[: -len(suffix)]
            break
    else:
        if low.endswith("b") and low[:-1].replace(".", "", 1).isdigit():
            low = low[:-1]
    unit = low[-1:] if low[-1:] in "kmgtp" else ""
    number = low[: len(low) - len(unit)].strip()
    try:
        if not number or number.startswith(("-", "+")):
            raise ValueError
        value = float(number) if "." in number else int(number)
    except ValueError:
        raise RuneError(f"--{flag} {text!r}: not a size (bytes, or a number with k, m, g, t or p)") from None
    return int(value * _UNITS[unit])


def from_flags(values: dict[str, str]) -> dict:
    """linux.resources from runc's update flags (only those given)."""
    out: dict = {}
    for flag, text in values.items():
        section, key, kind = FLAGS[flag]
        if kind == "size":
            v: object = parse_size(flag, text)
        elif kind == "int":
            try:
                v = int(text)
            except ValueError:
                raise RuneError(f"--{flag} {text!r}: not an integer") from None
        else:
            v = text
        out.setdefault(section, {})[key] = v
    return out


def merge(current: dict, changes: dict) -> dict:
    """The resources after the update: each section's keys replaced by the changed ones."""
    new = dict(current)
    for section, value in changes.items():
        if type(value) is dict and type(current.get(section)) is dict:
            new[section] = {**current[section], **value}
        else:
            new[section] = value
    return new


def update(container: Container, changes: dict, source: str = "") -> None:
    """Apply the changes; a refusal of a linux.resources field names `source` (the --resources file) first."""
    if type(changes) is not dict:
        raise RuneError(f"the resources to update must be a JSON object (linux.resources), got {changes!r}")
    from inclavare.oci import schema
    from inclavare.oci.config import Checker

    # what state.json keeps must pass its check when read back
    Checker(source or "rune update").validate(changes, schema.RESOURCES, "linux.resources")
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        state = container.read()
        st = status(container, state)
        if st in ("stopped", "creating"):
            raise RuneError(f"container {container.id!r} is not running ({st}): cannot update it")
        assert state is not None
        if not changes:
            return
        if not state.get("cgroup_paths"):
            raise RuneError(f"container {container.id!r} has no cgroup to update")
        from inclavare.linux import cgroups

        try:
            mgr = cgroups.Manager.from_paths(container.id, state["cgroup_paths"])
            if state.get("systemd_unit"):
                from inclavare.linux.cgroups import systemd

                mgr._plan(changes)  # every value checked before systemd is asked
                systemd.update(state["systemd_unit"], changes, mgr.mode == "v2")
            mgr.update(changes)
        except RuneError as e:
            if source and str(e).startswith("linux."):
                raise RuneError(f"{source}: {e}") from None
            raise
        config = container.config(state)
        linux = config.setdefault("linux", {})
        linux["resources"] = merge(linux.get("resources") or {}, changes)
        container.write_config(config)
        if "config" in state:  # a state from before config.json: the config moves out of it
            container.write(state)
    finally:
        container.unlock()
