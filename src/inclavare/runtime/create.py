"""`create` and the create half of `run`: from a bundle to a container whose init waits before execve."""

from __future__ import annotations

import os
import time

from inclavare.errors import RuneError, q, shown
from inclavare.runtime import init as cinit
from inclavare.runtime.store import Container


class Options:
    def __init__(self) -> None:
        self.bundle = "."
        self.pid_file = ""
        self.console_socket = ""
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = 0
        self.systemd_cgroup = False
        self.rootless = False
        self.detach = True  # False: foreground `run`
        self.use_fifo = True  # False: `run`, which starts at once
        self.subreaper = True  # foreground run through an intermediate process: adopt the init (--no-subreaper)
        self.config_raw: bytes | None = None  # config.json's bytes, when the command has read them already


def rfc3339(ns: int) -> str:
    """UTC time as Go's RFC3339Nano writes it (trailing zeros of the fraction dropped), as runc reports `created`."""
    s, frac = divmod(ns, 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + (f".{digits}" if digits else "") + "Z"


class Created:
    """A container whose init is blocked before execve: what `run` needs to go on."""

    def __init__(self, container: Container, state: dict, sock, ctx: cinit.Launch, pty_master: int) -> None:
        self.container = container
        self.state = state
        self.sock = sock
        self.ctx = ctx
        self.pty_master = pty_master

    @property
    def pid(self) -> int:
        return self.state["pid"]


def create(root: str, cid: str, opts: Options) -> Created:
    """Create the container; on any failure (or SIGTERM, SIGINT, SIGHUP) remove all that was made and raise
    RuneError."""
    from inclavare.runtime.interrupt import Guard

    with Guard(f"creating container {shown(cid)}") as guard:
        return _create(root, cid, opts, guard)


def _in_config(source: str, e: RuneError) -> RuneError:
    """A refusal of a linux.* field by a lower layer (cgroups, seccomp), with the file named first."""
    return RuneError(f"{source}: {e}") if str(e).startswith("linux.") else e


def _create(root: str, cid: str, opts: Options, guard) -> Created:  # noqa: ANN001 - interrupt.Guard
    from inclavare.oci import config as oci_config

    bundle = os.path.abspath(opts.bundle)
    container = Container(root, cid)  # checks the id first
    config, rootfs = oci_config.load(bundle, opts.config_raw)
    source = q(os.path.join(bundle, "config.json"))
    process = config.get("process")
    if process is None:
        raise RuneError(f"{source}: process: is required to create a container")
    terminal = bool(process.get("terminal"))
    if terminal and not opts.console_socket and opts.detach:
        raise RuneError("process.terminal is true: pass --console-socket to receive the pty master (or run without --detach)")
    if opts.console_socket and not terminal:
        raise RuneError("--console-socket was given but process.terminal is false in config.json")
    enclave = None
    if (config.get("annotations") or {}).get("enclave.type") or any(e[:13] == "ENCLAVE_TYPE=" for e in process.get("env") or ()):
        from inclavare.enclave import create as enclave_create

        enclave = enclave_create.prepare(config)  # None: no enclave type after all
        if enclave is not None and enclave.cfg.runtime_path:
            from inclavare.linux import sealed_exe

            if not sealed_exe.is_sealed():
                # an enclave runtime's own code will fork and exec in the container: from a sealed interpreter
                sealed_exe.reexec("inclavare.cli.rune", root)
    linux = config.get("linux") or {}
    seccomp_filter = None
    if linux.get("seccomp"):
        from inclavare.linux import seccomp

        try:
            seccomp_filter = seccomp.compile(linux["seccomp"])
        except RuneError as e:
            raise _in_config(source, e) from None
    hooks = config.get("hooks") or {}
    namespaces = linux.get("namespaces") or ()
    userns = any(ns["type"] == "user" for ns in namespaces)
    mgr = _cgroup_manager(cid, linux, opts, source)
    with guard.deferred():  # the directory is made and locked, or neither
        container.make()
    sock = child = None
    mid = 0
    cgroup = None
    cgroup_touched = False
    console_sock = None
    fifo_fd = -1
    state: dict = {
        "ociVersion": config["ociVersion"],
        "id": cid,
        "pid": 0,
        "status": "creating",
        "bundle": bundle,
        "rootfs": rootfs,
        "created": rfc3339(time.time_ns()),
        "owner": "",
        "annotations": config.get("annotations") or {},
        "cgroup_paths": mgr.paths,
        "cgroup_parents": mgr.missing_parents(),
        "config": config,  # in memory only: config.json holds it (store.Container.write)
        "use_fifo": opts.use_fifo,
        "rootless": opts.rootless,
    }
    late = getattr(mgr, "late_join", False)  # systemd: the scope is made with the init's pid in it
    if late:
        state["systemd_unit"] = mgr.unit  # recorded before it exists, as the cgroup paths
    try:
        # the cgroups are recorded before they exist: `delete --force` finds them whenever this command is killed
        container.write_config(config, sync=False)
        container.write(state, sync=False)
        if opts.console_socket:
            from inclavare.linux import console

            try:
                console_sock = console.connect_unix(opts.console_socket)
            except OSError as e:
                raise RuneError(f"--console-socket {q(opts.console_socket)}: cannot connect: {e.strerror}") from None
        if opts.use_fifo:
            os.mkfifo(container.fifo_path, 0o622)
            # not the umask's 0600: an init that runs as a non-root user opens the fifo for writing
            os.chmod(container.fifo_path, 0o622)
            # opened here, where the path is reachable: a user namespace's root may not traverse --root
            fifo_fd = os.open(container.fifo_path, os.O_PATH | os.O_CLOEXEC)
        import _socket

        sock, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        if opts.preserve_fds:
            child = cinit.socket_above(child, 3 + opts.preserve_fds)
        ctx = cinit.Launch(config, rootfs, bundle, child, container.fifo_path if opts.use_fifo else None)
        ctx.fifo_fd = fifo_fd
        ctx.seccomp = seccomp_filter
        ctx.console_sock = console_sock
        ctx.tty_to_parent = terminal and not opts.console_socket
        ctx.no_pivot = opts.no_pivot
        ctx.no_new_keyring = opts.no_new_keyring
        ctx.preserve_fds = opts.preserve_fds
        ctx.hook_sync = any(hooks.get(k) for k in ("prestart", "createRuntime", "createContainer", "startContainer"))
        ctx.join_cgroup = any(ns["type"] == "cgroup" and not ns.get("path") for ns in namespaces)
        ctx.start_state = state
        cinit.lsm_labels(ctx, process, linux)
        if enclave is not None:
            enclave.attach(ctx, state, container.dir)
        if not userns:
            cgroup_touched = True
            cgroup = _cgroup(mgr, linux, opts, source)
            if late:
                ctx.cgroup_late = True  # the init waits for the cgroup message before anything else
            else:
                ctx.cgroup_paths = cgroup.paths if cgroup is not None else {}
            ctx.join_cgroup = False  # the init joins first thing, before any namespace
            state["pid"] = _fork_init(ctx, namespaces, sock, container)
        else:
            # a new or joined user namespace must own the others: an intermediate process enters it first
            if not opts.detach and opts.subreaper:
                from inclavare.linux import syscalls

                syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
            mid = cinit.undumpable_fork()
            if mid == 0:
                sock.close()
                container.unlock()  # the lock is the command's, not the container's: do not carry it into the init
                cinit.intermediate(ctx)  # never returns
        child.close()
        child = None
        if fifo_fd >= 0:
            os.close(fifo_fd)
            fifo_fd = -1
        if console_sock is not None:
            console_sock.close()
            console_sock = None
        if userns:
            cgroup_touched = True
            cgroup = _cgroup(mgr, linux, opts, source)
        from inclavare.oci import jsonlite

        paths = cgroup.paths if cgroup is not None else {}  # None: --rootless without permission for cgroups
        state["cgroup_paths"] = paths
        if state["pid"]:
            container.write(state, sync=False)  # the init's pid, for `delete --force` if this command is killed
        cgroup_msg = cinit.MSG_CGROUP + jsonlite.dumps(paths).encode()
        # through an intermediate, the init's pid comes later: the handshake moves it, then sends the message
        join = cgroup if userns and not ctx.join_cgroup else None
        if late and not userns:
            if cgroup is not None:
                cgroup.join(state["pid"])
            _send(sock, cgroup_msg)
        elif userns and join is None:
            if late and cgroup is not None:
                cgroup.join(mid)  # the intermediate joins the scope itself; the init is its child
            try:
                sock.send(cgroup_msg)
            except OSError:
                pass  # the children have failed already: the handshake reads why
        pty_master = _handshake(sock, mid, config, state, linux, join, cgroup_msg, source)
        mid = 0  # reaped when it sent the init's pid
        pid = state["pid"]
        state["init_start"] = _still_waiting(sock, pid)
        state["status"] = "created"
        container.write(state, sync=opts.detach)
        if enclave is not None:
            enclave.created()
        if opts.pid_file:
            from inclavare.runtime.store import write_pid_file

            write_pid_file(opts.pid_file, pid)
        return Created(container, state, sock, ctx, pty_master)
    except BaseException:
        with guard.deferred():
            _undo(container, state, hooks, guard, sock, child, mid, console_sock, fifo_fd,
                  mgr if cgroup_touched else None)
        raise


def _undo(container: Container, state: dict, hooks: dict, guard, sock, child, mid: int, console_sock, fifo_fd: int,
          mgr) -> None:  # noqa: ANN001
    """Remove what a failed create made, in an order that leaves nothing: processes, cgroups, hooks, state."""
    pid = state["pid"]
    if mid:
        found = _end_intermediate(sock, mid)
        pid = pid or found
    for s in (sock, child, console_sock):
        if s is not None:
            s.close()
    if fifo_fd >= 0:
        os.close(fifo_fd)
    if pid:
        _kill_wait(pid)
    if mgr is not None:
        _destroy_cgroup(mgr)
    if hooks.get("poststop") and pid:
        from inclavare.oci import hooks as oci_hooks

        try:
            with guard.interruptible():  # a signal now ends the hook, not the cleanup
                oci_hooks.run("poststop", hooks["poststop"], oci_hooks.spec_state(state, "stopped", pid=0),
                              warn=lambda _msg: None)  # every hook runs
        except Exception:  # noqa: BLE001 - a failing poststop hook is a warning at most, and this is a failure already
            pass
    container.remove()


def _still_waiting(sock, pid: int) -> int:
    """After the init reported ready: that it still lives and sent no error; its start time (to know it later)."""
    from inclavare.linux import proc

    sock.setblocking(False)
    try:
        msg = sock.recv(1 << 16)
    except (BlockingIOError, InterruptedError):
        msg = None
    except OSError:
        msg = b""
    finally:
        sock.setblocking(True)
    if msg and msg[:1] == cinit.MSG_ERROR:
        raise RuneError(msg[1:].decode(errors="replace"))
    st = proc.stat(pid)
    if st is None or st[0] in ("Z", "X") or msg == b"":
        raise RuneError("the container's init process exited right after it reported ready")
    return st[1]


def _fork_init(ctx: cinit.Launch, namespaces: list, sock, container: Container) -> int:
    """Fork the init directly: its new or joined pid and time namespaces are set up for our children here and
    restored right after the fork; the init enters the other namespaces itself.

    The cgroup exists already and the init joins it without the cgroup write lock, whose first writer waits for
    an RCU grace period (5-17 ms measured here, on every container start, for runc too): it is born in the cgroup2
    directory (clone3 with CLONE_INTO_CGROUP) and moves itself, its only thread, into the v1 hierarchies by writing
    0 to their `tasks` files, which the kernel allows without that lock (see init.join_own_cgroups).
    """
    from inclavare.linux import syscalls
    from inclavare.oci.config import NAMESPACES

    restore: list[tuple[int, int]] = []
    try:
        for ns in namespaces:
            typ = ns["type"]
            if typ not in cinit.FOR_CHILDREN:
                continue
            restore.append((os.open(f"/proc/self/ns/{typ}", os.O_RDONLY | os.O_CLOEXEC), NAMESPACES[typ]))
            try:
                if ns.get("path"):
                    fd = os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        syscalls.setns(fd, NAMESPACES[typ])
                    finally:
                        os.close(fd)
                else:
                    syscalls.unshare(NAMESPACES[typ])
                    if typ == "time":
                        cinit.write_time_offsets((ctx.config.get("linux") or {}).get("timeOffsets"))
            except OSError as e:
                what = f"join the {typ} namespace {ns['path']}" if ns.get("path") else f"create a {typ} namespace"
                raise RuneError(f"config.json linux.namespaces: cannot {what}: {e.strerror}") from None
        pid = -1
        unified = (ctx.cgroup_paths or {}).get("")
        if unified:
            try:
                cfd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    ctx.born_in_cgroup = True
                    pid = cinit.undumpable_fork(lambda: syscalls.fork_into_cgroup(cfd))
                finally:
                    if pid != 0:
                        os.close(cfd)
            except OSError:
                ctx.born_in_cgroup = False  # no clone3 here: the init joins through cgroup.procs
        if pid == -1:
            pid = cinit.undumpable_fork()
        if pid == 0:
            sock.close()
            container.unlock()  # the lock is the command's, not the container's: do not carry it into the init
            cinit.init_direct(ctx)  # never returns
        return pid
    finally:
        for fd, flag in restore:
            syscalls.setns(fd, flag)
            os.close(fd)


def _end_intermediate(sock, mid: int) -> int:
    """After a failure while the intermediate process may still be waiting for us: it reads end of file and exits
    (killed if it has not within 2 s); the init's pid if it sent one."""
    if sock is not None:
        try:
            sock.shutdown(1)  # SHUT_WR: the children's reads end; what they sent can still be read
        except OSError:
            pass
    from inclavare.runtime.delete import wait_child

    wait_child(mid, timeout=2)
    if sock is None:
        return 0
    sock.setblocking(False)
    try:
        while True:
            msg = sock.recv(1 << 20)
            if not msg:
                return 0
            if msg[:1] == cinit.MSG_PID:
                return int(msg[1:])
    except OSError:
        return 0


def _cgroup_manager(cid: str, linux: dict, opts: Options, source: str):
    """The container's cgroups (paths only, nothing made yet)."""
    from inclavare.linux import cgroups

    try:
        if opts.systemd_cgroup:
            from inclavare.linux.cgroups import systemd

            return systemd.Manager(cid, linux.get("cgroupsPath"))
        return cgroups.Manager(cid, linux.get("cgroupsPath"))
    except RuneError as e:
        if opts.systemd_cgroup and not str(e).startswith("linux."):
            raise
        raise _in_config(source, e) from None


def _cgroup(mgr, linux: dict, opts: Options, source: str):
    """Make the cgroups and apply linux.resources: the Manager, or None under --rootless without permission."""
    from inclavare.linux.cgroups.devices import runc_rules

    resources = dict(linux.get("resources") or {})
    resources["devices"] = runc_rules(resources.get("devices"), linux.get("devices"))
    try:
        mgr.create(resources)
    except (RuneError, OSError) as e:
        _destroy_cgroup(mgr)
        limits = [k for k, v in (linux.get("resources") or {}).items() if v and k != "devices"]
        if opts.rootless and not limits:
            # --rootless: a user who may not make cgroups still gets a container, as long as it asks for no limits
            from inclavare.cli import log

            log.debug(f"--rootless: running without cgroups: {e}")
            return None
        if isinstance(e, RuneError):
            raise _in_config(source, e) from None
        raise
    except BaseException:
        _destroy_cgroup(mgr)
        raise
    return mgr


def _destroy_cgroup(mgr) -> None:
    try:
        for p in mgr.pids():
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        mgr.destroy()
    except (OSError, RuneError):
        pass


def _kill_wait(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    from inclavare.runtime.delete import wait_gone

    wait_gone(pid, None, timeout=2)


def _handshake(sock, mid: int, config: dict, state: dict, linux: dict, join, cgroup_msg: bytes, source: str) -> int:
    """Serve the children until the init reports ready (its pid in state["pid"]); the pty master fd or -1.

    join: the cgroup Manager to move the init into when the intermediate reports its pid, then send it
    cgroup_msg, which the init waits for, idle (None when the init was forked directly and is already in it, or
    when the intermediate joined itself). Hook requests wait until the pid is known. Every wait here ends: the
    children are peers that exit on any failure (and their end of the socket closes then); on a failure here the
    caller shuts our end, which ends their waits.
    """
    pty_master = -1
    ready = False
    hooks_asked = False
    hooks = config.get("hooks") or {}
    seccomp = linux.get("seccomp") or {}
    with_fds = config["process"].get("terminal") or seccomp.get("listenerPath")
    while not (ready and state["pid"]):
        fds: list[int] = []
        try:
            if with_fds:
                from inclavare.linux import console

                msg, fds = console.recv_fds(sock, 1 << 16)
            else:
                msg = sock.recv(1 << 16)
        except ConnectionResetError:
            continue  # a child exited with our message unread: reported once, then what it sent is read

        kind = msg[:1]
        if kind == cinit.MSG_PID:
            pid = int(msg[1:])
            state["pid"] = pid
            os.waitpid(mid, 0)  # it exits right after sending the pid
            if join is not None:
                join.join(pid)
                _send(sock, cgroup_msg)
        elif kind == cinit.MSG_READY:
            ready = True
        elif kind == cinit.MSG_HOOKS:
            hooks_asked = True
        elif kind == cinit.MSG_PTY and fds:
            pty_master = fds[0]
        elif kind == cinit.MSG_SECCOMP and fds:
            from inclavare.linux import seccomp as sc
            from inclavare.oci.hooks import spec_state

            listener = spec_state(state, state["status"])
            try:
                sc.send_listener_fd(seccomp["listenerPath"], fds[0], listener, seccomp.get("listenerMetadata", ""))
            finally:
                os.close(fds[0])
        elif kind == cinit.MSG_MAPS:
            _write_maps(mid, linux, source)
            _send(sock, cinit.MSG_MAPS_DONE)
        elif kind == cinit.MSG_ERROR:
            raise RuneError(msg[1:].decode(errors="replace"))
        else:
            raise RuneError("the container's init process exited before it was ready")
        if hooks_asked and state["pid"]:
            hooks_asked = False
            from inclavare.oci import hooks as oci_hooks
            from inclavare.oci import jsonlite

            hook_state = oci_hooks.spec_state(state, state["status"])
            oci_hooks.run("prestart", hooks.get("prestart"), hook_state)
            oci_hooks.run("createRuntime", hooks.get("createRuntime"), hook_state)
            _send(sock, cinit.MSG_RESUME + jsonlite.dumps(hook_state).encode())
    return pty_master


def _send(sock, msg: bytes) -> None:
    try:
        sock.send(msg)
    except OSError:
        pass  # the child is gone: the next read says why


def _write_maps(pid: int, linux: dict, source: str) -> None:
    if os.geteuid() != 0:
        # rootless: the kernel takes an unprivileged gid_map only once setgroups(2) is denied in the namespace (and
        # that denial keeps a process from dropping a group that guards a file); runc writes it too
        try:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        except OSError as e:
            raise RuneError(f"{source}: linux.gidMappings: cannot deny setgroups in the user namespace: "
                            f"{e.strerror}") from None
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or ())
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(lines)
        except OSError as e:
            raise RuneError(f"{source}: linux.{key}: the kernel refused the mapping: {e.strerror}") from None
