"""The sim launch check's measurement cache: a trusted file's SHA-256 remembered under the file's identity and change
time, so that an unchanged file is not read again at every launch.

Key (of the opened file, fstat after open without following symlinks):
    st_dev, st_ino          which inode it is: a file renamed over it, a bind mount over its path, a copy, another
                            layer's file is another inode on another or the same device; for a file of an overlayfs
                            mount whose layers are all on one ext4 or XFS filesystem and whose upper layer holds no
                            file, that filesystem's device rather than the mount's (overlay_device: each container's
                            overlay over the same layers has a st_dev of its own, and the inode it serves is the
                            layer's)
    st_ctime_ns             when its inode last changed: the kernel sets it to the current time at every write,
                            truncate, chmod, chown, link, unlink, rename and utimes, and no system call sets it to a
                            chosen value (utimensat, which restores an mtime, sets ctime to now); only changing the
                            system clock or writing the block device behind the filesystem would, both of which take
                            the host's root, whom the sim TEE trusts anyway (it holds the platform secret)
    the mount               this boot and the smallest unique mount id of st_dev (host_mounts): a filesystem
                            mounted again, changed while it was not, is another
    st_size, st_mtime_ns, st_mode, st_uid, st_gid, st_nlink
                            belt and braces, and what the manifest compares besides the digest
Only files on filesystems whose ctime the local kernel moves at every change are cached: ext2/3/4, XFS, Btrfs and
overlayfs without metacopy (statfs f_type; overlay_device). A network filesystem (NFS, CIFS, 9p) or FUSE reports
what a server or a user-space process says, so its files are hashed at every launch.

A hit is a digest the launch check itself computed from this same inode with no change since. A miss hashes the file
and stores the digest only when (recordable):
  - only the host's root can write the file: its owner is root (in a user namespace, the uid that maps to the
    host's 0) and neither its group nor others may write it (with ACLs the group bits are the mask, so no named
    user or group may either). A write through a shared writable mapping moves ctime only at the page's first
    write fault, not at later writes to a page still dirty (a review reproduced it as the file's unprivileged
    owner: the bytes changed, the key did not); whoever can write the file can make such a mapping, and only
    root, whom the sim TEE trusts, may then write it;
  - its dirty pages were written back just before (settle: sync_file_range, which write-protects every shared
    mapping of them, so that a later write through one faults and moves ctime), and its ctime is older than that
    by MARGIN_NS (a write in the same tick of the coarse clock as the last change would not move ctime): what a
    process that could write the file before it became root's still holds cannot change it unseen;
  - the key is the same after the hash as before (a write during the hash moves ctime). The cache is one file, measurements.json, in the sim platform directory (root-only, 0600, beside the
platform secret); a corrupt or unreadable one is ignored and rewritten. Nothing is ever trusted from the image.
"""

from __future__ import annotations

import os

from inclavare.oci import jsonlite

FILE = "measurements.json"  # the cache of a launch that names no image (see select)
IMAGES = "measurements"  # one cache per signed image, IMAGES/<SHA-256 of its manifest file>.json
VERSION = 2  # 1: recorded before the rules of recordable (its entries are not trusted)
MARGIN_NS = 50_000_000  # a ctime this close to the write-back (a tick of the coarse clock is 1-10 ms) is not cached
MAX_ENTRIES = 200_000  # per file
MAX_IMAGES = 1000  # image caches kept; the least recently written go first
# statfs f_type of the filesystems whose ctime the local kernel moves at every change of a file, a write through a
# shared mapping included once its pages are written back (settle); not tmpfs, which has no write-back: a page
# written through a shared mapping stays writable, and its later writes never move ctime (measured)
LOCAL_FILESYSTEMS = {0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x794C7630: "overlay"}
_LOCAL_NAMES = {b"ext2", b"ext3", b"ext4", b"xfs", b"btrfs", b"overlay"}  # their names in /proc/self/mountinfo
ENV_DISABLE = "INCLAVARE_SIM_MEASURE_CACHE"  # "0": hash every trusted file at every launch


def fs_type(fd: int) -> int:
    """statfs(2) f_type of the filesystem holding the open file `fd` (0 when it cannot be told)."""
    from inclavare.linux import syscalls

    try:
        return syscalls.fstatfs_type(fd)
    except OSError:
        return 0


