"""What the host's cgroup hierarchies are (read once from /proc/self/mountinfo) and where a container's cgroup goes."""

from __future__ import annotations

import os

from inclavare.errors import RuneError

V1_CONTROLLERS = frozenset((
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event",
    "hugetlb", "pids", "rdma", "misc",
))


class Host:
    """The mounted hierarchies: v1 controller (or "name=X") -> (mountpoint, mount root), and the cgroup2 mountpoint."""

    __slots__ = ("v1", "unified", "_controllers")

    def __init__(self, v1: dict[str, tuple[str, str]], unified: str | None) -> None:
        self.v1 = v1
        self.unified = unified
        self._controllers: frozenset[str] | None = None

    @property
    def mode(self) -> str:
        if self.unified and not any(name in V1_CONTROLLERS for name in self.v1):
            return "v2"
        return "hybrid" if self.unified else "v1"

    def unified_controllers(self) -> frozenset[str]:
        """Controllers the cgroup2 root offers (in hybrid mode, those no v1 hierarchy has taken)."""
        if self._controllers is None:
            text = ""
            if self.unified:
                try:
                    with open(self.unified + "/cgroup.controllers") as f:
                        text = f.read()
                except OSError:
                    pass
            self._controllers = frozenset(text.split())
        return self._controllers


_host: Host | None = None


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> Host:
    v1: dict[str, tuple[str, str]] = {}
    unified: str | None = None
    for line in text.splitlines():
        if " - cgroup" not in line:
            continue
        left, _, right = line.partition(" - ")
        fstype, _, rest = right.partition(" ")
        fields = left.split(" ")
        root, mountpoint = unescape(fields[3]), unescape(fields[4])
        if fstype == "cgroup2":
            # Prefer the canonical places over any other cgroup2 mount.
            if unified is None or mountpoint in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                unified = mountpoint
        elif fstype == "cgroup":
            options = rest.rpartition(" ")[2].split(",")
            for opt in options:
                if (opt in V1_CONTROLLERS or opt.startswith("name=")) and opt not in v1:
                    v1[opt] = (mountpoint, root)
    return Host(v1, unified)


def host() -> Host:
    """The host's hierarchies, parsed once per process."""
    global _host
    if _host is None:
        try:
            with open("/proc/self/mountinfo") as f:
                _host = parse_mountinfo(f.read())
        except OSError as err:
            raise RuneError(f"cannot read /proc/self/mountinfo to find the cgroup hierarchies ({err.strerror})") from None
        if not _host.v1 and not _host.unified:
            raise RuneError("no cgroup hierarchy is mounted on this host (nothing of type cgroup or cgroup2 in "
                            "/proc/self/mountinfo)")
    return _host


def clean(path: str) -> str:
    """Lexically clean a cgroup path; a relative one may not climb above its base (like runc's CleanPath)."""
    if path.startswith("/"):
        return os.path.normpath(path).replace("//", "/")
    cleaned = os.path.normpath("/" + path).lstrip("/")
    return "" if cleaned == "." else cleaned


def expand_slice(slice_name: str) -> str:
    """systemd's slice naming: "a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" is the root."""
    suffix = ".slice"
    if not slice_name.endswith(suffix) or len(slice_name) <= len(suffix) or "/" in slice_name:
        raise RuneError(f"linux.cgroupsPath: invalid slice name {slice_name!r} (it must end in .slice and have no '/')")
    stem = slice_name[:-len(suffix)]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise RuneError(f"linux.cgroupsPath: invalid slice name {slice_name!r} (empty component between '-')")
        path += "/" + prefix + part + suffix
        prefix += part + "-"
    return path


def systemd_path(container_id: str, cgroups_path: str | None) -> str:
    """The cgroupfs path runc's systemd driver ends up with for "slice:prefix:name" (absolute, leaf included)."""
    from .systemd import unit_of

    parent, unit = unit_of(container_id, cgroups_path)
    return expand_slice(parent).rstrip("/") + "/" + unit


def own_cgroups() -> dict[str, str]:
    """This process's cgroup per controller ("" for cgroup2), from /proc/self/cgroup."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else ("",):
                own[name] = path
    return own


def resolve(host_: Host, inner: str) -> dict[str, str]:
    """Controller -> absolute directory for a cleaned cgroup path (absolute, or relative to our own cgroup)."""
    paths: dict[str, str] = {}
    own = None if inner.startswith("/") else own_cgroups()
    mode = host_.mode
    if mode != "v2":
        for name, (mountpoint, root) in host_.v1.items():
            if own is None:
                base = mountpoint
            else:
                mine = own.get(name, "/")
                if root != "/" and (mine == root or mine.startswith(root + "/")):
                    mine = mine[len(root):]
                base = mountpoint + mine.rstrip("/")
            paths[name] = _join(base, inner)
    if host_.unified:
        if own is None:
            base = host_.unified
        else:
            # Like runc: the parent of our own cgroup2 group, which (unlike ours) may enable controllers.
            base = host_.unified + os.path.dirname(own.get("", "/")).rstrip("/")
        paths[""] = _join(base, inner)
    return paths


def _join(base: str, inner: str) -> str:
    inner = inner.strip("/")
    return base.rstrip("/") + "/" + inner if inner else base
