"""The processes that become the container: the intermediate process, which enters and creates the namespaces,
and the container init, which sets up the root filesystem and the process, then waits for `start` and execs.

rune (parent)
  └─ intermediate: joins the cgroup, setns() into namespaces given by path, unshare() the new ones (waiting for the
     parent to write uid/gid maps), forks the init and exits
       └─ init: PID 1 of a new pid namespace; mounts, devices, pivot_root, console, credentials, then blocks on the
          exec fifo (create) or the sync socket (run) and execs the user process

Both report to the parent over one SOCK_SEQPACKET socket: a message is one byte of kind and a payload
(see MSG_*). Any exception in either becomes an error message and the process exits; the parent cleans up.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError, q
from inclavare.linux import syscalls

# child -> parent
MSG_MAPS = b"U"  # intermediate: write my uid/gid maps
MSG_PID = b"P"  # intermediate: the init's pid
MSG_HOOKS = b"H"  # init: namespaces and mounts ready; run the runtime hooks and send MSG_RESUME
MSG_READY = b"Y"  # init: blocked before exec
MSG_ERROR = b"E"  # either: payload is the error sentence
MSG_PTY = b"T"  # init: pty master attached (foreground terminal run)
MSG_SECCOMP = b"S"  # init: seccomp notify fd attached, for the listenerPath
# parent -> child
MSG_MAPS_DONE = b"K"
MSG_CGROUP = b"C"  # payload: the cgroup paths (JSON); the cgroup exists
MSG_RESUME = b"R"  # payload: state JSON for the createContainer/startContainer hooks (or empty)
MSG_GO = b"G"  # run without exec fifo: exec now
MSG_ABORT = b"A"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CATCH = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM: a created container dies on them, as runc's does


class Launch:
    """What the parent hands to the children."""

    def __init__(self, config: dict, rootfs: str, bundle: str, sock, fifo: str | None) -> None:
        self.config = config
        self.rootfs = rootfs
        self.bundle = bundle
        self.sock = sock  # child end of the sync socket
        self.fifo = fifo  # exec fifo path (create) or None (run)
        self.cgroup_paths: dict | None = None  # from MSG_CGROUP, once the parent has made the cgroup
        self.join_cgroup = False  # the intermediate joins the cgroup itself (needed before a new cgroup namespace)
        self.born_in_cgroup = False  # the init was forked into the cgroup2 directory (clone3 CLONE_INTO_CGROUP)
        self.cgroup_late = False  # the cgroup is made after the fork (systemd's scope needs the pid): wait for it
        self.seccomp = None  # compiled seccomp filter
        self.console_sock = None  # connected --console-socket
        self.tty_to_parent = False  # foreground run with a terminal: send the pty master to the parent
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = 0
        self.hook_sync = False  # the parent runs hooks (or sends state) between mounts and pivot_root
        self.executor = None  # callable(Launch, path, args, env) replacing execve (enclave runtimes plug in here)
        self.pre_pivot = None  # callable(Launch): after the mounts, before pivot_root (an enclave runtime loads)
        self.pre_ready = None  # callable(Launch): after the process setup, before create reports ready
        self.fifo_fd = -1  # an O_PATH handle to the fifo, opened by the parent (which can reach --root)
        self.fifo_fd_path = ""  # the fifo through /proc/self/fd, valid after pivot_root
        self.nofile: tuple[int, int] | None = None  # process.rlimits RLIMIT_NOFILE, set right before execve
        self.pre_namespaces = None  # callable(): in the host's namespaces, before the init enters the container's
        self.start_state: dict = {}  # state for startContainer hooks
        self.pdeathsig = False  # the init dies with rune until it has reported ready
        self.fifo_wfd = -1  # the exec fifo's write end, open from `start` until execve
        self.apparmor_profile = ""  # process.apparmorProfile, where AppArmor is on (see lsm_labels)
        self.selinux_label = ""  # process.selinuxLabel, where SELinux is on
        self.mount_label = ""  # linux.mountLabel, where SELinux is on
        self.origin: dict[str, str] = {}  # where a process field came from when not config.json ("process.cwd": "--cwd")
        # why the exec trampoline may not be exec'd by its /proc path if execveat is refused (dmz.execve), as a
        # phrase: where the process is; "" for an init in the mount namespace it made (see container_init)
        self.shared_mounts = "in a running container"

    def field(self, key: str) -> str:
        """How a sentence names the process field `key`: the flag or file it came from, or config.json's field."""
        return self.origin.get(key) or f"config.json {key}"