OVERLAY = next(magic for magic, name in LOCAL_FILESYSTEMS.items() if name == "overlay")
# the filesystems whose inode numbers name one inode of the whole filesystem (st_dev): an overlay's layers on one of
# them may share keys across overlay mounts (overlay_device). Not Btrfs, whose inode numbers are per subvolume (each a
# st_dev of its own, which an overlay's files do not report), nor tmpfs, whose 32-bit inode numbers can wrap
SHARED_LAYER_FILESYSTEMS = {magic for magic, name in LOCAL_FILESYSTEMS.items() if name in ("ext4", "xfs")}
_defaults: dict[str, bool | None] = {}  # the overlay module's parameters, once read
_UNKNOWN = object()


def key_device(known: dict, host: str, st: os.stat_result, fd: int | None = None,
               table: bytes | None = None) -> str | None:
    """The device part of the key of the file `st` (the stat of `host`, open at `fd` if given), or None when it is not
    cached (a filesystem whose change times the local kernel does not keep: its files are hashed at every launch).
    Mostly st_dev itself; for a file of an overlayfs mount that serves every file from its lower layers, all on one
    ext4 or XFS filesystem, that filesystem's device (overlay_device), so that a new container's overlay over the
    same image layers finds the digests of the layers' inodes that another container's launch measured. `known`
    keeps what was found per st_dev (not a handle that could not be opened: that file is just not cached). `table`:
    /proc/self/mountinfo as this launch read it already (sim_runtime.seal_mounts), else it is read when needed."""
    dev = known.get(st.st_dev, _UNKNOWN)
    if dev is _UNKNOWN:
        dev = _device_info(host, st, fd, table)
        if dev is not _UNKNOWN:
            known[st.st_dev] = dev
    return None if dev is _UNKNOWN else dev


def _device_info(host: str, st: os.stat_result, fd: int | None,  # noqa: ANN202 - str | None | _UNKNOWN
                 table: bytes | None = None):
    """What key_device needs of st_dev, from the file itself (an O_PATH handle of `host` when no fd is given: the
    very file, same st_dev, not a path that may name another file by the time statfs looks); _UNKNOWN when that
    handle cannot be had."""
    mine = fd is None
    if mine:
        try:
            fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return _UNKNOWN
    try:
        if mine and os.fstat(fd).st_dev != st.st_dev:
            return _UNKNOWN
        kind = fs_type(fd)
    finally:
        if mine:
            os.close(fd)
    mount = mount_of(st.st_dev)
    if kind not in LOCAL_FILESYSTEMS or mount is None or (kind != OVERLAY and not device_trusted(st.st_dev)):
        return None
    own = f"{st.st_dev}@{mount}"
    return overlay_device(st.st_dev, table, own) if kind == OVERLAY else own


def device_trusted(dev: int, depth: int = 0) -> bool:
    """Only root can write the block device behind `dev` (/sys/dev/block): not a loop device whose backing file
    someone else may write (a review changed a mounted image through its user-owned backing file, keys unmoved),
    nor one whose blocks a user-space server gives (nbd, ublk), nor a device-mapper or md device over such a one;
    a device that is no block device (btrfs's, an overlay's) is what its filesystem says. The `disk` group, which
    may write the disks' nodes, counts as root, as everywhere."""
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    if not os.path.exists(base):
        return True
    if os.path.basename(os.path.realpath(base)).startswith(("nbd", "ublk")) or depth > 8:
        return False
    try:
        with open(f"{base}/loop/backing_file", "rb") as f:
            backing = f.read().rstrip(b"\n").decode(errors="surrogateescape")
    except FileNotFoundError:
        backing = None
    except OSError:
        return False
    if backing is not None:
        try:
            st = os.stat(backing)
        except OSError:
            return False  # deleted or out of reach: unknown
        return st.st_uid == 0 and not st.st_mode & 0o022 and device_trusted(st.st_dev, depth + 1)
    try:
        slaves = os.listdir(f"{base}/slaves")
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for slave in slaves:
        try:
            with open(f"{base}/slaves/{slave}/dev", "rb") as f:
                major, minor = (int(x) for x in f.read().split(b":"))
        except (OSError, ValueError):
            return False
        if not device_trusted(os.makedev(major, minor), depth + 1):
            return False
    return True


_boot: list[str | None] = []
_layers: dict[int, tuple] = {}  # overlay st_dev -> (its mount point, its layers, their devices): settle
_mounts: list = []  # host_mounts, once taken: (the mount namespace's inode, the map)


