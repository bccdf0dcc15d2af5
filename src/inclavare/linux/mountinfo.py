"""/proc/self/mountinfo: the mounts this process sees, their tree and their propagation (proc(5)).

No collections or typing: the sim launch child reads it on the enclave's start-up path. Fields are unescaped as
the cgroup hierarchies' reader does (cgroups.host.unescape, which every rune process that creates a container has
imported already)."""

from __future__ import annotations

from inclavare.linux.cgroups.host import unescape


def read() -> bytes:
    """The mount table now (b"" when it cannot be read)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


class Mount:
    """One line of the table: its mount ID, its parent's, its mount point and its optional fields (shared:N,
    master:N, propagate_from:N, unbindable)."""

    __slots__ = ("id", "parent", "point", "tags")

    def __init__(self, mnt_id: int, parent: int, point: str, tags: tuple[str, ...]) -> None:
        self.id = mnt_id
        self.parent = parent
        self.point = point
        self.tags = tags

    @property
    def propagates(self) -> bool:
        """It receives mount events from elsewhere: a peer of a shared group or a slave of one."""
        return any(t.startswith(("shared:", "master:")) for t in self.tags)


def parse(data: bytes) -> list[Mount]:
    out = []
    for line in data.decode(errors="surrogateescape").split("\n"):
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        try:
            mnt_id, parent = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        out.append(Mount(mnt_id, parent, unescape(fields[4]), tuple(fields[6:fields.index("-", 6)])))
    return out


def _inside(point: str, path: str) -> bool:
    return point == path or point.startswith(path.rstrip("/") + "/")


def under(mounts: list[Mount], path: str) -> tuple[Mount | None, list[tuple[Mount, list[Mount]]]]:
    """The mount that serves the absolute, real `path` (the topmost of those stacked at the deepest mount point on
    its way), and for each mount on it at a mount point strictly under `path`: the topmost mount stacked there
    (what a lookup of that mount point reaches) with every mount of its subtree (the ones stacked under it
    included). Mounts hidden by another are not listed on their own: nothing reaches them by a path."""
    children: dict[int, list[Mount]] = {}
    for m in mounts:
        children.setdefault(m.parent, []).append(m)

    def top(m: Mount) -> Mount:
        while True:
            over = [c for c in children.get(m.id, ()) if c.point == m.point and c is not m]
            if not over:
                return m
            m = over[-1]

    best = None
    for m in mounts:
        if _inside(path, m.point) and (best is None or len(m.point) > len(best.point)):
            best = m
    if best is None:
        return None, []
    root = top(best)
    found = []
    for c in children.get(root.id, ()):
        if c.point != root.point and _inside(c.point, path):
            subtree, todo = [], [c]
            while todo:
                m = todo.pop()
                subtree.append(m)
                todo += [k for k in children.get(m.id, ()) if k is not m]
            found.append((top(c), subtree))
    return root, found