def _send(sock, kind: bytes, payload: bytes = b"") -> None:
    sock.send(kind + payload)


def _fail(sock, e: BaseException) -> str:
    if isinstance(e, RuneError):
        msg = str(e)
    elif isinstance(e, OSError):
        msg = f"{q(str(e.filename))}: {e.strerror or e}" if e.filename else f"{e.strerror or e}"
    else:  # a bug, not the user's input: say so, in one line
        msg = f"internal error in the container's init process: {type(e).__name__}: {ascii(str(e))[1:-1]}"
    try:
        _send(sock, MSG_ERROR, msg.encode(errors="replace"))
    except OSError:
        pass
    return msg


def _recv(ctx: Launch, want: bytes) -> bytes:
    """The next message of kind `want`; MSG_CGROUP may come at any time and is kept whoever reads it."""
    while True:
        msg = ctx.sock.recv(1 << 20)
        kind = msg[:1]
        if kind == MSG_CGROUP:
            from inclavare.oci import jsonlite

            ctx.cgroup_paths = jsonlite.loads(msg[1:])
            if want == MSG_CGROUP:
                return msg
            continue
        if kind == want:
            return msg
        os._exit(1)  # the parent gave up (EOF or abort): it cleans up


def cgroup_paths(ctx: Launch) -> dict:
    if ctx.cgroup_paths is None:
        _recv(ctx, MSG_CGROUP)
    return ctx.cgroup_paths or {}


# Namespaces that unshare(2) and setns(2) apply to the caller's future children only: the parent arranges them
# before it forks the init directly (see create.py), so no intermediate process is needed.
FOR_CHILDREN = ("pid", "time")