def host_mounts() -> dict[int, str]:
    """st_dev -> this boot and the smallest unique mount id (statx STATX_MNT_ID_UNIQUE: never reused while the system
    runs) among the mounts of that device, of the local filesystems the cache keeps, in this mount namespace: in the
    key beside st_dev. A review replaced a loop-mounted filesystem image by one changed offline, on the same device
    number, with the inode numbers and times its writer chose: a device unmounted and mounted again has only new,
    larger ids, and after a reboot another boot, so its files are hashed again; bind mounts of a filesystem (rune's
    own of a rootfs, at each launch) keep the oldest mount's. Taken once per process (each launch is checked by a
    process of its own, forked for that container), before the container's mount namespace (whose mounts are
    copies, with new ids): by the early launch child, or by prepare_host where the launch forks later
    (sim_runtime); taken in the container's, its ids match nothing (nothing is hit there)."""
    if _mounts:
        return _mounts[0][1]
    from inclavare.linux import syscalls
    from inclavare.linux.cgroups.host import unescape

    out: dict[int, tuple[int, str]] = {}
    boot = _boot_id()
    if boot is not None:
        from inclavare.linux import mountinfo

        table = mountinfo.read()  # this namespace's, now: not a launch's table, read in the container's
        mounts = []
        for line in table.split(b"\n"):
            fields = line.split(b" ")
            if len(fields) >= 10 and b"-" in fields:
                mounts.append((unescape(fields[4].decode(errors="surrogateescape")), fields[fields.index(b"-") + 1]))
        # a mount point below a network or FUSE mount is not looked at: the path walk to it could block
        slow = [p.rstrip("/") + "/" for p, kind in mounts if kind not in _LOCAL_NAMES and _may_block(kind)]
        for point, kind in mounts:
            if kind not in _LOCAL_NAMES or any((point + "/").startswith(s) for s in slow):
                continue
            try:
                fd = os.open(point, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                dev, mid = os.fstat(fd).st_dev, syscalls.mount_id_unique(fd)
            finally:
                os.close(fd)
            if mid is None:  # a kernel before 6.8: this boot alone (a device mounted again, changed, is not told)
                mid = -1
            if dev not in out or mid < out[dev][0]:
                out[dev] = (mid, f"{boot}:{mid}" if mid >= 0 else boot)
    _mounts.append((_mount_ns(), {dev: ident for dev, (_mid, ident) in out.items()}))
    return _mounts[0][1]


def mount_of(dev: int) -> str | None:
    """host_mounts()'s identity of the device `dev`; taken again, once per device, when `dev` is missing and this
    process is still in the mount namespace it was taken in (a mount made since), never from a container's."""
    found = host_mounts().get(dev)
    if found is None and dev not in _missed and _mounts[0][0] is not None and _mounts[0][0] == _mount_ns():
        _missed.add(dev)
        _mounts.clear()
        found = host_mounts().get(dev)
    return found


_missed: set[int] = set()


def _may_block(kind: bytes) -> bool:
    """A filesystem whose path walk a server answers (FUSE, network filesystems)."""
    return kind.startswith(b"fuse") or kind in (b"nfs", b"nfs4", b"cifs", b"smb3", b"9p", b"ceph", b"virtiofs",
                                                b"afs", b"glusterfs", b"lustre", b"gfs2", b"ocfs2")


def _mount_ns() -> int | None:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return None


def _boot_id() -> str | None:
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                _boot.append(f.read().strip().decode() or None)
        except (OSError, UnicodeDecodeError):
            _boot.append(None)
    return _boot[0]


def overlay_device(st_dev: int, table: bytes | None = None, own: str | None = None) -> str | None:
    """The device part of the keys of the overlayfs mount `st_dev`: D when every layer of it (upper, work and each lower
    directory, from its options in /proc/self/mountinfo) is a directory of the one local, non-overlay ext2/3/4 or
    XFS filesystem D and its upper layer holds no file (directories only); None (not cached) when metacopy may be
    on; else its own st_dev.

    Why the layers' device may stand for the overlay's: with all layers on one filesystem, overlayfs reports for a
    regular file of a lower layer the st_ino and st_ctime of that very inode, only st_dev being the overlay
    mount's own; so D with the inode number names that inode on D, and its ctime moves at each change of it, as
    for a file on D itself. Each container has an overlay mount (a new st_dev) over the same image layers: keyed
    by st_dev alone, every new container's launch would hash the whole image again. Not so for a file the upper
    layer serves (copied up, or new): overlayfs keeps a copied-up file's lower origin st_ino, so two containers'
    copies of one file made in one clock tick would share a key for different bytes. So the layers' device is
    used only while no file can come from the upper layer: it holds directories only (a container's first start;
    a signed sim enclave's root is made read-only before its payload runs), with the inode index and NFS export
    off (with the index, a lower hard link's other name can be served from a copied-up inode that no upper entry
    names). With metacopy, a copied-up inode can serve a lower inode's bytes, whose changes do not move its
    ctime: such a mount is never cached, nor one whose metacopy setting cannot be told (the module's default
    unknown, or options with escaped characters, which this parser does not read), nor one whose layers cannot be
    found (relative paths, data-only layers) or lie on a filesystem outside LOCAL_FILESYSTEMS or on an overlay
    (the real inodes' ctime must move at mapped writes: not tmpfs's). Layers on several filesystems or on another
    kind than SHARED_LAYER_FILESYSTEMS (a review found Btrfs subvolumes' inode numbers shared a key) keep the
    mount's own st_dev. The layers are the
    directories the options name now, seen from the launch: making a layer path name another directory takes
    writing its parent or mounting over it in the launch's mount namespace (the engine's directories: the host's
    root); a file copied up between the look at the upper layer and the file's own stat takes a writer of the
    container's root while its launch check runs (before the payload: rune itself and the host's root). `table`:
    the mount table the launch read already (the mounts' options do not change with their propagation)."""
    own = own if own is not None else str(st_dev)
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}".encode()
    if table is None:
        from inclavare.linux import mountinfo

        table = mountinfo.read()
    opts = b""
    point = ""
    for line in table.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) > 9 and fields[2] == want and b"-" in fields:
            sep = fields.index(b"-")
            if len(fields) > sep + 3 and fields[sep + 1] == b"overlay":
                opts = fields[sep + 3]
                if fields[3] == b"/":  # the overlay's root mounted there (not a subdirectory bound): settle's paths
                    from inclavare.linux.cgroups.host import unescape

                    point = unescape(fields[4].decode(errors="surrogateescape"))
            break
    metacopy = None if b"\\" in opts else _module_default("metacopy")
    shared = b"\\" not in opts and _module_default("index") is False and _module_default("nfs_export") is False
    dirs: list[str] = []
    lowers: list[str] = []
    upper = ""
    for opt in opts.decode(errors="replace").split(","):
        name, _, value = opt.partition("=")
        if name == "lowerdir":
            dirs += value.split(":")
            lowers += value.split(":")
        elif name == "lowerdir+":
            dirs.append(value)
            lowers.append(value)
        elif name == "workdir":
            dirs.append(value)
        elif name == "upperdir":
            dirs.append(value)
            upper = value
        elif name == "datadir+":
            metacopy = True
        elif name == "metacopy":
            metacopy = value != "off"
        elif name in ("index", "nfs_export"):
            shared = shared and value == "off"
    if metacopy is not False:
        return None
    if not dirs or not all(d.startswith("/") for d in dirs):
        return None  # relative paths (a mount made from another directory), "::" (data-only): layers not found
    from inclavare.linux.pathtrust import writable_by_others

    devs, kinds, mounts = set(), set(), set()
    for d in dirs:
        # no directory or symlink on the way that someone but root may change: the path is looked at now, while the
        # overlay serves what it named at its mount (a review re-pointed a symlink of a user's directory)
        if writable_by_others(d):
            return None
        try:
            fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            kind = fs_type(fd)
            devs.add(os.fstat(fd).st_dev)
            mounts.add(mount_of(os.fstat(fd).st_dev))
        finally:
            os.close(fd)
        if kind not in LOCAL_FILESYSTEMS or kind == OVERLAY:
            return None  # the real inodes' filesystem: one whose ctime a mapped write may not move (tmpfs), or unknown
        kinds.add(kind)
    if point:  # where settle finds a file's real inode: the upper layer first, then the lower ones in order
        _layers[st_dev] = (point, ([upper] if upper else []) + lowers, frozenset(devs))
    if not shared or len(devs) != 1 or kinds - SHARED_LAYER_FILESYSTEMS or (upper and not _only_directories(upper)):
        return own  # the index or NFS export, several filesystems, or one whose inode numbers may repeat
    if None in mounts or len(mounts) != 1:
        return own
    return f"{devs.pop()}@{mounts.pop()}"


