"""Sim enclave images: the signed enclave manifest, what it measures, and how a rootfs is checked against it.

A signed image is the rootfs plus ROOTFS/.inclavare/enclave/manifest.json and sigstruct.bin. The manifest's
"enclave" object is the enclave configuration, as SGX LibOSes keep it (Gramine's manifest, Occlum's Occlum.json):

  entrypoints      the programs that may be started as the container's process: [{"path": P}] (arguments free)
                   or [{"path": P, "argv": [...]}] (the whole argv fixed); argv[0] is looked up with the measured PATH
  trusted_roots    the directories whose tree is signed (default ["/"]): nothing may be added under them
  trusted_files    {path: {"sha256", "size", "mode", "uid", "gid"}}: every regular file under the trusted roots
  symlinks         {path: target}: every symlink under the trusted roots
  untrusted_paths  the paths engines manage (/etc/hostname, /etc/hosts, /etc/resolv.conf, /.dockerenv, /dev, /proc,
                   /sys, /run, /tmp, ...): outside the measurement; mount destinations are too, at launch
  env              {name: value}: the measured default environment; the payload always gets it, and a container
                   that sets one of these names to another value is refused
  untrusted_env    names (or NAME* prefixes) the untrusted side may set (HOSTNAME, TERM, HOME, container, ...);
                   any other name is refused
  debug, isv_prod_id, isv_svn, misc_select, xfrm, ssa_frame_size   the SECS/SIGSTRUCT settings
Other keys of "enclave" are kept and measured; keys outside "enclave" are informational and never trusted.

MRENCLAVE (the SGX primitive of inclavare.tee.sgx.measure, every page fully EEXTENDed):
  1. ECREATE with ssa_frame_size and the enclave size: the smallest power of two holding the configuration's pages
     and the pages of every trusted file (as if the image were loaded);
  2. the configuration: canonical JSON of the "enclave" object (sorted keys, no spaces, ASCII), zero-padded to
     pages, from offset 0, SECINFO REG|R.
So MRENCLAVE changes with any change to the manifest, and through the files' digests with any changed file.
"""

from __future__ import annotations

import os
import stat

from inclavare.errors import RuneError
from inclavare.oci import jsonlite
from inclavare.tee import records
from inclavare.tee.sgx import attributes as attr
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sgx.measure import PAGE_SIZE, SECINFO_R, SECINFO_REG, Measurement

TYPE_CHECKING = False  # pathlib (with re, fnmatch, urllib.parse) costs a sim enclave's launch more than its check
if TYPE_CHECKING:
    from pathlib import Path

ENCLAVE_DIR = ".inclavare/enclave"  # inside the rootfs
MANIFEST = "manifest.json"
SIGSTRUCT = "sigstruct.bin"
MANIFEST_VERSION = 2
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what Docker, Podman, containerd add
# what container engines write, mount or create in a container's root: never part of the measurement
UNTRUSTED_PATHS = ("/.dockerenv", "/.containerenv", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/mtab",
                   "/dev", "/proc", "/sys", "/run", "/var/run", "/tmp", "/var/tmp", "/.inclavare")
UNTRUSTED_ENV = ("HOSTNAME", "TERM", "HOME", "container")
_CHUNK = 1 << 16


def canonical_json(value: object) -> bytes:
    return jsonlite.dumps_canonical(value).encode()


class TrustedFile(tuple):
    """A trusted file's signed record: (sha256, size, mode, uid, gid). A tuple rather than a record: a 100 MB image
    has thousands, made at each launch from its manifest (for 4,580 of them, 4.7 ms against a record's 9)."""

    __slots__ = ()

    def __new__(cls, sha256: str, size: int, mode: int, uid: int, gid: int) -> TrustedFile:
        return tuple.__new__(cls, (sha256, size, mode, uid, gid))

    sha256 = property(lambda self: self[0], doc="SHA-256 of the content, hex")
    size = property(lambda self: self[1])
    mode = property(lambda self: self[2], doc="st_mode: file type and permission bits, setuid/setgid/sticky included")
    uid = property(lambda self: self[3])
    gid = property(lambda self: self[4])

    def __repr__(self) -> str:
        return f"TrustedFile(sha256={self[0]!r}, size={self[1]}, mode={self[2]:#o}, uid={self[3]}, gid={self[4]})"

    def to_json(self) -> dict[str, object]:
        return {"sha256": self[0], "size": self[1], "mode": self[2], "uid": self[3], "gid": self[4]}

    @classmethod
    def from_json(cls, path: str, obj: object, where: str) -> TrustedFile:
        ok = isinstance(obj, dict) and isinstance(obj.get("sha256"), str) and all(
            isinstance(obj.get(k), int) and not isinstance(obj.get(k), bool) for k in ("size", "mode", "uid", "gid"))
        if not ok:
            raise RuneError(f"'enclave.trusted_files' entry {path!r} in {where} must be an object with sha256, size, "
                            "mode, uid and gid")
        return cls(obj["sha256"], obj["size"], obj["mode"], obj["uid"], obj["gid"])