def undumpable_fork(fork=os.fork) -> int:
    """fork() whose child is non-dumpable from its first instruction until it execs: no process of the container
    it enters can open its /proc/PID/exe (the host's interpreter: CVE-2019-5736), fd/, environ or mem, nor ptrace
    it (CVE-2016-9962). The flag lives in the memory descriptor that fork copies; the parent gets its own back."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    try:
        pid = fork()
    except BaseException:
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
        raise
    if pid != 0:
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
    return pid


def close_host_fds(ctx: Launch, *extra: int) -> None:
    """Close (not only mark close-on-exec) every fd above stdio and the --preserve-fds but the sync socket, the
    console socket and `extra`: fds inherited from rune's caller or opened by rune before the fork (a cgroup2
    directory, namespace files) must not exist in a process that enters the container, which could reach them
    through /proc/self/fd while it still runs (CVE-2024-21626)."""
    keep = [ctx.sock.fileno(), *extra]
    if ctx.console_sock is not None:
        keep.append(ctx.console_sock.fileno())
    if ctx.fifo_fd >= 0:
        keep.append(ctx.fifo_fd)  # the exec fifo, opened by the parent where the path is reachable
    close_fds_from(3 + ctx.preserve_fds, keep)


def close_fds_from(lowest: int, keep) -> None:  # noqa: ANN001 - iterable of fds
    start = lowest
    for k in sorted(k for k in keep if k >= lowest):
        if k > start:
            _close_range(start, k - 1)
        start = max(start, k + 1)
    _close_range(start, 0xFFFFFFFF)


def _close_range(first: int, last: int) -> None:
    try:
        syscalls.close_range(first, last)
    except OSError:  # a kernel before 5.9
        for name in os.listdir("/proc/self/fd"):
            if first <= int(name) <= last:
                try:
                    os.close(int(name))
                except OSError:
                    pass


def init_direct(ctx: Launch) -> None:
    """The init forked by rune itself (no user namespace): it enters its other namespaces; never returns.

    Until it reports ready it dies with rune (PR_SET_PDEATHSIG), so that a rune killed half-way leaves no init."""
    try:
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, 9)
        # rune may have died before the line above (getppid() cannot tell: the parent is outside our pid
        # namespace): then our end of the socket reads EOF
        try:
            if ctx.sock.recv(1, 0x2 | 0x40) == b"":  # MSG_PEEK | MSG_DONTWAIT
                os._exit(1)
        except BlockingIOError:
            pass
        ctx.pdeathsig = True
        close_host_fds(ctx)
        if ctx.cgroup_late:
            cgroup_paths(ctx)  # rune has moved us into the cgroup when this message comes
        join_own_cgroups(ctx)
        _preimport(ctx.config, {ns["type"]: "" for ns in (ctx.config.get("linux") or {}).get("namespaces") or ()})
        if ctx.pre_namespaces is not None:
            ctx.pre_namespaces()
        _enter_namespaces(ctx, skip=FOR_CHILDREN)
    except BaseException as e:  # noqa: BLE001 - everything becomes a message to the parent
        _fail(ctx.sock, e)
        os._exit(1)
    container_init(ctx)


def join_own_cgroups(ctx: Launch) -> None:
    """Move this process, single-threaded, into the container's cgroups without the cgroup write lock: v1
    hierarchies by writing 0 to `tasks` (the kernel skips the lock for the caller's own thread); the cgroup2
    directory by having been born in it (clone3), else through cgroup.procs."""
    for key, path in (ctx.cgroup_paths or {}).items():
        if key == "":
            if ctx.born_in_cgroup:
                continue
            name = "cgroup.procs"
        else:
            name = "tasks"
        try:
            with open(f"{path}/{name}", "w") as f:
                f.write("0")
        except OSError as e:
            raise RuneError(f"cannot join the container's cgroup {path}: {e.strerror}") from None


def intermediate(ctx: Launch) -> None:
    """Runs in the first child; never returns."""
    code = 1
    try:
        close_host_fds(ctx)
        # import before entering a user namespace: the container's root may not reach this package's files
        _preimport(ctx.config, {ns["type"]: "" for ns in (ctx.config.get("linux") or {}).get("namespaces") or ()})
        if ctx.pre_namespaces is not None:
            ctx.pre_namespaces()
        _enter_namespaces(ctx)
        pid = os.fork()
        if pid == 0:
            container_init(ctx)  # never returns
        _send(ctx.sock, MSG_PID, str(pid).encode())
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything becomes a message to the parent
        _fail(ctx.sock, e)
    os._exit(code)


def _enter_namespaces(ctx: Launch, skip: tuple[str, ...] = ()) -> None:
    linux = ctx.config.get("linux") or {}
    namespaces = [ns for ns in linux.get("namespaces") or () if ns["type"] not in skip]
    if ctx.join_cgroup:
        # a new cgroup namespace is rooted at the cgroup we are in when unsharing it: join first
        for path in cgroup_paths(ctx).values():
            with open(path + "/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
    from inclavare.oci.config import NAMESPACES

    joins = [(ns["type"], ns["path"]) for ns in namespaces if ns.get("path")]
    joins.sort(key=lambda t: t[0] != "user")  # the user namespace first: it owns the others
    for typ, path in joins:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(fd, NAMESPACES[typ])
            finally:
                os.close(fd)
        except OSError as e:
            raise RuneError(f"config.json linux.namespaces: cannot join the {typ} namespace {path}: {e.strerror}") from None
    flags = 0
    for ns in namespaces:
        if not ns.get("path"):
            flags |= NAMESPACES[ns["type"]]
    if flags:
        try:
            syscalls.unshare(flags)
        except OSError as e:
            raise RuneError(f"config.json linux.namespaces: cannot create namespaces: {e.strerror}") from None
    if flags & syscalls.CLONE_NEWUSER:
        rootless = os.geteuid() != 0
        if rootless:
            # an unprivileged rune may write only to /proc files of a process that it owns: dumpable meanwhile (it
            # has entered no container path yet), non-dumpable again before anything of the container is reached
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1)
        _send(ctx.sock, MSG_MAPS)
        _recv(ctx, MSG_MAPS_DONE)
        if rootless:
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    if flags & syscalls.CLONE_NEWTIME:
        # before the switch to the mapped root, which makes /proc/self/timens_offsets unwritable
        write_time_offsets(linux.get("timeOffsets"))
    if any(ns.get("type") == "user" for ns in namespaces):
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError as e:
            raise RuneError(
                "config.json linux.uidMappings/gidMappings: the user namespace has no mapping for the container's "
                f"root (uid and gid 0): {e.strerror}"
            ) from None


def write_time_offsets(offsets: dict | None) -> None:
    """Offsets of a new time namespace, before any process enters it."""
    if offsets:
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, v in offsets.items():
                f.write(f"{clock} {v.get('secs', 0)} {v.get('nanosecs', 0)}\n")


def container_init(ctx: Launch) -> None:
    """Runs as the container's init; never returns."""
    sock = ctx.sock
    try:
        # wait, idle, until rune has moved us into the cgroup (a busy CPU slows that move: see create._fork_init)
        cgroup_paths(ctx)
        path, args, env = _prepare(ctx)
        if ctx.pre_ready is not None:
            ctx.pre_ready(ctx)
        if ctx.fifo is not None:
            _check_fifo(ctx)
    except BaseException as e:  # noqa: BLE001
        _fail(sock, e)
        os._exit(1)
    try:
        if ctx.pdeathsig:
            # from now on the container outlives `rune create`: cleared before MSG_READY, since rune may exit as
            # soon as it reads it (cleared after, a descheduled init was killed with its parent: docker's create)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, 0)
        _send(sock, MSG_READY)
        if ctx.fifo is not None:
            _wait_fifo(ctx)
        else:
            _recv(ctx, MSG_GO)
        config = ctx.config
        hooks = (config.get("hooks") or {}).get("startContainer")
        ctx.shared_mounts = _shared_mounts(config, bool(hooks))
        if hooks:
            from inclavare.oci import hooks as oci_hooks

            def execve(path: str, args: list[str], env: dict[str, str]) -> None:
                from inclavare.linux import dmz

                try:
                    dmz.execve(path, args, env)
                except dmz.NeedsExecveat as e:
                    raise OSError(e.errno, execveat_refused(config, path, "in the container", e)) from None

            # its path resolves in the container: exec'd through the trampoline, with no environment of rune's
            oci_hooks.run("startContainer", hooks, ctx.start_state, execve=execve, environ={})
        _exec(ctx, path, args, env)
    except BaseException as e:  # noqa: BLE001
        msg = _fail(sock, e)
        if ctx.fifo is not None:  # after `start` no rune reads the socket: say it on the stdio `create` gave, as runc
            os.write(2, msg.encode(errors="replace") + b"\n")
            if ctx.fifo_wfd >= 0:
                try:
                    os.write(ctx.fifo_wfd, b"E" + msg.encode(errors="replace")[:4000])  # `rune start` reports it
                except OSError:
                    pass
        os._exit(1)


def _shared_mounts(config: dict, hooks: bool) -> str:
    """Launch.shared_mounts for the init: "" (the trampoline may be exec'd by its /proc path) only in a mount
    namespace the init made itself, before any program of the container has run in it (a startContainer hook would
    be one). Until then only rune's processes and the config's createContainer hooks have been in it: a `rune exec`
    would need execveat under the same seccomp profile (it is never given the path), and another container can
    join it only through a config that names this init's namespace by path, the operator's choice to share it."""
    namespaces = {ns.get("type"): ns.get("path") for ns in (config.get("linux") or {}).get("namespaces") or ()}
    if "mount" not in namespaces:
        return "in a mount namespace the container shares (linux.namespaces has no mount namespace)"
    if namespaces["mount"]:
        return "in the mount namespace it joins (linux.namespaces)"
    if hooks:
        return "after a startContainer hook (hooks.startContainer) ran in the container"
    return ""


def execveat_refused(config: dict, program: str, where: str, e: OSError) -> str:
    """The sentence for dmz.NeedsExecveat: execveat failed where the trampoline is not exec'd by a path."""
    if (config.get("linux") or {}).get("seccomp"):
        return (f'the seccomp profile (linux.seccomp) denies execveat ({e.strerror}), which rune needs to exec '
                f'"{program}" through its sealed exec trampoline {where}; allow execveat in the profile')
    return f'cannot exec "{program}" through rune\'s sealed exec trampoline {where}: execveat: {e.strerror}'


def _check_fifo(ctx: Launch) -> None:
    """Before create reports ready: that the init will be able to open the exec fifo when `start` comes (through
    /proc, with a descriptor to spare), so that create never succeeds for an init that is bound to die."""
    try:
        os.close(os.open(ctx.fifo_fd_path, os.O_PATH | os.O_CLOEXEC))
    except OSError as e:
        if e.errno == 24:  # EMFILE
            why = "process.rlimits RLIMIT_NOFILE leaves the container's init no file descriptor for it"
        else:
            why = "it is reached through /proc/self/fd, and /proc is not mounted in the container (add a proc mount " \
                  "on /proc, or use `rune run`)"
        raise RuneError(f"config.json: the container cannot wait for `rune start` on the exec fifo ({e.strerror}): "
                        f"{why}") from None


def _wait_fifo(ctx: Launch) -> None:
    """Block until `rune start` opens the fifo for reading, then tell it we go."""
    import _signal

    def die(signum: int, _frame: object) -> None:
        os._exit(128 + signum)

    for sig in _CATCH:
        _signal.signal(sig, die)
    fd = os.open(ctx.fifo_fd_path, os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    # kept open: execve closes it (close-on-exec), which tells `rune start` that the process runs, after the
    # startContainer hooks, so that its poststart hooks come after them as the runtime spec orders
    ctx.fifo_wfd = fd
    for sig in _CATCH:
        _signal.signal(sig, _signal.SIG_DFL)


def _prepare(ctx: Launch) -> tuple[str, list[str], dict[str, str]]:
    config = ctx.config
    linux = config.get("linux") or {}
    process = config["process"]
    namespaces = {ns["type"]: ns.get("path") or "" for ns in linux.get("namespaces") or ()}
    userns = "user" in namespaces
    os.setsid()
    os.umask(0)
    if not ctx.no_new_keyring:
        try:
            syscalls.join_session_keyring(None)
        except OSError as e:
            if e.errno not in (38, 1):  # ENOSYS, EPERM (keyrings disabled or in a user namespace)
                raise
    set_oom_score_adj(process)
    try:
        os.chdir(ctx.bundle)
    except OSError as e:
        hint = " (the user namespace's root must be able to reach the bundle and the rootfs)" if userns else ""
        raise RuneError(f"cannot enter the bundle {ctx.bundle}: {e.strerror}{hint}") from None
    if ctx.fifo is not None:
        # keep a handle to the fifo that survives pivot_root
        fd = ctx.fifo_fd if ctx.fifo_fd >= 0 else os.open(ctx.fifo, os.O_PATH | os.O_CLOEXEC)
        ctx.fifo_fd_path = f"/proc/self/fd/{above(fd, 3 + ctx.preserve_fds)}"
    rootfs = ctx.rootfs
    if "mount" in namespaces:
        from inclavare.runtime import rootfs as rfs

        try:
            rfs.prepare_root(rootfs, linux.get("rootfsPropagation"))
        except OSError as e:
            raise RuneError(f"cannot make {rootfs} the container's root mount: {e.strerror}") from None
        has_cgroup_mount = any(m.get("type") == "cgroup" for m in config.get("mounts") or ())
        paths = cgroup_paths(ctx) if has_cgroup_mount else None
        rfs.mount_all(config, rootfs, ctx.bundle, paths, userns, ctx.mount_label)
        if not rfs.dev_is_bind(config):
            rfs.make_devices(config, rootfs, userns)
            rfs.dev_links(rootfs)
        try:
            rfs.make_dir(rootfs, process.get("cwd") or "/")
        except OSError:
            pass  # reported by chdir below, after the user switch
    if ctx.hook_sync:
        _send(ctx.sock, MSG_HOOKS)
        reply = _recv(ctx, MSG_RESUME)
        from inclavare.oci import jsonlite

        state = jsonlite.loads(reply[1:]) if len(reply) > 1 else {}
        ctx.start_state = dict(state, status="created")
        hooks = (config.get("hooks") or {}).get("createContainer")
        if hooks:
            from inclavare.oci import hooks as oci_hooks

            oci_hooks.run("createContainer", hooks, state)
    if ctx.pre_pivot is not None:
        ctx.pre_pivot(ctx)
    if "mount" in namespaces:
        from inclavare.runtime import rootfs as rfs

        try:
            if ctx.no_pivot:
                rfs.move_root(rootfs)
            else:
                rfs.pivot(rootfs)
        except OSError as e:
            raise RuneError(f"cannot change the root to {rootfs}: {e.strerror}") from None
    else:
        os.chroot(rootfs)
        os.chdir("/")
    if "uts" in namespaces:  # new, or joined by path (as runc: the name is set in the joined namespace)
        if config.get("hostname"):
            syscalls.sethostname(config["hostname"])
        if config.get("domainname"):
            syscalls.setdomainname(config["domainname"])
    if "network" in namespaces and not namespaces["network"]:
        from inclavare.linux import net

        try:
            net.loopback_up()
        except OSError:
            pass
    if process.get("terminal"):
        setup_terminal(ctx, process)
    if "mount" in namespaces:
        from inclavare.runtime import rootfs as rfs

        rfs.finalize(config)
    return _finish_process(ctx, process, linux)


def _preimport(config: dict, namespaces: dict) -> None:
    """Import now what runs after pivot_root, when this package's files are out of reach."""
    import _signal  # noqa: F401

    from inclavare.linux import (
        capabilities,  # noqa: F401
        dmz,
    )

    dmz.sealed_fd()  # made now: a strict seccomp profile may refuse memfd_create later

    process = config["process"]
    if "mount" in namespaces:
        from inclavare.linux import securejoin  # noqa: F401
        from inclavare.runtime import rootfs  # noqa: F401
    if "network" in namespaces:
        from inclavare.linux import net  # noqa: F401
    if process.get("terminal"):
        from inclavare.linux import console  # noqa: F401
    hooks = config.get("hooks") or {}
    if any(hooks.get(k) for k in ("prestart", "createRuntime", "createContainer", "startContainer")):
        import select  # noqa: F401

        from inclavare.oci import hooks as _hooks  # noqa: F401
        from inclavare.oci import jsonlite  # noqa: F401
    if (config.get("linux") or {}).get("personality") or process.get("execCPUAffinity"):
        from inclavare.oci import config as _config  # noqa: F401
    if process.get("ioPriority"):
        import ctypes  # noqa: F401


def setup_terminal(ctx: Launch, process: dict, bind_console: bool = True) -> None:
    """A new pty of the container's devpts becomes the controlling terminal and stdio (bound on /dev/console for
    the init); the master goes to the --console-socket, or to the rune process that proxies it."""
    from inclavare.linux import console

    try:
        master, _ = console.open_pty("/dev/ptmx")
        slave = console.open_peer(master)
    except OSError as e:
        raise RuneError(f"cannot open a pty in the container ({e.filename or '/dev/ptmx'}: {e.strerror})") from None
    size = process.get("consoleSize")
    if size:
        console.set_size(slave, size.get("height", 0), size.get("width", 0))
    if bind_console:
        _bind_console(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    console.make_controlling(0)
    if ctx.console_sock is not None:
        console.send_fds(ctx.console_sock, b"/dev/ptmx", [master])
        ctx.console_sock.close()
    else:
        console.send_fds(ctx.sock, MSG_PTY, [master])
    os.close(master)


def _bind_console(slave: int) -> None:
    """The pty bound on /dev/console, from its fd onto the mount point's fd: neither is followed through a link."""
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o666))
        except FileExistsError:
            pass
        target = os.open("/dev/console", os.O_PATH | nofollow)
    except OSError:
        return  # no writable /dev: the pty still works
    try:
        import stat

        mode = os.fstat(target).st_mode
        if stat.S_ISREG(mode) or stat.S_ISCHR(mode):  # not a link, a directory or a fifo swapped in
            syscalls.mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{target}", None, syscalls.MS_BIND)
    except OSError:
        pass
    finally:
        os.close(target)


def _finish_process(ctx: Launch, process: dict, linux: dict) -> tuple[str, list[str], dict[str, str]]:
    """Credentials, limits and the program to exec, checked before the container reports ready."""
    env = {}
    for e in process.get("env") or ():
        k, _, v = e.partition("=")
        env[k] = v
    user = process.get("user") or {}
    uid = user.get("uid", 0)
    gid = user.get("gid", 0)
    if "HOME" not in env:
        env["HOME"] = _home_of(uid)
    for i, r in enumerate(process.get("rlimits") or ()):
        soft, hard = r["soft"], r["hard"]
        if r["type"] == "RLIMIT_NOFILE" and ctx.fifo is not None and ctx.executor is None:
            # the init opens the exec fifo at `start`, after this: until execve it keeps a few descriptors more
            # than a very low limit leaves (lowering the hard limit needs no privilege; the exact limit comes last)
            ctx.nofile = (soft, hard)
            floor = min(3 + ctx.preserve_fds + 16, syscalls.getrlimit(7)[1])
            soft, hard = max(soft, floor), max(hard, floor)
        try:
            syscalls.setrlimit(syscalls.RLIMITS[r["type"]], soft, hard)
        except OSError as e:
            raise RuneError(
                f"config.json process.rlimits[{i}]: cannot set {r['type']} to {r['soft']}:{r['hard']}: {e.strerror}"
            ) from None
    pers = linux.get("personality")
    if pers:
        from inclavare.oci.config import PERSONALITY_DOMAINS

        syscalls.personality(PERSONALITY_DOMAINS[pers["domain"]])
    _io_and_sched(process)
    cwd = process.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError:
        pass  # may only be reachable as the user: retried below
    nnp = process.get("noNewPrivileges")
    if ctx.apparmor_profile or ctx.selinux_label:
        apply_exec_labels(ctx)  # as root still (the attr files of a non-dumpable process are root's) and before seccomp
    if ctx.seccomp is not None and not nnp:
        _load_seccomp(ctx)
    from inclavare.linux import capabilities

    try:
        capabilities.apply(process.get("capabilities"), uid, gid, user.get("additionalGids"))
    except capabilities.Unavailable as e:
        raise RuneError(unavailable_capabilities(e, ctx.field("process.capabilities"))) from None
    except OSError as e:
        raise RuneError(f"config.json process.user/capabilities: cannot switch to uid {uid} gid {gid}: {e.strerror}") from None
    try:
        os.chdir(cwd)
    except OSError as e:
        raise RuneError(f"{ctx.field('process.cwd')}: cannot enter {cwd}: {e.strerror}") from None
    check_cwd(cwd, ctx.field("process.cwd"))
    if nnp:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    args = list(process["args"])
    try:
        path = lookup(args[0], env.get("PATH"))
    except RuneError:
        if ctx.executor is None:
            raise
        path = args[0]  # an enclave runtime may find it in its own image (Occlum)
    close_inherited(3 + ctx.preserve_fds)  # before a strict seccomp filter is in force
    if ctx.seccomp is not None and nnp:
        _load_seccomp(ctx)
    os.umask(user["umask"] if "umask" in user else 0o022)
    return path, args, env


def lsm_labels(ctx: Launch, process: dict, linux: dict, fields: dict[str, str] | None = None) -> None:
    """In rune, before the fork: the process's AppArmor profile and SELinux label and the mount label, kept where the
    host enables the LSM; where it does not, the label confines nothing and is ignored with a warning (as crun does).
    The lsm module is imported here, so that the children have it after pivot_root."""
    wanted = (("apparmor_profile", process.get("apparmorProfile"), "process.apparmorProfile", "AppArmor"),
              ("selinux_label", process.get("selinuxLabel"), "process.selinuxLabel", "SELinux"),
              ("mount_label", linux.get("mountLabel"), "linux.mountLabel", "SELinux"))
    if not any(w[1] for w in wanted):
        return
    from inclavare.linux import lsm

    on = {"AppArmor": lsm.apparmor_enabled(), "SELinux": lsm.selinux_enabled()}
    for attr, value, field, name in wanted:
        if not value:
            continue
        if on[name]:
            setattr(ctx, attr, value)
        else:
            from inclavare.cli import log

            where = (fields or {}).get(field) or f"config.json {field}"
            log.warning(f"{where}: {name} is not enabled on this host: {value!r} is ignored")


def apply_exec_labels(ctx: Launch) -> None:
    """The AppArmor profile and SELinux label that the next execve takes on, written to this task's attributes
    through the container's procfs."""
    from inclavare.linux import lsm

    try:
        proc = lsm.open_proc()
    except OSError as e:
        raise RuneError(f"{ctx.field('process.apparmorProfile' if ctx.apparmor_profile else 'process.selinuxLabel')}: "
                        f"the container has no procfs at /proc to apply it through: {e.strerror}") from None
    try:
        lsm.write_exec_attrs(proc, lsm.exec_attrs(ctx.apparmor_profile, ctx.selinux_label))
    except lsm.AttrError as e:
        field = "process.apparmorProfile" if e.attr == "apparmor" else "process.selinuxLabel"
        raise RuneError(lsm.why(e, ctx.field(field))) from None
    finally:
        os.close(proc)


def unavailable_capabilities(e: OSError, field: str) -> str:
    """The sentence for capabilities that rune cannot grant because this host withholds them from rune itself
    (docker's --privileged asks for every one, CAP_SYS_RESOURCE included)."""
    names = getattr(e, "names", [])
    return (f"{field}: cannot grant {', '.join(names)}: rune does not hold {'them' if len(names) > 1 else 'it'} "
            f"on this host ({e.strerror}); remove {'them' if len(names) > 1 else 'it'} from the capability sets")


def check_cwd(cwd: str, field: str = "config.json process.cwd") -> None:
    """Refuse a working directory outside the container's root (a directory fd reached through /proc/self/fd:
    CVE-2024-21626): getcwd(3) fails with ENOENT for a directory that the root does not reach."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise RuneError(f"{field}: {cwd!r} is outside the container's root filesystem") from None


def _load_seccomp(ctx: Launch) -> None:
    fd = ctx.seccomp.load()
    if fd is not None:
        # the listener socket is a host path, out of reach after pivot_root: the parent sends the fd on
        from inclavare.linux import console

        console.send_fds(ctx.sock, MSG_SECCOMP, [fd])
        os.close(fd)


def _io_and_sched(process: dict) -> None:
    io = process.get("ioPriority")
    if io:
        cls = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}[io["class"]]
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(251, 1, 0, (cls << 13) | io.get("priority", 0)) != 0:  # ioprio_set(IOPRIO_WHO_PROCESS, self)
            raise RuneError(f"config.json process.ioPriority: {os.strerror(ctypes.get_errno())}")
    sched = process.get("scheduler")
    if sched:
        policy = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_IDLE": 5}[sched["policy"]]
        try:
            os.sched_setscheduler(0, policy, os.sched_param(sched.get("priority", 0)))
            if "nice" in sched:
                os.setpriority(os.PRIO_PROCESS, 0, sched["nice"])
        except OSError as e:
            raise RuneError(f"config.json process.scheduler: {e.strerror}") from None
    aff = process.get("execCPUAffinity")
    if aff and aff.get("initial"):
        _affinity(aff["initial"], "process.execCPUAffinity.initial")


def _affinity(cpus: str, field: str) -> None:
    from inclavare.oci.config import Checker, parse_cpus

    try:
        os.sched_setaffinity(0, parse_cpus(cpus, Checker("config.json"), field))
    except OSError as e:
        raise RuneError(f"config.json {field}: {e.strerror}") from None


def _home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 5 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def lookup(name: str, path_env: str | None) -> str:
    """The executable to exec, resolved in the container's root as execvp would (as runc reports it)."""
    if "/" in name:
        if not os.path.exists(name):
            raise RuneError(f'config.json process.args[0]: exec: "{name}": no such file or directory in the container')
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise RuneError(f'config.json process.args[0]: exec: "{name}": permission denied')
        return name
    for d in (path_env if path_env is not None else DEFAULT_PATH).split(":"):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise RuneError(f'config.json process.args[0]: exec: "{name}": executable file not found in $PATH of the container')


def set_oom_score_adj(process: dict) -> None:
    """process.oomScoreAdj for this process (and what it forks), through the host's /proc."""
    if "oomScoreAdj" in process:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(process["oomScoreAdj"]))
        except OSError as e:
            raise RuneError(f"config.json process.oomScoreAdj: cannot set {process['oomScoreAdj']}: {e.strerror}") from None