UPPER_LIMIT = 100_000  # directories of an upper layer read; more: the mount keeps its own st_dev


def _only_directories(top: str) -> bool:
    """The upper layer `top` holds directories only (no file, symlink or whiteout), and at most UPPER_LIMIT."""
    todo, seen = [top], 0
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for e in it:
                    seen += 1
                    if seen > UPPER_LIMIT or not e.is_dir(follow_symlinks=False):
                        return False
                    todo.append(e.path)
        except OSError:
            return False
    return True


def _module_default(name: str) -> bool | None:
    """The overlay module's default for `name` (metacopy, index, nfs_export: what a mount that does not say has),
    None when unknown."""
    if name not in _defaults:
        try:
            with open(f"/sys/module/overlay/parameters/{name}", "rb") as f:
                _defaults[name] = {b"N": False, b"Y": True}.get(f.read(1))
        except OSError:
            _defaults[name] = None
    return _defaults[name]


_root: list[int | None] = []  # the uid of the host's root as this process sees it, once read


def root_uid() -> int | None:
    """The uid this process sees for the host's root: 0, or in a user namespace the uid mapped to the parent's 0,
    None when that is not mapped (then no file is root's: nothing is cached)."""
    if not _root:
        uid = None
        try:
            with open("/proc/self/uid_map", "rb") as f:
                for line in f.read().splitlines():
                    inside, outside, count = (int(x) for x in line.split())
                    if outside <= 0 < outside + count:
                        uid = inside - outside
                        break
        except (OSError, ValueError):
            uid = None
        _root.append(uid)
    return _root[0]


