"""Cgroups for containers: v1, v2 and hybrid hosts, behind one Manager.

    m = Manager(container_id, linux_cgroups_path, systemd=False)
    m.create(linux_resources); m.join(pid); ...; m.destroy()

Paths follow runc's fs drivers: an absolute linux.cgroupsPath is used under each hierarchy's mountpoint, a relative
one under this process's own cgroup (cgroup2: its parent), and none means "/<container id>". Resources are planned
first (every value checked, each failure naming its linux.resources field) and written after; see v1.py, v2.py,
devices.py. On a hybrid host the v1 controllers get the v1 writes and the cgroup2 directory gets what only it has
(hugetlb here) and the `unified` keys.
"""

from __future__ import annotations

import errno
import os
import time

from inclavare.errors import RuneError

from . import files
from . import host as _hostmod
from .files import Item, read, read_or, write_raw
from .host import Host

__all__ = ["Manager", "host_mode", "Host"]

UNIFIED = ""  # the paths key of the cgroup2 directory, as in runc


def host_mode() -> str:
    """"v1", "v2" or "hybrid" (v1 controllers plus a cgroup2 mount), from /proc/self/mountinfo."""
    return _hostmod.host().mode


class _All(dict):
    """Every controller name maps to the one cgroup2 directory."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def __missing__(self, key: str) -> str:
        return self.directory


class Manager:
    """The cgroups of one container."""

    def __init__(self, container_id: str, cgroups_path: str | None, systemd: bool = False, *,
                 host: Host | None = None) -> None:
        self.id = container_id
        self._host = host
        h = self.host
        if systemd:
            inner = _hostmod.systemd_path(container_id, cgroups_path)
        else:
            inner = _hostmod.clean(cgroups_path) if cgroups_path else "/" + container_id
        if not inner or inner == "/":
            raise RuneError(f"linux.cgroupsPath: {cgroups_path!r} names a hierarchy root, not a cgroup of its own")
        self.paths: dict[str, str] = _hostmod.resolve(h, inner)
        self.mode = h.mode
        self._created: list[str] = []  # parents made by create(), for destroy()

    @classmethod
    def from_paths(cls, container_id: str, paths: dict[str, str], *, host: Host | None = None) -> Manager:
        """The manager of an existing container, from the paths saved in its state.json."""
        m = cls.__new__(cls)
        m.id = container_id
        m._host = host
        m.paths = {(UNIFIED if k == "unified" else k): v for k, v in paths.items()}
        others = any(k != UNIFIED for k in m.paths)
        m.mode = ("hybrid" if others else "v2") if UNIFIED in m.paths else "v1"
        m._created = []
        return m

    @property
    def host(self) -> Host:
        if self._host is None:
            self._host = _hostmod.host()
        return self._host

    # --- paths ------------------------------------------------------------------------------------------------------

    @property
    def unified(self) -> str | None:
        """The cgroup2 directory (None on a v1 host)."""
        return self.paths.get(UNIFIED)

    def _v1_dirs(self) -> list[str]:
        seen: list[str] = []
        for key, path in self.paths.items():
            if key != UNIFIED and path not in seen:
                seen.append(path)
        return seen

    # --- lifecycle --------------------------------------------------------------------------------------------------

    def create(self, resources: dict | None = None) -> None:
        """Make the cgroup in every hierarchy, then apply `resources` (OCI linux.resources)."""
        plan = self._plan(resources or {}) if resources else None  # bad values fail before anything is made
        if self.mode != "v2":
            cpuset = self.paths.get("cpuset")
            for path in self._v1_dirs():
                self._mkdir(path, copy_cpuset=path == cpuset)
        if self.unified:
            self._mkdir(self.unified)
            self._enable_controllers(resources or {})
        if plan:
            self._write(plan)

    def update(self, resources: dict) -> None:
        """Apply `resources` again (rune update); the same checks and errors as create()."""
        if resources:
            if self.unified:
                self._enable_controllers(resources)
            self._write(self._plan(resources))

    def join(self, pid: int) -> None:
        """Move process `pid` into the cgroup of every hierarchy."""
        value = str(pid)
        for path in self._all_dirs():
            try:
                write_raw(path + "/cgroup.procs", value)
            except OSError as err:
                raise RuneError(f"cannot add process {pid} to the cgroup {path} ({err.strerror})") from None

    def destroy(self) -> None:
        """Remove the cgroup from every hierarchy (sub-cgroups first); missing directories are fine."""
        failures = []
        for path in self._all_dirs():
            try:
                _remove_tree(path)
            except OSError as err:
                failures.append(f"{path} ({err.strerror})")
        for path in reversed(self._created):
            try:
                os.rmdir(path)
            except OSError:
                pass  # a parent shared with other containers stays
        self._created = []
        if failures:
            raise RuneError(f"cannot remove the cgroup of container {self.id}: {', '.join(failures)}")

    def missing_parents(self) -> list[str]:
        """The ancestors of the container's directories that do not exist yet, outermost first: what create() will
        make besides them (recorded in state.json before, so that `delete` finds them after a killed create)."""
        out: list[str] = []
        for path in self._all_dirs():
            missing = []
            parent = os.path.dirname(path)
            while parent != "/" and parent not in out and not os.path.isdir(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            out.extend(reversed(missing))
        return out

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    def _all_dirs(self) -> list[str]:
        dirs = self._v1_dirs() if self.mode != "v2" else []
        if self.unified:
            dirs.append(self.unified)
        return dirs

    # --- processes --------------------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the cgroup, sub-cgroups included."""
        directory = self._process_dir()
        found: list[int] = []
        for root, _, _ in os.walk(directory):
            for line in read_or(root + "/cgroup.procs").split():
                found.append(int(line))
        return found

    def _process_dir(self) -> str:
        if self.mode == "v2":
            return self.unified  # type: ignore[return-value]
        for key in ("pids", "freezer", "devices", "memory", "cpu", "name=systemd"):
            if key in self.paths:
                return self.paths[key]
        return self._all_dirs()[0]

    def kill(self) -> bool:
        """SIGKILL everything in the cgroup at once through cgroup.kill (cgroup v2, Linux 5.14); False if unsupported."""
        if not self.unified or self.mode != "v2":
            return False
        try:
            write_raw(self.unified + "/cgroup.kill", "1")
        except OSError:
            return False
        return True

    def freeze(self) -> None:
        self._freeze(True)

    def thaw(self) -> None:
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        from . import freezer

        if "freezer" in self.paths:
            freezer.v1_set(self.paths["freezer"], frozen)
        elif self.unified:
            freezer.v2_set(self.unified, frozen)
        else:
            raise RuneError(f"cannot {'pause' if frozen else 'resume'} container {self.id}: this host has no "
                            f"freezer cgroup")

    def freezer_state(self) -> str:
        """"FROZEN" or "THAWED"."""
        from . import freezer

        if "freezer" in self.paths:
            return freezer.v1_state(self.paths["freezer"])
        if self.unified:
            return freezer.v2_state(self.unified)
        return "THAWED"

    def stats(self) -> dict:
        """The data of `runc events --stats` (runc's types.Stats)."""
        from . import stats

        if self.mode == "v2":
            return stats.v2(self.unified)  # type: ignore[arg-type]
        return stats.v1(self.paths, self.unified)

    # --- internals --------------------------------------------------------------------------------------------------

    def _mkdir(self, path: str, copy_cpuset: bool = False) -> bool:
        """mkdir with parents; True if `path` was made here. Parents made are remembered for destroy()."""
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            return False
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if self._mkdir(parent, copy_cpuset):
                self._created.append(parent)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                return False
            except OSError as err:
                raise RuneError(f"cannot create the cgroup {path} ({err.strerror})") from None
        except OSError as err:
            raise RuneError(f"cannot create the cgroup {path} ({err.strerror})") from None
        if copy_cpuset:
            # A new v1 cpuset starts empty and no task may join it: inherit the parent's cpus and mems.
            parent = os.path.dirname(path)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not read_or(f"{path}/{name}"):
                    write_raw(f"{path}/{name}", read(f"{parent}/{name}") or "\n")
        return True

    def _enable_controllers(self, resources: dict) -> None:
        """cgroup2: enable controllers in cgroup.subtree_control from the root down to the parent. On v2 all the
        root offers (as runc, so that a later update or stats finds them); on hybrid only those the resources use."""
        from . import v2

        h = self.host
        offered = h.unified_controllers()
        if not offered or not h.unified:
            return
        if self.mode == "v2":
            wanted = sorted(offered)
        else:
            needed = set()
            for section, value in resources.items():
                if value is None:
                    continue
                if section == "unified":
                    needed.update(k.partition(".")[0] for k in value)
                elif self._route(section) == "v2":
                    needed.update(v2.CONTROLLERS.get(section, ()))
            wanted = sorted(needed & offered)
        if not wanted:
            return
        line = " ".join("+" + c for c in wanted)
        root = h.unified.rstrip("/")
        parent = os.path.dirname(self.unified)  # type: ignore[arg-type]
        levels = [root]
        if parent.startswith(root + "/"):
            rest = parent[len(root) + 1:].split("/")
            levels += [root + "/" + "/".join(rest[:i + 1]) for i in range(len(rest))]
        for level in levels:
            try:
                write_raw(level + "/cgroup.subtree_control", line)
            except OSError:
                for c in wanted:  # one by one: a busy or unavailable controller must not block the others
                    try:
                        write_raw(level + "/cgroup.subtree_control", "+" + c)
                    except OSError:
                        pass

    def _route(self, section: str) -> str:
        """Which hierarchy gets a resources section on this host: "v1", "v2" or "" (none has it)."""
        from . import v1, v2

        if self.mode == "v1":
            return "v1"
        if self.mode == "v2":
            return "v2"
        if section == "unified":
            return "v2"
        if any(c in self.paths for c in v1.CONTROLLERS.get(section, ())):
            return "v1"
        if any(c in self.host.unified_controllers() for c in v2.CONTROLLERS.get(section, ())):
            return "v2"
        return ""

    def _plan(self, resources: dict) -> _Plan:
        """The writes, in order; every value checked before anything is written."""
        from . import devices, v1, v2

        if type(resources) is not dict:
            raise RuneError(f"linux.resources: must be an object, got {resources!r}")
        v1_items: list[Item] = []
        v2_items: list[Item] = []
        bpf_rules: list[devices.Rule] | None = None
        for section, value in resources.items():
            if value is None:
                continue
            route = self._route(section)
            if section == "devices":
                rules = devices.parse(value)
                if "devices" in self.paths:
                    v1_items.extend(devices.v1_items(rules))
                elif self.unified:
                    bpf_rules = rules
                else:
                    raise RuneError("linux.resources.devices: this host has neither a devices cgroup nor cgroup v2")
                continue
            if section == "unified" and not self.unified:
                raise RuneError("linux.resources.unified: this host has no cgroup v2 hierarchy (cgroup v1 only); "
                                "remove the field or use the v1 resources")
            if route == "v1" and section in v1.PLANNERS:
                v1.PLANNERS[section](value, v1_items)
            elif route == "v2" and section in v2.PLANNERS:
                v2.PLANNERS[section](value, v2_items)
            elif route == "" and section in v1.PLANNERS:
                v1.PLANNERS[section](value, [])  # still checked; the host has no such controller
                if section not in ("network", "rdma") and _sets_something(value):
                    names = " / ".join(v1.CONTROLLERS[section])
                    raise RuneError(f"linux.resources.{section}: this host has no {names} cgroup controller")
        mem = resources.get("memory")
        if type(mem) is dict and mem.get("checkBeforeUpdate") and mem.get("limit"):
            self._check_usage(mem["limit"], route=self._route("memory"))
        return _Plan(v1_items, v2_items, bpf_rules)

    def _check_usage(self, limit: int, route: str) -> None:
        if route == "v1" and "memory" in self.paths:
            usage = read_or(self.paths["memory"] + "/memory.usage_in_bytes")
        elif route == "v2" and self.unified:
            usage = read_or(self.unified + "/memory.current")
        else:
            return
        if usage.isdigit() and 0 < limit < int(usage):
            raise RuneError(f"linux.resources.memory.limit: {limit} is below the current memory usage {usage} "
                            f"(checkBeforeUpdate is set)")

    def _write(self, plan: _Plan) -> None:
        from . import devices

        if plan.v1:
            files.apply(self.paths, [i for i in plan.v1 if i.ctrl in self.paths or not _skip(i)])
        if plan.v2:
            files.apply(_All(self.unified or ""), plan.v2)
        if plan.device_rules is not None:
            devices.attach(self.unified, plan.device_rules)  # type: ignore[arg-type]


class _Plan:
    __slots__ = ("v1", "v2", "device_rules")

    def __init__(self, v1_items: list[Item], v2_items: list[Item], device_rules: list | None) -> None:  # devices.Rule
        self.v1, self.v2, self.device_rules = v1_items, v2_items, device_rules


def _skip(item: Item) -> bool:
    """A v1 write whose controller is not mounted: optional ones (network, rdma) are skipped, like runc."""
    if item.optional:
        return True
    raise RuneError(f"{item.field}: the {item.ctrl} cgroup controller is not mounted on this host")


def _sets_something(value: object) -> bool:
    if isinstance(value, dict):
        return any(v not in (None, 0, "", [], {}, False) for v in value.values())
    return bool(value)


def _remove_tree(path: str) -> None:
    """rmdir a cgroup and its sub-cgroups, leaf first, retrying briefly while exiting tasks still hold it."""
    delay = 0.002
    for attempt in range(8):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY) or attempt == 7:
                raise
        try:
            children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for child in children:
            _remove_tree(child)
        if not children:
            time.sleep(delay)
            delay *= 2
