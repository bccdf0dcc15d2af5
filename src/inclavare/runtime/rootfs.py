"""The container's root filesystem, set up inside its new mount namespace: mounts, devices, /dev links,
pivot_root, masked and read-only paths, and the read-only root."""

from __future__ import annotations

import os
import stat

from inclavare.errors import RuneError
from inclavare.linux import mountopts
from inclavare.linux import syscalls as s
from inclavare.linux.securejoin import secure_join

# (path, type, major, minor, mode): the devices every container gets (runtime-spec config-linux.md)
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
)
DEV_LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"),
             ("/proc/self/fd/2", "/dev/stderr"))  # fmt: skip


def _inside(rootfs: str, path: str) -> str:
    return path[len(rootfs) :] or "/"


def prepare_root(rootfs: str, propagation: str | None) -> None:
    """Set the propagation of the whole tree, then make the rootfs a mount point of its own."""
    flags = mountopts.PROPAGATION[propagation] if propagation else s.MS_SLAVE | s.MS_REC
    s.mount(None, "/", None, flags)
    if flags & s.MS_SHARED or not flags & s.MS_REC:
        # the mount holding the rootfs may still be shared (a non-recursive change leaves it as it was)
        _make_parent_private(rootfs)
    s.mount(rootfs, rootfs, None, s.MS_BIND | s.MS_REC)


