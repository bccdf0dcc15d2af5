"""The sim launch check's measurement cache: a trusted file's SHA-256 remembered under the file's identity and change
time, so that an unchanged file is not read again at every launch.

Key (of the opened file, fstat after open without following symlinks):
    st_dev, st_ino          which inode it is: a file renamed over it, a bind mount over its path, a copy, another
                            layer's file is another inode on another or the same device
    st_ctime_ns             when its inode last changed: the kernel sets it to the current time at every write,
                            truncate, chmod, chown, link, unlink, rename and utimes, and no system call sets it to a
                            chosen value (utimensat, which restores an mtime, sets ctime to now); only changing the
                            system clock or writing the block device behind the filesystem would, both of which take
                            the host's root, whom the sim TEE trusts anyway (it holds the platform secret)
    st_size, st_mtime_ns, st_mode, st_uid, st_gid, st_nlink
                            belt and braces, and what the manifest compares besides the digest
Only files on filesystems whose ctime the local kernel keeps are cached: ext2/3/4, XFS, Btrfs, tmpfs and
overlayfs (statfs f_type). A network filesystem (NFS, CIFS, 9p) or FUSE reports what a server or a user-space
process says, so its files are hashed at every launch.

A hit is a digest the launch check itself computed from this same inode with no change since. A miss hashes the file
and stores the digest only when the file's key is the same after the hash as before (a write during the hash changes
ctime). The cache is one file, measurements.json, in the sim platform directory (root-only, 0600, beside the
platform secret); a corrupt or unreadable one is ignored and rewritten. Nothing is ever trusted from the image.
"""

from __future__ import annotations

import os

from inclavare.oci import jsonlite

FILE = "measurements.json"
VERSION = 1
MAX_ENTRIES = 200_000
# statfs f_type of the filesystems whose ctime the local kernel maintains
LOCAL_FILESYSTEMS = {0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
                     0x794C7630: "overlay"}
ENV_DISABLE = "INCLAVARE_SIM_MEASURE_CACHE"  # "0": hash every trusted file at every launch


def fs_type(fd: int) -> int:
    """statfs(2) f_type of the filesystem holding the open file `fd` (0 when it cannot be told)."""
    import ctypes

    buf = ctypes.create_string_buffer(120)  # struct statfs on 64-bit Linux; f_type is its first long
    libc = _libc()
    if libc is None or libc.fstatfs(fd, buf) != 0:
        return 0
    return int.from_bytes(buf.raw[:8], "little")


_LIBC: list = []


def _libc():  # noqa: ANN202
    if not _LIBC:
        import ctypes

        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def key(st: os.stat_result) -> str:
    return (f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}:{st.st_uid}:"
            f"{st.st_gid}:{st.st_nlink}")


class MeasurementCache:
    """Digests by file key, loaded from and saved to `directory`/measurements.json."""

    def __init__(self, directory: str | None) -> None:
        self.path = os.path.join(directory, FILE) if directory else None
        self.entries: dict[str, str] = {}
        self.added = 0
        self.hits = 0
        self._fs: dict[int, bool] = {}  # st_dev -> cacheable
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                doc = jsonlite.loads(f.read())
        except (OSError, ValueError, UnicodeDecodeError):
            return
        if isinstance(doc, dict) and doc.get("version") == VERSION and isinstance(doc.get("entries"), dict):
            self.entries = {k: v for k, v in doc["entries"].items()
                            if isinstance(k, str) and isinstance(v, str) and len(v) == 64}

    def cacheable(self, fd: int, st: os.stat_result) -> bool:
        ok = self._fs.get(st.st_dev)
        if ok is None:
            ok = self._fs[st.st_dev] = fs_type(fd) in LOCAL_FILESYSTEMS
        return ok

    def get(self, fd: int, st: os.stat_result) -> str | None:
        if self.path is None or not self.cacheable(fd, st):
            return None
        digest = self.entries.get(key(st))
        if digest is not None:
            self.hits += 1
        return digest

    def put(self, fd: int, before: os.stat_result, digest: str) -> None:
        if self.path is None or not self.cacheable(fd, before):
            return
        after = os.fstat(fd)
        if key(after) == key(before):
            self.entries[key(before)] = digest
            self.added += 1

    def save(self) -> None:
        """Write the cache back when it learnt something (atomically; errors ignored: a cache is never needed)."""
        if self.path is None or not self.added:
            return
        entries = self.entries
        if len(entries) > MAX_ENTRIES:  # the oldest insertions go first
            entries = dict(list(entries.items())[-MAX_ENTRIES:])
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(jsonlite.dumps({"version": VERSION, "entries": entries}))
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def open_cache(sim_dir: str | os.PathLike[str] | None) -> MeasurementCache:
    """The host's measurement cache (in the sim platform directory), or a disabled one when $INCLAVARE_SIM_MEASURE_CACHE
    is 0 or the platform directory does not exist yet."""
    from inclavare.tee.sim.platform import platform_path

    d = platform_path(sim_dir)
    if os.environ.get(ENV_DISABLE) == "0" or not os.path.isdir(d):
        return MeasurementCache(None)
    return MeasurementCache(d)