@records.record
class Entrypoint:
    path: str
    argv: tuple[str, ...] | None = None  # None: arguments are free

    def to_json(self) -> dict[str, object]:
        return {"path": self.path} if self.argv is None else {"path": self.path, "argv": list(self.argv)}


def _strings(v: object, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise RuneError(f"'enclave.{name}' in {where} must be a list of strings")
    return tuple(v)


@records.record
class EnclaveConfig:
    entrypoints: tuple[Entrypoint, ...]
    trusted_files: dict[str, TrustedFile] = records.field(default_factory=dict)
    symlinks: dict[str, str] = records.field(default_factory=dict)
    trusted_roots: tuple[str, ...] = ("/",)
    untrusted_paths: tuple[str, ...] = UNTRUSTED_PATHS
    env: dict[str, str] = records.field(default_factory=dict)
    untrusted_env: tuple[str, ...] = UNTRUSTED_ENV
    debug: bool = False
    isv_prod_id: int = 0
    isv_svn: int = 0
    misc_select: int = 0
    xfrm: int = attr.XFRM_LEGACY
    ssa_frame_size: int = 1
    extra: dict[str, object] = records.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.entrypoints:
            raise RuneError("the enclave manifest names no entry point")
        for p in [e.path for e in self.entrypoints] + list(self.trusted_files) + list(self.symlinks) + list(
                self.trusted_roots) + list(self.untrusted_paths):
            if not p.startswith("/"):
                raise RuneError(f"the path '{p}' in the enclave manifest must be absolute inside the rootfs")
        for name in self.env:
            if not name or "=" in name:
                raise RuneError(f"the measured environment variable name {name!r} is not a valid name")
        for name, bits in (("isv_prod_id", 16), ("isv_svn", 16), ("misc_select", 32), ("xfrm", 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << bits:
                raise RuneError(f"the enclave setting '{name}' must be an integer in [0, 2**{bits})")
        if not isinstance(self.ssa_frame_size, int) or not 1 <= self.ssa_frame_size <= 16:
            raise RuneError("the enclave setting 'ssa_frame_size' must be an integer from 1 to 16")
        if not isinstance(self.debug, bool):
            raise RuneError("the enclave setting 'debug' must be true or false")

    @property
    def attributes(self) -> Attributes:
        return Attributes(attr.MODE64BIT | (attr.DEBUG if self.debug else 0), self.xfrm)

    @property
    def path(self) -> str:
        """The measured PATH, with which argv[0] is looked up."""
        return self.env.get("PATH", DEFAULT_PATH)

    def to_json(self) -> dict[str, object]:
        return {
            **self.extra, "entrypoints": [e.to_json() for e in self.entrypoints],
            "trusted_roots": list(self.trusted_roots), "untrusted_paths": list(self.untrusted_paths),
            "trusted_files": {p: f.to_json() for p, f in sorted(self.trusted_files.items())},
            "symlinks": dict(sorted(self.symlinks.items())), "env": dict(self.env),
            "untrusted_env": list(self.untrusted_env), "debug": self.debug, "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn, "misc_select": self.misc_select, "xfrm": self.xfrm,
            "ssa_frame_size": self.ssa_frame_size}

    @classmethod
    def from_json(cls, obj: object, where: str = "the enclave manifest") -> EnclaveConfig:
        if not isinstance(obj, dict):
            raise RuneError(f"'enclave' in {where} must be an object")
        eps = obj.get("entrypoints")
        if not isinstance(eps, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in eps):
            raise RuneError(f"'enclave.entrypoints' in {where} must be a list of {{\"path\": ...}} objects")
        entrypoints = tuple(Entrypoint(e["path"], None if e.get("argv") is None else _strings(
            e["argv"], "entrypoints[].argv", where)) for e in eps)
        files = obj.get("trusted_files", {})
        links = obj.get("symlinks", {})
        env = obj.get("env", {})
        for name, v in (("trusted_files", files), ("symlinks", links), ("env", env)):
            if not isinstance(v, dict):
                raise RuneError(f"'enclave.{name}' in {where} must be an object")
        if not all(isinstance(t, str) for t in links.values()) or not all(isinstance(v, str) for v in env.values()):
            raise RuneError(f"'enclave.symlinks' and 'enclave.env' in {where} must map names to strings")
        known = {"entrypoints", "trusted_files", "symlinks", "env", "trusted_roots", "untrusted_paths",
                 "untrusted_env", "debug", "isv_prod_id", "isv_svn", "misc_select", "xfrm", "ssa_frame_size"}
        settings = {k: obj[k] for k in ("debug", "isv_prod_id", "isv_svn", "misc_select", "xfrm", "ssa_frame_size")
                    if k in obj}
        lists = {k: _strings(obj[k], k, where) for k in ("trusted_roots", "untrusted_paths", "untrusted_env") if k in obj}
        return cls(entrypoints=entrypoints, trusted_files=_trusted_files(files, where),
                   symlinks=dict(links), env=dict(env), extra={k: v for k, v in obj.items() if k not in known},
                   **lists, **settings)


def _trusted_files(files: dict, where: str) -> dict[str, TrustedFile]:
    """TrustedFile.from_json of each entry, checked and made without a call per field: a 100 MB image has thousands
    of them, and its launch parses them all."""
    out: dict[str, TrustedFile] = {}
    make, int_, str_, dict_ = tuple.__new__, int, str, dict
    for p, f in files.items():
        try:
            v = (f["sha256"], f["size"], f["mode"], f["uid"], f["gid"])
        except (KeyError, TypeError):
            v = None
        # exactly str and int (bool is an int subclass, refused as TrustedFile.from_json refuses it)
        if v is not None and type(f) is dict_ and type(v[0]) is str_ and type(v[1]) is int_ and \
                type(v[2]) is int_ and type(v[3]) is int_ and type(v[4]) is int_:
            out[p] = make(TrustedFile, v)
        else:
            out[p] = TrustedFile.from_json(p, f, where)  # refuses, naming the entry
    return out


def measure_config(config: EnclaveConfig) -> tuple[bytes, int]:
    """(MRENCLAVE, enclave size) of the enclave `config` describes (order: module docstring)."""
    cfg = canonical_json(config.to_json())
    pages = -(-len(cfg) // PAGE_SIZE) + sum(-(-f.size // PAGE_SIZE) for f in config.trusted_files.values())
    enclave_size = PAGE_SIZE
    while enclave_size < pages * PAGE_SIZE:
        enclave_size *= 2
    m = Measurement()
    m.ecreate(config.ssa_frame_size, enclave_size)
    m.add_pages(0, cfg, SECINFO_REG | SECINFO_R)
    return m.digest(), enclave_size


# ---- the rootfs -------------------------------------------------------------------------------------------------


def resolve_in_rootfs(rootfs: str | os.PathLike[str], path: str) -> Path:
    """The host path of `path` inside `rootfs`, resolving symlinks as if rootfs were / (no escape)."""
    from pathlib import Path

    return Path(resolve_path(rootfs, path))


def resolve_path(rootfs: str | os.PathLike[str], path: str) -> str:
    """resolve_in_rootfs as a string (the launch path's, without pathlib)."""
    root = os.path.realpath(rootfs)
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        if os.path.islink(here):
            links += 1
            if links > 40:
                raise RuneError(f"too many symbolic links resolving '{path}' in the rootfs")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return os.path.join(root, *done)


def host_path(rootfs: str | os.PathLike[str], path: str, memo: dict[str, str] | None = None) -> str:
    """The host path of the file `path` inside `rootfs`: its directory resolved as resolve_in_rootfs does, its last
    name not followed. `memo` (one dict for one pass over a rootfs) keeps each directory's resolution: a launch
    resolves the directory of thousands of trusted files, most of them sharing a few hundred directories."""
    d, name = os.path.split(path)
    if memo is None:
        return os.path.join(resolve_path(rootfs, d), name)
    return os.path.join(_host_dir(rootfs, d, memo), name)


def _host_dir(rootfs: str | os.PathLike[str], d: str, memo: dict[str, str]) -> str:
    """resolve_in_rootfs(rootfs, d) through the memoized resolution of d's parent: a plain name under it is one
    lstat; a symlink, '.', '..' or an empty name takes the full resolution."""
    got = memo.get(d)
    if got is None:
        if d in ("", "/"):
            got = resolve_path(rootfs, "/")
        else:
            parent, name = os.path.split(d)
            candidate = os.path.join(_host_dir(rootfs, parent, memo), name) if parent != d else ""
            if not candidate or name in ("", ".", "..") or os.path.islink(candidate):
                got = resolve_path(rootfs, d)
            else:
                got = candidate
        memo[d] = got
    return got


def canonical_program(rootfs: str | os.PathLike[str], path: str) -> str:
    """`path` with its directory resolved inside the rootfs and its last name kept (a multi-call binary such as
    busybox tells its applets by that name): /bin/sh on a usrmerged root is /usr/bin/sh."""
    path = os.path.normpath("/" + path)
    d, name = os.path.split(path)
    real = os.path.relpath(resolve_path(rootfs, d), os.path.realpath(rootfs))
    return os.path.normpath(os.path.join("/", real, name))


def lookup_program(rootfs: str | os.PathLike[str], name: str, path_env: str, cwd: str = "/") -> str | None:
    """argv[0] as exec finds it in the rootfs: a path when it has a slash, else the first PATH entry holding an
    executable file of that name; None when there is none."""
    if "/" in name:
        return os.path.normpath(os.path.join(cwd or "/", name))
    for d in path_env.split(":"):
        candidate = os.path.join(d or (cwd or "/"), name)
        host = resolve_path(rootfs, candidate)
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return os.path.normpath(candidate)
    return None


def under(path: str, prefixes: tuple[str, ...] | list[str] | set[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _under_set(path: str, prefixes: frozenset[str]) -> bool:
    """under(path, P) for P given as prefix_set(P): a look-up per ancestor of path instead of a scan of P."""
    if "/" in prefixes:
        return True
    while len(path) > 1:
        if path in prefixes:
            return True
        path = path.rpartition("/")[0]
    return False


def prefix_set(prefixes: tuple[str, ...] | list[str] | set[str]) -> frozenset[str]:
    return frozenset(p.rstrip("/") or "/" for p in prefixes)


class Tree:
    def __init__(self) -> None:
        self.files: dict[str, os.stat_result] = {}
        self.symlinks: dict[str, str] = {}
        self.others: dict[str, os.stat_result] = {}  # devices, fifos, sockets


def walk_tree(rootfs: str | os.PathLike[str], roots: tuple[str, ...] | list[str],
              skip: tuple[str, ...] | list[str] | set[str]) -> Tree:
    """Regular files, symlinks and special files under the trusted `roots` (paths inside the rootfs), without
    following symlinks, outside every path in `skip`."""
    real_root = os.path.realpath(rootfs)
    tree = Tree()
    skipset = prefix_set(skip)
    if "/" in skipset:
        return tree
    # the directories that hold a skipped path: only their entries are looked up in skipset
    holders = {p.rpartition("/")[0] or "/" for p in skipset}
    for start in roots:
        host = resolve_path(rootfs, start)
        if under(start, skip) or not os.path.lexists(host):
            continue
        st = os.lstat(host)
        rel = "/" + os.path.relpath(host, real_root)
        rel = "/" if rel in ("/", "/.") else rel.rstrip("/")
        if not stat.S_ISDIR(st.st_mode):
            _add(tree, rel, host, st)
            continue
        _scan(tree, host, "" if rel == "/" else rel, skipset, holders)
    return tree


def _scan(tree: Tree, host: str, base: str, skipset: frozenset[str], holders: set[str]) -> None:
    """One directory of walk_tree (`base`: its path inside the rootfs, "" for the root): its other entries first,
    by name, then its subdirectories, by name, as os.walk goes; one lstat per entry, symlinks never followed."""
    try:
        fd = os.open(host, _DIR_FLAGS)
    except OSError:
        return  # as os.walk: an unreadable directory has no entries (its files are then missing or added)
    try:
        _scan_fd(tree, fd, base, skipset, holders)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _scan_fd(tree: Tree, fd: int, base: str, skipset: frozenset[str], holders: set[str]) -> None:
    """_scan through the directory's fd: each entry's lstat and readlink and each subdirectory's open are relative
    to it (fstatat), not a path the kernel walks again from the root for each of thousands of entries."""
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    check = (base or "/") in holders
    subdirs = []
    files, links, others = tree.files, tree.symlinks, tree.others
    for e in entries:
        name = e.name
        path = f"{base}/{name}"
        if check and path in skipset:
            continue
        if e.is_dir(follow_symlinks=False):
            subdirs.append((name, path))
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue  # gone since the listing: missing, as the launch check then says
        mode = st.st_mode
        if stat.S_ISREG(mode):
            files[path] = st
        elif stat.S_ISLNK(mode):
            links[path] = os.readlink(name, dir_fd=fd)
        elif not stat.S_ISDIR(mode):
            others[path] = st
        else:  # a directory after all (d_type unknown on this filesystem)
            subdirs.append((name, path))
    for name, path in subdirs:
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # unreadable (or replaced by a symlink): no entries, as os.walk
        try:
            _scan_fd(tree, sub, path, skipset, holders)
        finally:
            os.close(sub)


def _add(tree: Tree, path: str, host: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        tree.symlinks[path] = os.readlink(host)
    elif stat.S_ISREG(st.st_mode):
        tree.files[path] = st
    elif not stat.S_ISDIR(st.st_mode):
        tree.others[path] = st


def open_regular(path: str) -> int:
    """A read-only fd (close-on-exec) of the regular file `path`, its last component not followed; -1 when it is not
    a regular file. Looked at through an O_PATH handle first and reopened through /proc/self/fd: a device node (an
    image may hold one) is never opened, its driver's open never run (a watchdog's arms it), nor a FIFO's. OSError
    when it cannot be opened (ELOOP: a symlink)."""
    pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(40, os.strerror(40), path)  # ELOOP, as an open not following it says
        if not stat.S_ISREG(st.st_mode):
            return -1
        try:
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no /proc here: by path, the same inode or nothing
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                os.close(fd)
                return -1
            return fd
    finally:
        os.close(pfd)


def hash_file(rootfs: str | os.PathLike[str], path: str, cache=None,  # noqa: ANN001 - MeasurementCache
              host: str | None = None) -> tuple[TrustedFile, os.stat_result]:
    """The trusted-file record of `path` in the rootfs (opened without following its last component); with a
    MeasurementCache (inclavare.tee.sim.measure_cache), the digest of an unchanged inode comes from it. `host`: the
    file's host path when the caller has resolved it (host_path)."""
    host = host if host is not None else host_path(rootfs, path)
    try:
        # by path (the launch check found a regular file there just before: a device node swapped in since takes
        # the host's root, CAP_MKNOD; a FIFO's open does not block, O_NONBLOCK), fstat'ed before it is read
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise RuneError(f"the trusted file {path} cannot be opened in the rootfs: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RuneError(f"the trusted file {path} is not a regular file")
        digest = cache.get(fd, st, host) if cache is not None else None
        if digest is not None:
            return TrustedFile(digest, st.st_size, st.st_mode, st.st_uid, st.st_gid), st
        import hashlib  # here: a launch whose files are all cache hits never loads it (inclavare.tee.sha256)

        since = None
        if cache is not None:  # its dirty pages written back first, and its key taken after (measure_cache.put)
            since = cache.settle(fd, host)
            if since is not None:
                st = os.fstat(fd)
        h = hashlib.sha256()
        left = st.st_size
        while left > 0:
            buf = os.read(fd, min(_CHUNK, left))
            if not buf:
                break
            h.update(buf)
            left -= len(buf)
        if left or os.read(fd, 1):
            raise RuneError(f"the trusted file {path} changed size while it was being measured")
        if cache is not None:
            cache.put(fd, st, h.hexdigest(), host, since)
        return TrustedFile(h.hexdigest(), st.st_size, st.st_mode, st.st_uid, st.st_gid), st
    finally:
        os.close(fd)


def check_hard_links(found: dict[str, os.stat_result], what: str) -> None:
    """Every name of a multiply linked file must be a trusted file (read-only in the enclave): another name could
    change it behind the measurement."""
    linked = {path: st for path, st in found.items() if st.st_nlink > 1}  # a single link is its only name
    names: dict[tuple[int, int], list[str]] = {}
    for path, st in linked.items():
        names.setdefault((st.st_dev, st.st_ino), []).append(path)
    for path, st in linked.items():
        n = len(names[(st.st_dev, st.st_ino)])
        if st.st_nlink > n:
            names_are = "of its names is a trusted file" if n == 1 else "of its names are trusted files"
            raise RuneError(f"the trusted file {path} has {st.st_nlink} hard links but only {n} {names_are} "
                            f"({what}): another name could change it; copy it so that it has one")


def enclave_dir(rootfs: str | os.PathLike[str]) -> Path:
    from pathlib import Path

    return Path(rootfs) / ENCLAVE_DIR


def enclave_path(rootfs: str | os.PathLike[str]) -> str:
    """enclave_dir as a string (the launch path's, without pathlib)."""
    return os.path.join(rootfs, ENCLAVE_DIR)