def settle(fd: int, host: str | None = None) -> int | None:
    """Write the file's dirty pages back and wait (sync_file_range): their shared writable mappings are
    write-protected then, and a later write through one faults and moves ctime. The time just before (ns), for
    recordable; None when it cannot be done (the file is then not cached). A file of an overlay (`host`: its path)
    is written back through its real inode in a layer (a review: through the overlay it reaches nothing), found
    as key_device found the overlay's layers; not found, it is not cached."""
    from inclavare.linux import syscalls

    since = _time_ns()
    real = fd
    if fs_type(fd) == OVERLAY:
        real = _layer_file(os.fstat(fd), host)
        if real < 0:
            return None
    try:
        syscalls.sync_file_range(real, 0, 0, _SYNC_ALL)
    except OSError:
        return None
    finally:
        if real != fd:
            os.close(real)
    return since


def _layer_file(st: os.stat_result, host: str | None) -> int:
    """An fd of the layer file that the overlay file `st` at `host` is (the same inode number on a layer's
    filesystem: an overlay with its layers on one filesystem reports the layer inode's), or -1."""
    found = _layers.get(st.st_dev)
    if host is None or found is None or not host.startswith(found[0].rstrip("/") + "/"):
        return -1
    from inclavare.linux import syscalls

    rel = host[len(found[0].rstrip("/")) + 1:]
    how = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_XDEV
    for layer in found[1]:
        try:
            top = os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # its path checked (overlay_device)
        except OSError:
            return -1
        try:
            real = syscalls.openat2(top, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, how)
        except FileNotFoundError:
            continue
        except OSError:
            return -1
        finally:
            os.close(top)
        rst = os.fstat(real)
        if (rst.st_ino, rst.st_size) == (st.st_ino, st.st_size) and rst.st_dev in found[2]:
            return real
        os.close(real)
        return -1  # the name the overlay serves is this layer's: another inode, not the one hashed
    return -1


_SYNC_ALL = 1 | 2 | 4  # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER


def _time_ns() -> int:
    import time  # a launch whose files are all hits never needs it

    return time.time_ns()


def recordable(before: os.stat_result, since: int | None) -> bool:
    """The digest of a file hashed after settle (`since`, its result) and whose stat before the hash is `before`
    may be cached (the module's docstring says why each rule)."""
    return (since is not None and before.st_ctime_ns < since - MARGIN_NS and not before.st_mode & 0o022
            and before.st_uid == root_uid())


def key(st: os.stat_result, dev: str) -> str:
    """The cache key of the file `st` on the device `dev` (key_device())."""
    return (f"{dev}:{st.st_ino}:{st.st_ctime_ns}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}:{st.st_uid}:"
            f"{st.st_gid}:{st.st_nlink}")