def _make_parent_private(rootfs: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make that one mount private."""
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split(" ", 5)[4]
            if (rootfs == mp or rootfs.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
    s.mount(None, best, None, s.MS_PRIVATE)


def mount_all(config: dict, rootfs: str, bundle: str, cgroup_paths: dict | None, userns: bool,
              mount_label: str = "") -> None:
    """mount_label: linux.mountLabel where SELinux is on, the context= option of the mounts that take one."""
    for i, m in enumerate(config.get("mounts") or ()):
        try:
            _mount(m, rootfs, bundle, cgroup_paths, userns, config, mount_label)
        except OSError as e:
            dest = m.get("destination")
            src = m.get("source") or m.get("type") or "none"
            raise RuneError(f"config.json mounts[{i}]: cannot mount {src} on {dest}: {e.strerror}") from None


_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _real_root(rootfs: str) -> str:
    """The rootfs as /proc/self/fd/N names what is under it (its own path may go through symlinks of the host)."""
    real = _REAL_ROOTS.get(rootfs)
    if real is None:
        real = _REAL_ROOTS[rootfs] = os.path.realpath(rootfs)
    return real


_REAL_ROOTS: dict[str, str] = {}


def _check_fd(fd: int, rootfs: str, path: str) -> None:
    """Refuse an fd that is not `path` (a secure_join result under rootfs): a symlink swapped in since the join."""
    want = _real_root(rootfs) + path[len(rootfs) :]
    have = os.readlink(f"/proc/self/fd/{fd}")
    if have != want:
        os.close(fd)
        raise OSError(18, f"{path} is {have} by now (it changed after it was resolved): refusing it", path)


def _open(rootfs: str, path: str, create: str = "") -> int:
    """An O_PATH fd of `path`, a secure_join result under rootfs, reached one component at a time without following
    symlinks (the join resolved them inside the rootfs; one that appears since, in a volume another container shares,
    fails with ENOTDIR or ELOOP instead of leading out), and checked through /proc/self/fd.

    create: "" opens what is there; "dir" creates missing directories; "file" creates missing parent directories
    and an empty file at the end (mount points for file bind mounts)."""
    rel = path[len(rootfs) :].strip("/")
    parts = rel.split("/") if rel else []
    fd = os.open(_real_root(rootfs), _O_PATH | os.O_DIRECTORY)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            flags = _O_PATH if last else _O_PATH | os.O_DIRECTORY
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except NotADirectoryError:
                if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _raced("/".join([rootfs, *parts[: i + 1]])) from None
                raise
            except FileNotFoundError:
                if not create:
                    raise
                if last and create == "file":
                    try:
                        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                         0o755, dir_fd=fd))  # fmt: skip
                    except FileExistsError:
                        pass
                else:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                nfd = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISLNK(st.st_mode):
        os.close(fd)
        raise _raced(path)
    if create == "dir" and not stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise NotADirectoryError(20, "Not a directory", path)
    _check_fd(fd, rootfs, path)
    return fd


def make_dir(rootfs: str, path: str) -> None:
    """A directory of the container (`path` as the container sees it) and its parents, made in the rootfs through
    directory fds: a component that is (or becomes) a symlink is resolved inside the rootfs or refused, never
    followed out of it by path (a shared volume swapped for a link to a host directory)."""
    os.close(_open(rootfs, secure_join(rootfs, path), "dir"))


def _raced(path: str) -> OSError:
    return OSError(40, f"{path} became a symbolic link after it was resolved: refusing to follow it", path)


class Target:
    """A mount point in the rootfs held by an O_PATH fd: mount(2) gets /proc/self/fd/N, so it acts on what was
    checked, not on whatever the path names by then (CVE-2021-30465). After a mount, `reopen` takes the new
    mount's root for the remount and propagation calls that follow."""

    def __init__(self, rootfs: str, path: str, create: str = "") -> None:
        self.rootfs = rootfs
        self.path = path
        self.fd = _open(rootfs, path, create)

    @property
    def proc(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def reopen(self) -> str:
        os.close(self.fd)
        self.fd = -1
        self.fd = _open(self.rootfs, self.path)
        return self.proc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _mount(m: dict, rootfs: str, bundle: str, cgroup_paths: dict | None, userns: bool, config: dict,
           mount_label: str = "") -> None:
    dest = secure_join(rootfs, m["destination"])
    typ = m.get("type") or ""
    src = m.get("source") or ""
    flags, props, data, extra = mountopts.parse(m.get("options") or [])
    bind = bool(flags & s.MS_BIND) or typ == "bind"
    if mount_label and not bind:
        from inclavare.linux import lsm

        if typ not in lsm.UNLABELLED_TYPES:
            data = lsm.format_mount_label(data, mount_label)
    if bind:
        if not src.startswith("/"):
            src = os.path.join(bundle, src)
        create = "dir" if stat.S_ISDIR(os.stat(src).st_mode) else "file"
    else:
        create = "dir"
    t = Target(rootfs, dest, create)
    try:
        if bind:
            s.mount(src, t.proc, None, s.MS_BIND | (flags & s.MS_REC))
            rest = flags & ~(s.MS_BIND | s.MS_REC | s.MS_REMOUNT)
            if rest:
                remount_bind(t.reopen(), rest)
        elif typ == "cgroup":
            _mount_cgroup(t, flags, config, cgroup_paths)
        elif typ == "sysfs":
            try:
                s.mount(src or typ, t.proc, typ, flags, data or None)
            except OSError as e:
                if e.errno != 1:
                    raise
                # a sysfs of the host's network namespace cannot be mounted from a user namespace: bind it
                s.mount("/sys", t.proc, None, s.MS_BIND | s.MS_REC)
                remount_bind(t.reopen(), flags | s.MS_RDONLY)
        elif typ == "mqueue" and userns:
            try:
                s.mount(src or typ, t.proc, typ, flags, data or None)
            except OSError:
                s.mount("/dev/mqueue", t.proc, None, s.MS_BIND | s.MS_REC)
        else:
            s.mount(src or typ, t.proc, typ or None, flags, data or None)
        if props:
            target = t.reopen()
            for p in props:
                s.mount(None, target, None, p)
    finally:
        t.close()


def remount_bind(dest: str, flags: int) -> None:
    """Apply flags to a bind mount; keep the flags the kernel locks (user namespaces) if it refuses."""
    try:
        s.mount(None, dest, None, s.MS_BIND | s.MS_REMOUNT | flags)
    except OSError as e:
        if e.errno != 1:
            raise
        s.mount(None, dest, None, s.MS_BIND | s.MS_REMOUNT | flags | mountopts.locked_flags(dest))


def _mount_cgroup(t: Target, flags: int, config: dict, cgroup_paths: dict | None) -> None:
    """/sys/fs/cgroup in the container: the container's own cgroups, read-only unless asked otherwise.

    With a cgroup namespace the hierarchies are mounted fresh (the kernel roots them at the container's cgroup);
    without, the container's cgroup directories are bind-mounted, as runc does.
    """
    paths = cgroup_paths or {}
    own_ns = any(ns.get("type") == "cgroup" for ns in (config.get("linux") or {}).get("namespaces") or ())
    ro = flags & s.MS_RDONLY
    base_flags = s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC | s.MS_RELATIME
    v1 = {k: v for k, v in paths.items() if k not in ("", "unified")}
    unified = paths.get("unified") if v1 else paths.get("") or paths.get("unified")
    if not v1:
        # pure v2: one cgroup2 mount
        if own_ns:
            s.mount("cgroup2", t.proc, "cgroup2", base_flags | ro)
        elif unified:
            s.mount(unified, t.proc, None, s.MS_BIND)
            remount_bind(t.reopen(), base_flags | ro)
        return
    s.mount("tmpfs", t.proc, "tmpfs", base_flags, "mode=755")
    t.reopen()  # the tmpfs: what follows is made in it, through its fd
    mounted: dict[str, str] = {}
    for ctrl, path in sorted(v1.items()):
        # co-mounted controllers (cpu,cpuacct) share one directory: mount it once, under the hierarchy's name
        hier = _hierarchy_name(path, ctrl)
        if hier in mounted:
            continue
        sub = Target(t.rootfs, t.path + "/" + hier, "dir")
        try:
            if own_ns:
                opts = "none," + ctrl if ctrl.startswith("name=") else hier
                s.mount("cgroup", sub.proc, "cgroup", base_flags | ro, opts)
            else:
                s.mount(path, sub.proc, None, s.MS_BIND)
                remount_bind(sub.reopen(), base_flags | ro)
        finally:
            sub.close()
        mounted[hier] = hier
        for alias in hier.split(","):
            if alias != hier:
                try:
                    os.symlink(hier, alias, dir_fd=t.fd)
                except FileExistsError:
                    pass
    if unified:
        sub = Target(t.rootfs, t.path + "/unified", "dir")
        try:
            if own_ns:
                s.mount("cgroup2", sub.proc, "cgroup2", base_flags | ro)
            else:
                s.mount(unified, sub.proc, None, s.MS_BIND)
                remount_bind(sub.reopen(), base_flags | ro)
        finally:
            sub.close()
    if ro:
        remount_bind(t.reopen(), base_flags | s.MS_RDONLY)


def _hierarchy_name(path: str, ctrl: str) -> str:
    """The directory name of a v1 hierarchy under /sys/fs/cgroup, from a cgroup path in it."""
    rest = path[len("/sys/fs/cgroup/") :] if path.startswith("/sys/fs/cgroup/") else ctrl
    return rest.split("/", 1)[0] or ctrl


def make_devices(config: dict, rootfs: str, userns: bool) -> None:
    """Default devices and linux.devices: mknod, or bind mounts of the host's nodes in a user namespace."""
    linux = config.get("linux") or {}
    devices = [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}
               for p, t, ma, mi, mode in DEFAULT_DEVICES]  # fmt: skip
    for i, d in enumerate(linux.get("devices") or ()):
        devices.append(dict(d, _field=f"linux.devices[{i}]"))
    for d in devices:
        dest = secure_join(rootfs, d["path"])
        try:
            _make_device(d, rootfs, dest, userns)
        except OSError as e:
            field = d.get("_field", "default device")
            raise RuneError(f"config.json {field}: cannot create {d['path']}: {e.strerror}") from None


def _make_device(d: dict, rootfs: str, dest: str, userns: bool) -> None:
    """The node is made by name in its directory's fd (checked under the rootfs), never through the path again."""
    if len(dest) <= len(rootfs):
        raise IsADirectoryError(21, "Is a directory", dest)  # the path named the root itself
    parent, name = dest.rsplit("/", 1)
    dirfd = _open(rootfs, parent, "dir")
    try:
        if userns:
            t = Target(rootfs, dest, "file")
            try:
                s.mount(d["path"], t.proc, None, s.MS_BIND)
            finally:
                t.close()
            return
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
        mode = d.get("fileMode")
        if mode is None:
            mode = 0o666
        try:
            os.unlink(name, dir_fd=dirfd)
        except FileNotFoundError:
            pass
        os.mknod(name, kind | mode, os.makedev(d.get("major") or 0, d.get("minor") or 0), dir_fd=dirfd)
        fd = os.open(name, _O_PATH, dir_fd=dirfd)
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
                raise OSError(18, "was replaced after it was made: refusing it", dest)
            node = f"/proc/self/fd/{fd}"
            os.chmod(node, mode)
            os.chown(node, d.get("uid") or 0, d.get("gid") or 0)
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)