def above(fd: int, lowest: int) -> int:
    """fd moved to a number >= lowest (close-on-exec), out of the way of --preserve-fds."""
    if fd >= lowest:
        return fd
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return new


def socket_above(s, lowest: int):
    """A socket moved to an fd number >= lowest."""
    if s.fileno() >= lowest:
        return s
    import _socket

    fd = above(os.dup(s.fileno()), lowest)
    family, type_ = s.family, s.type
    s.close()
    return _socket.socket(family, type_, 0, fd)


def close_inherited(lowest: int) -> None:
    """Mark close-on-exec every fd from `lowest` up that rune inherited from its caller (as runc does): only stdio
    and the --preserve-fds reach the container's process."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(lowest, 1024)]
    for name in names:
        fd = int(name)
        if fd >= lowest:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own fd, closed meanwhile


def _exec(ctx: Launch, path: str, args: list[str], env: dict[str, str]) -> None:
    import _signal

    aff = (ctx.config["process"].get("execCPUAffinity") or {}).get("final")
    if aff:
        _affinity(aff, "process.execCPUAffinity.final")
    for fd in range(3, 3 + ctx.preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    if ctx.nofile is not None:
        syscalls.setrlimit(7, *ctx.nofile)  # RLIMIT_NOFILE, as process.rlimits asks (see _finish_process)
    # Python ignores SIGPIPE and SIGXFSZ; the container's process starts with the default dispositions
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    if ctx.executor is not None:
        if ctx.fifo_wfd >= 0:
            os.close(ctx.fifo_wfd)  # the executor does not exec: the payload is started now
            ctx.fifo_wfd = -1
        import gc

        gc.enable()  # rune turned it off for its own short life; this process stays Python (see cli/rune.py SHORT)
        ctx.executor(ctx, path, args, env)
        os._exit(0)
    from inclavare.linux import dmz

    # never the container's file from this process, whose /proc/self/exe is the host's interpreter: the sealed
    # trampoline execs it (CVE-2019-5736); its execve failure comes back on the fd that tells rune it exec'd
    report = ctx.fifo_wfd if ctx.fifo_wfd >= 0 else ctx.sock.fileno()
    try:
        dmz.execve(path, args, env, report, by_path=not ctx.shared_mounts)
    except dmz.NeedsExecveat as e:
        raise RuneError(execveat_refused(ctx.config, args[0], ctx.shared_mounts, e)) from None
    except OSError as e:
        raise RuneError(f'config.json process.args[0]: exec: "{args[0]}": {e.strerror}') from None


def exec_failure(data: bytes, program: str) -> str | None:
    """The sentence for a failed execve that the trampoline reported in `data`, or None if it is no such report."""
    from inclavare.linux import dmz

    errno = dmz.failure(data)
    if errno is None:
        return None
    return f'config.json process.args[0]: exec: "{program}": {os.strerror(errno)}'