class MeasurementCache:
    """Digests by file key, loaded from and saved to `directory`/measurements.json, or, once the launch knows
    which signed image it checks (select), `directory`/measurements/<SHA-256 of the manifest>.json: a launch reads
    the digests of its own image's files only, not those of every image the host ever launched. An image's cache
    also keeps the manifest's MRENCLAVE (measure_config of exactly the bytes whose SHA-256 names the file)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE) if directory else None
        self.entries: dict[str, str] = {}
        self.added = 0
        self.hits = 0
        self._fs: dict = {}  # st_dev -> what key_device found of it
        self.mountinfo: bytes | None = None  # the launch's mount table, when it read one (key_device's `table`)
        self._loaded = False
        self._mr_enclave: bytes | None = None
        self._mr_new = False
        self.out = -1  # an fd that save() writes to instead of the directory (a launch in a user namespace: merge)

    def select(self, image: str) -> None:
        """Use the cache of the signed image `image` (the SHA-256 of its manifest file, hex), before any look-up."""
        path = os.path.join(self.directory, IMAGES, f"{image}.json") if self.path is not None else None
        if path is None or path == self.path:
            return  # disabled, or selected already (what it loaded stays)
        self.path = path
        self.entries = {}
        self._loaded = False
        self._mr_enclave = None

    def mr_enclave(self) -> bytes | None:
        """The selected image's manifest measurement, when a launch computed it before."""
        if self.path is None:
            return None
        if not self._loaded:
            self._load()
        return self._mr_enclave

    def set_mr_enclave(self, mr: bytes) -> None:
        if self.path is not None:
            self._mr_enclave, self._mr_new = mr, True

    def _load(self) -> None:
        self._loaded = True
        try:
            with open(self.path, "rb") as f:
                doc = jsonlite.loads(f.read())
        except (OSError, ValueError, UnicodeDecodeError):
            return
        if isinstance(doc, dict) and doc.get("version") == VERSION and isinstance(doc.get("entries"), dict):
            entries = doc["entries"]  # JSON object keys are strings; the values must be 64-digit digests
            if set(map(type, entries.values())) - {str} or set(map(len, entries.values())) - {64}:
                entries = {k: v for k, v in entries.items() if type(v) is str and len(v) == 64}
            self.entries = entries
            mr = doc.get("mr_enclave")
            if isinstance(mr, str) and len(mr) == 64:
                try:
                    self._mr_enclave = bytes.fromhex(mr)
                except ValueError:
                    pass

    def lookup(self, host: str, st: os.stat_result) -> str | None:
        """get() for a file known by its lstat (`st`, of the host path `host` as the container sees it), unopened."""
        if self.path is None:
            return None
        if not self._loaded:
            self._load()
        dev = key_device(self._fs, host, st, table=self.mountinfo)
        if dev is None:
            return None
        digest = self.entries.get(key(st, dev))
        if digest is not None:
            self.hits += 1
        return digest

    def lookup_tree(self, root: str, files: dict[str, os.stat_result]) -> dict[str, str]:
        """The cached digests of the files of a walk of the rootfs (`files`: path inside it -> its lstat, of the
        host path `root` + path as the container sees it, unopened): path -> digest, for the hits only. One pass
        over thousands of files, the device part of the key found once per st_dev (key_device)."""
        if self.path is None:
            return {}
        if not self._loaded:
            self._load()
        entries, known, devs, out = self.entries, self._fs, {}, {}
        for path, st in files.items():
            dev = devs.get(st.st_dev, _UNKNOWN)
            if dev is _UNKNOWN:
                dev = devs[st.st_dev] = key_device(known, root + path, st, table=self.mountinfo)
            if dev is None:
                continue
            digest = entries.get(key(st, dev))
            if digest is not None:
                out[path] = digest
        self.hits += len(out)
        return out

    def get(self, fd: int, st: os.stat_result, host: str) -> str | None:
        dev = key_device(self._fs, host, st, fd, self.mountinfo) if self.path is not None else None
        if dev is None:
            return None
        if not self._loaded:
            self._load()
        digest = self.entries.get(key(st, dev))
        if digest is not None:
            self.hits += 1
        return digest

    def settle(self, fd: int, host: str | None = None) -> int | None:
        """settle(fd, host) before a file is hashed, when this cache can remember it (None: it will not)."""
        return settle(fd, host) if self.path is not None else None

    def put(self, fd: int, before: os.stat_result, digest: str, host: str, since: int | None = None) -> None:
        """Remember `digest` of the file open at `fd`, hashed after settle (`since`) with `before` its stat then."""
        if not recordable(before, since):
            return
        dev = key_device(self._fs, host, before, fd, self.mountinfo) if self.path is not None else None
        if dev is None:
            return
        if not self._loaded:
            self._load()
        if key(os.fstat(fd), dev) == key(before, dev):
            self.entries[key(before, dev)] = digest
            self.added += 1

    def save(self) -> None:
        """Write the cache back when it learnt something (atomically; errors ignored: a cache is never needed)."""
        if self.path is None or not (self.added or self._mr_new):
            return
        entries = self.entries
        if len(entries) > MAX_ENTRIES:  # the oldest insertions go first
            entries = dict(list(entries.items())[-MAX_ENTRIES:])
        if self.out >= 0:
            # the directory is out of reach (a user namespace): the host merges what this launch learnt (merge)
            name = os.path.basename(self.path)
            if not self.added:
                return
            doc = {"version": VERSION, "image": name[:-5] if os.path.dirname(self.path) != self.directory else None,
                   "entries": entries}
            data = jsonlite.dumps(doc).encode()
            try:
                while data:
                    data = data[os.write(self.out, data):]
            except OSError:
                pass
            return
        tmp = f"{self.path}.tmp{os.urandom(8).hex()}"  # not the pid: every launch child is pid 2 in its namespace
        try:
            if os.path.dirname(self.path) != self.directory:
                _image_dir(os.path.dirname(self.path))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                doc: dict[str, object] = {"version": VERSION, "entries": entries}
                if self._mr_enclave is not None:
                    doc["mr_enclave"] = self._mr_enclave.hex()
                f.write(jsonlite.dumps(doc))
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _image_dir(d: str) -> None:
    """The directory of the image caches: root-only, as the platform directory; the oldest caches beyond
    MAX_IMAGES removed."""
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    names = [n for n in os.listdir(d) if n.endswith(".json")]
    if len(names) >= MAX_IMAGES:
        def written(n: str) -> int:
            try:
                return os.stat(os.path.join(d, n)).st_mtime_ns
            except OSError:
                return 0

        for n in sorted(names, key=written)[:len(names) - MAX_IMAGES + 1]:
            try:
                os.unlink(os.path.join(d, n))
            except OSError:
                pass