def dev_links(rootfs: str) -> None:
    """/dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx, made by name in /dev's fd: a /dev that is a symlink in
    the image (dev -> /tmp/x) resolves inside the rootfs, never to the host's /tmp/x."""
    dev = _open(rootfs, secure_join(rootfs, "/dev"), "dir")
    try:
        for target, link in DEV_LINKS:
            try:
                os.symlink(target, link[len("/dev/") :], dir_fd=dev)
            except FileExistsError:
                pass
        if os.path.exists("/proc/kcore"):
            try:
                os.symlink("/proc/kcore", "core", dir_fd=dev)
            except FileExistsError:
                pass
        try:
            pts = stat.S_ISDIR(os.stat("pts", dir_fd=dev, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            pts = False
        if pts:
            try:
                os.unlink("ptmx", dir_fd=dev)
            except FileNotFoundError:
                pass
            os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
    finally:
        os.close(dev)


def dev_is_bind(config: dict) -> bool:
    for m in config.get("mounts") or ():
        if m.get("destination", "").rstrip("/") == "/dev":
            opts = m.get("options") or ()
            return m.get("type") == "bind" or "bind" in opts or "rbind" in opts
    return False


def pivot(rootfs: str) -> None:
    """pivot_root into rootfs without a put_old directory: stack the old root under the new, then detach it."""
    old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        s.pivot_root(".", ".")
        os.fchdir(old)
        s.mount(None, ".", None, s.MS_SLAVE | s.MS_REC)
        s.umount2(".", s.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def move_root(rootfs: str) -> None:
    """--no-pivot: move the rootfs over / and chroot into it (for ramfs roots, where pivot_root cannot work)."""
    os.chdir(rootfs)
    s.mount(rootfs, "/", None, s.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def finalize(config: dict) -> None:
    """After pivot_root: sysctls, read-only and masked paths, then the read-only root.

    Every target is opened first and acted on through /proc/self/fd, so that what was checked is what is changed:
    sysctls are written through the container's procfs without crossing a mount or a link (a bind mount over a
    /proc/sys file would redirect the write: CVE-2025-52881), and masks come from a /dev/null that is the null
    device (a /dev/null replaced by a link to a host procfs file would be bound over the path: CVE-2025-31133)."""
    linux = config.get("linux") or {}
    sysctl = linux.get("sysctl") or {}
    if sysctl:
        _write_sysctls(sysctl)
    for i, p in enumerate(linux.get("readonlyPaths") or ()):
        try:
            _readonly(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RuneError(f"config.json linux.readonlyPaths[{i}]: cannot make {p} read-only: {e.strerror}") from None
    masked = linux.get("maskedPaths") or ()
    null = _null_device() if masked else -1
    try:
        for i, p in enumerate(masked):
            try:
                _mask(p, null)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise RuneError(f"config.json linux.maskedPaths[{i}]: cannot mask {p}: {e.strerror}") from None
    finally:
        if null >= 0:
            os.close(null)
    if linux.get("rootfsPropagation") in ("shared", "rshared", "slave", "rslave", "unbindable", "runbindable"):
        s.mount(None, "/", None, mountopts.PROPAGATION[linux["rootfsPropagation"]])
    if (config.get("root") or {}).get("readonly"):
        remount_bind("/", s.MS_RDONLY)


def _write_sysctls(sysctl: dict) -> None:
    try:
        proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RuneError(f"config.json linux.sysctl: the container has no /proc to set them in: {e.strerror}") from None
    try:
        if s.fstatfs_type(proc) != s.PROC_SUPER_MAGIC:
            raise RuneError("config.json linux.sysctl: /proc in the container is not a procfs: refusing to write there")
        for key, value in sysctl.items():
            rel = "sys/" + key.replace(".", "/")
            try:
                fd = s.openat2(proc, rel, os.O_WRONLY | os.O_CLOEXEC,
                               s.RESOLVE_NO_XDEV | s.RESOLVE_NO_MAGICLINKS | s.RESOLVE_NO_SYMLINKS | s.RESOLVE_BENEATH)
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as e:
                raise RuneError(f"config.json linux.sysctl.{key}: cannot set it to {value!r}: {e.strerror}") from None
    finally:
        os.close(proc)


def _readonly(p: str) -> None:
    fd = os.open(p, os.O_PATH | os.O_CLOEXEC)
    try:
        s.mount(f"/proc/self/fd/{fd}", f"/proc/self/fd/{fd}", None, s.MS_BIND | s.MS_REC)
    finally:
        os.close(fd)
    fd = os.open(p, os.O_PATH | os.O_CLOEXEC)  # the new mount's root
    try:
        remount_bind(f"/proc/self/fd/{fd}", s.MS_RDONLY | s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC)
    finally:
        os.close(fd)


def _null_device() -> int:
    """An O_PATH fd of the container's /dev/null, checked to be the null device (character 1:3)."""
    try:
        fd = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise RuneError(f"config.json linux.maskedPaths: the container has no /dev/null to mask with: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise RuneError("config.json linux.maskedPaths: /dev/null in the container is not the null device "
                        "(character device 1:3): refusing to mask paths with it")
    return fd


def _mask(p: str, null: int) -> None:
    fd = os.open(p, os.O_PATH | os.O_CLOEXEC)
    try:
        target = f"/proc/self/fd/{fd}"
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            s.mount("tmpfs", target, "tmpfs", s.MS_RDONLY)
        else:
            s.mount(f"/proc/self/fd/{null}", target, None, s.MS_BIND)
    finally:
        os.close(fd)