def merge(path: str, sim_dir: str | os.PathLike[str] | None) -> int:
    """Merge into the host's measurement cache the digests a launch in a user namespace learnt and wrote to `path`
    (MeasurementCache.out: only the launch child ever holds it, see sim_runtime.HostSide), then remove it; the number
    of digests added. No manifest measurement is taken from it. Errors ignored: a cache is never needed."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # the file HostSide made
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return 0
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_ENTRIES * 256)
        finally:
            os.close(fd)
        os.unlink(path)
        doc = jsonlite.loads(data) if data else None
    except (OSError, ValueError, UnicodeDecodeError):
        return 0
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("entries"), dict):
        return 0
    image = doc.get("image")  # its mr_enclave is not taken: the host measures the manifest again (HostSide)
    if image is not None and not _hex(image):  # it names a file: never a path
        return 0
    cache = open_cache(sim_dir)
    if cache.path is None:
        return 0
    if image is not None:
        cache.select(image)
    cache.mr_enclave()  # loads it
    new = {k: v for k, v in doc["entries"].items() if type(k) is str and _hex(v) and cache.entries.get(k) != v}
    cache.entries.update(new)
    cache.added = len(new)
    cache.save()
    return len(new)


def _hex(v: object) -> bool:
    """A SHA-256 in hex, as the cache's names and digests are."""
    return type(v) is str and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def open_cache(sim_dir: str | os.PathLike[str] | None) -> MeasurementCache:
    """The host's measurement cache (in the sim platform directory), or a disabled one when $INCLAVARE_SIM_MEASURE_CACHE
    is 0 or the platform directory does not exist yet."""
    from inclavare.tee.sim.platform import platform_path

    d = platform_path(sim_dir)
    if os.environ.get(ENV_DISABLE) == "0" or not os.path.isdir(d):
        return MeasurementCache(None)
    return MeasurementCache(d)
