"""`exec`: run a new process inside a running (or created) container.

rune exec (parent, stays in the host namespaces; child subreaper)
  └─ intermediate: joins the container's cgroup, setns() into every namespace of the container's init that differs
     from its own (the user namespace first), forks and exits
       └─ the process: member of the container's pid namespace; enters the init's root, takes the container's
          process settings (capabilities, rlimits, user, cwd, no_new_privs, seccomp) and execs

Both children report to the parent over one SOCK_SEQPACKET socket with the container init's message kinds
(runtime/init.py): MSG_PID (the process's host pid), MSG_PTY, MSG_SECCOMP, MSG_ERROR. The process's end of the socket
is close-on-exec, so end-of-file after MSG_PID means that execve succeeded.

As with runc, the process is built from the container's config.json `process` (args, env, cwd, user, capabilities
replaced or extended by the flags), or taken whole from `--process process.json`.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError, q
from inclavare.runtime import init as cinit
from inclavare.runtime.store import Container

# /proc/<pid>/ns names in the order they are joined: the user namespace owns the others, so it comes first; the mount
# namespace comes last because joining it moves this process's root.
NS_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "time", "mnt")
_NS_FLAGS = {"user": 0x10000000, "cgroup": 0x02000000, "ipc": 0x08000000, "uts": 0x04000000, "net": 0x40000000,
             "pid": 0x20000000, "time": 0x00000080, "mnt": 0x00020000}  # fmt: skip
_LOOKUP_PREFIX = "config.json process.args[0]: "


class ExecOptions:
    def __init__(self) -> None:
        self.process_path = ""  # --process: a whole process.json
        self.args: list[str] = []
        self.tty = False
        self.console_socket = ""
        self.detach = False
        self.pid_file = ""
        self.env: list[str] = []
        self.cwd = ""
        self.apparmor = ""  # --apparmor: the profile instead of the container's
        self.process_label = ""  # --process-label: the SELinux label instead of the container's
        self.user = ""  # "uid[:gid]"
        self.additional_gids: list[int] = []
        self.caps: list[str] = []
        self.no_new_privs = False
        self.preserve_fds = 0
        self.ignore_paused = False
        self.cgroup: list[str] = []  # "[controller[,controller]:]sub-cgroup"


def exec_process(root: str, cid: str, o: ExecOptions) -> int:
    """Run the process; its exit status in the foreground (128+signal if killed), 0 with --detach."""
    container = Container(root, cid)
    if not container.lock():
        raise RuneError(f"container {cid!r} does not exist")
    try:
        state = container.read()
        from inclavare.runtime.status import status

        st = status(container, state)
    finally:
        container.unlock()
    if st == "stopped":
        raise RuneError(f"cannot exec in a stopped container ({cid!r})")
    if st == "creating" or state is None:
        raise RuneError(f"container {cid!r} is still being created: cannot exec in it yet")
    if st == "paused" and not o.ignore_paused:
        raise RuneError(f"cannot exec in a paused container ({cid!r}): resume it or use --ignore-paused")
    config = container.config(state)
    process = build_process(config.get("process") or {}, o)
    if o.console_socket and not process.get("terminal"):
        raise RuneError("--console-socket was given but no terminal is asked for: add --tty")
    if process.get("terminal") and o.detach and not o.console_socket:
        raise RuneError("--tty with --detach needs --console-socket to receive the pty master")
    if state.get("enclave"):
        from inclavare.enclave import agent

        _same_user_as_runelet(cid, config.get("process") or {}, process)
        env = process.get("env") or []
        return agent.exec_in_enclave(container.dir, state, process["args"], env, process.get("cwd") or "/",
                                     bool(process.get("terminal")), o.console_socket, o.detach, o.pid_file)
    return _launch(state, config, process, o)


def _same_user_as_runelet(cid: str, base: dict, process: dict) -> None:
    """An enclave container's processes are started by its runelet, as the container's user: another one is refused
    rather than ignored (`docker exec -u 1000` ran as root)."""
    want, have = process.get("user") or {}, base.get("user") or {}
    w, h = (want.get("uid", 0), want.get("gid", 0)), (have.get("uid", 0), have.get("gid", 0))
    if w != h:
        raise RuneError(f"cannot exec as uid {w[0]} gid {w[1]} in enclave container {cid!r}: its enclave runtime runs "
                        f"every process as the container's user (uid {h[0]} gid {h[1]})")


def build_process(base: dict, o: ExecOptions) -> dict:
    """The process to run: --process as it is, else the container's process with the flags applied (runc's rules)."""
    if o.process_path:
        p = _load_process(o.process_path)
        if o.tty:
            p["terminal"] = True
        return p
    if not o.args:
        raise RuneError("rune exec: name the program to run after the container id (or pass --process FILE)")
    p = dict(base)
    p.pop("commandLine", None)
    p["args"] = list(o.args)
    p["terminal"] = o.tty
    if o.env:
        p["env"] = merge_env(base.get("env") or [], o.env)
    if o.cwd:
        if not o.cwd.startswith("/"):
            raise RuneError(f"--cwd {ascii(o.cwd)}: must be an absolute path")
        p["cwd"] = o.cwd
    user = dict(base.get("user") or {})
    if o.user:
        uid, sep, gid = o.user.partition(":")
        try:
            user["uid"] = int(uid)
            if sep:
                user["gid"] = int(gid)
        except ValueError:
            raise RuneError(f"--user {ascii(o.user)}: give a numeric uid[:gid]") from None
        if not (0 <= user["uid"] <= 0xFFFFFFFE and 0 <= user.get("gid", 0) <= 0xFFFFFFFE):
            raise RuneError(f"--user {ascii(o.user)}: uid and gid must be from 0 to 4294967294")
    if o.additional_gids:
        user["additionalGids"] = list(user.get("additionalGids") or ()) + o.additional_gids
    p["user"] = user
    if o.caps:
        from inclavare.linux.capabilities import NUMBERS

        caps = {k: list(v) for k, v in (base.get("capabilities") or {}).items()}
        for name in o.caps:
            full = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
            if full not in NUMBERS:
                raise RuneError(f"--cap {ascii(name)}: unknown capability")
            for s in ("bounding", "effective", "permitted"):
                caps.setdefault(s, []).append(full)
            if caps.get("inheritable"):  # ambient needs inheritable: only where the container has some
                caps.setdefault("ambient", []).append(full)
        p["capabilities"] = caps
    if o.no_new_privs:
        p["noNewPrivileges"] = True
    if o.apparmor:
        p["apparmorProfile"] = o.apparmor
    if o.process_label:
        p["selinuxLabel"] = o.process_label
    return p


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """The container's environment with the exec's variables added; a name given again takes the new value."""
    out: dict[str, str] = {}
    for e in (*base, *extra):
        k, eq, v = e.partition("=")
        if not eq or not k:
            raise RuneError(f"--env {ascii(e)}: not of the form NAME=VALUE")
        out.pop(k, None)
        out[k] = v
    return [f"{k}={v}" for k, v in out.items()]


def _load_process(path: str) -> dict:
    from inclavare.oci.config import MAX_BYTES, Checker, check_process
    from inclavare.oci.jsonlite import read_json

    try:
        p = read_json(path, MAX_BYTES)
    except OSError as e:
        raise RuneError(f"--process {q(path)}: cannot read: {e.strerror}") from None
    c = Checker(path)
    if type(p) is not dict:
        raise c.fail("process", "must be a JSON object")
    check_process(c, p, "process")
    return p


def _namespaces(pid: int) -> list[tuple[str, str]]:
    """The init's namespaces that differ from ours, in joining order."""
    out = []
    for n in NS_ORDER:
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/{n}")
        except FileNotFoundError:
            continue  # a kernel without that namespace type
        except OSError as e:
            raise RuneError(f"cannot read the {n} namespace of the container's init (pid {pid}): {e.strerror}") from None
        if theirs != os.readlink(f"/proc/self/ns/{n}"):
            out.append((n, f"/proc/{pid}/ns/{n}"))
    return out


def _cgroup_dirs(state: dict, subs: list[str]) -> list[str]:
    """The cgroup directories to join: every hierarchy of the container, or the --cgroup sub-cgroups of it."""
    paths = state.get("cgroup_paths") or {}
    chosen: dict[str, str] = {}
    for key, path in paths.items():
        chosen[key] = path
    for sub in subs:
        ctrls, sep, rel = sub.rpartition(":")
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise RuneError(f"--cgroup {ascii(sub)}: give a sub-cgroup relative to the container's, e.g. cpu:sub or sub")
        keys = [k.strip() for k in ctrls.split(",")] if sep else list(paths)
        for k in keys:
            key = "" if k == "unified" else k
            if key not in paths:
                raise RuneError(f"--cgroup {ascii(sub)}: the container has no {ascii(k)} cgroup")
            d = os.path.join(paths[key], rel)
            if not os.path.isdir(d):
                raise RuneError(f"--cgroup {ascii(sub)}: {q(d)} does not exist")
            chosen[key] = d
    seen: list[str] = []
    for d in chosen.values():
        if d not in seen:
            seen.append(d)
    return seen


def _launch(state: dict, config: dict, process: dict, o: ExecOptions) -> int:
    linux = config.get("linux") or {}
    pid = state["pid"]
    seccomp_spec = linux.get("seccomp")
    ctx = cinit.Launch({"process": process, "linux": linux}, state.get("rootfs", ""), state.get("bundle", ""), None,
                       None)
    ctx.preserve_fds = o.preserve_fds
    if o.process_path:
        ctx.origin = {"process.cwd": f"--process {q(o.process_path)}: cwd",
                      "process.capabilities": f"--process {q(o.process_path)}: capabilities"}
    else:
        if o.cwd:
            ctx.origin["process.cwd"] = "--cwd"
        if o.caps:
            ctx.origin["process.capabilities"] = "--cap"
    lsm_fields = {}
    if o.process_path:
        lsm_fields = {k: f"--process {q(o.process_path)}: {k[8:]}" for k in ("process.apparmorProfile",
                                                                             "process.selinuxLabel")}
    if o.apparmor:
        lsm_fields["process.apparmorProfile"] = "--apparmor"
    if o.process_label:
        lsm_fields["process.selinuxLabel"] = "--process-label"
    ctx.origin.update(lsm_fields)
    cinit.lsm_labels(ctx, process, {}, lsm_fields)
    if seccomp_spec:
        from inclavare.linux import seccomp

        ctx.seccomp = seccomp.compile(seccomp_spec)
    joins = _namespaces(pid)
    cgroup_dirs = _cgroup_dirs(state, o.cgroup)
    console_sock = None
    if o.console_socket:
        from inclavare.linux import console

        try:
            console_sock = console.connect_unix(o.console_socket)
        except OSError as e:
            raise RuneError(f"--console-socket {q(o.console_socket)}: cannot connect: {e.strerror}") from None
    import _socket

    sock, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    if o.preserve_fds:
        child = cinit.socket_above(child, 3 + o.preserve_fds)
        if console_sock is not None:
            console_sock = cinit.socket_above(console_sock, 3 + o.preserve_fds)
    ctx.sock = child
    ctx.console_sock = console_sock
    from inclavare.linux import syscalls

    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the process is reparented to us when the intermediate exits
    mid = cinit.undumpable_fork()
    if mid == 0:
        sock.close()
        _intermediate(ctx, pid, joins, cgroup_dirs)  # never returns
    child.close()
    if console_sock is not None:
        console_sock.close()
    xpid, pty_master = _handshake(sock, mid, state, linux, bool(process.get("terminal")) and not o.console_socket,
                                  process["args"][0])
    if o.pid_file:
        from inclavare.runtime.store import write_atomic

        write_atomic(os.path.abspath(o.pid_file), str(xpid).encode(), sync=False)
    if o.detach:
        if pty_master >= 0:
            os.close(pty_master)
        return 0
    from inclavare.runtime import run

    run._forward_signals(xpid, pty_master)
    if pty_master >= 0:
        run._proxy_tty(pty_master, xpid)
    return run._wait(xpid)


def _handshake(sock, mid: int, state: dict, linux: dict, want_pty: bool, program: str) -> tuple[int, int]:
    """Serve the children until the process has exec'd: (its host pid, pty master fd or -1)."""
    from inclavare.linux import dmz

    seccomp = linux.get("seccomp") or {}
    with_fds = want_pty or seccomp.get("listenerPath")
    xpid = 0
    pty_master = -1
    error = ""
    try:
        while True:
            fds: list[int] = []
            if with_fds:
                from inclavare.linux import console

                msg, fds = console.recv_fds(sock, 1 << 16)
            else:
                msg = sock.recv(1 << 16)
            if not msg:
                break  # both ends closed: the intermediate exited and the process exec'd (or died)
            kind = msg[:1]
            if kind == cinit.MSG_PID:
                xpid = int(msg[1:])
            elif kind == cinit.MSG_PTY and fds:
                pty_master = fds.pop()
            elif kind == cinit.MSG_SECCOMP and fds:
                from inclavare.linux import seccomp as sc
                from inclavare.oci.hooks import spec_state

                listener = spec_state(state, "running")
                try:
                    sc.send_listener_fd(seccomp["listenerPath"], fds[0], listener, seccomp.get("listenerMetadata", ""),
                                        pid=xpid or None)
                finally:
                    os.close(fds.pop())
            elif kind == cinit.MSG_ERROR:
                error = msg[1:].decode(errors="replace")
            elif kind == dmz.EXEC_FAILED:
                error = cinit.exec_failure(msg, program) or error
            for fd in fds:
                os.close(fd)
    finally:
        sock.close()
        os.waitpid(mid, 0)
    if error or not xpid:
        if xpid:
            try:
                os.waitpid(xpid, 0)
            except ChildProcessError:
                pass
        if pty_master >= 0:
            os.close(pty_master)
        raise RuneError(error or "the exec'd process's setup ended before it could run")
    return xpid, pty_master


def _intermediate(ctx: cinit.Launch, pid: int, joins: list[tuple[str, str]], cgroup_dirs: list[str]) -> None:
    """In the first child: cgroup, namespaces, fork; never returns."""
    sock = ctx.sock
    code = 1
    try:
        from inclavare.linux import syscalls

        cinit.close_host_fds(ctx)  # before anything is opened in the container's cgroup or namespaces
        # Into the cgroups without the cgroup write lock (whose first writer waits for an RCU grace period):
        # v1 hierarchies by moving our only thread through `tasks`, the cgroup2 directory by forking the
        # process into it (see create._fork_init); through cgroup.procs where that cannot be done.
        unified_fd = -1
        born_ok = syscalls.can_fork_into_cgroup()
        for d in cgroup_dirs:
            v2 = os.path.exists(d + "/cgroup.controllers")
            try:
                if v2 and born_ok and unified_fd < 0:
                    unified_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    continue
                with open(d + ("/cgroup.procs" if v2 else "/tasks"), "w") as f:
                    f.write("0")
            except OSError as e:
                raise RuneError(f"cannot join the container's cgroup {d}: {e.strerror}") from None
        process = ctx.config["process"]
        cinit.set_oom_score_adj(process)  # through the host's /proc (the container may have none); inherited on fork
        cinit._preimport({"process": process, "linux": ctx.config["linux"]}, {})
        if ctx.seccomp is not None and ctx.seccomp.notify:
            from inclavare.linux import console  # noqa: F401 - used after the mount namespace changes

        root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        fds = []
        try:
            for name, path in joins:
                try:
                    fds.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
                except OSError as e:
                    raise RuneError(f"cannot open the container's {name} namespace {path}: {e.strerror}") from None
            for name, fd in fds:
                try:
                    syscalls.setns(fd, _NS_FLAGS[name])
                except OSError as e:
                    raise RuneError(f"cannot join the container's {name} namespace: {e.strerror}") from None
        finally:
            for _, fd in fds:
                os.close(fd)
        # setns(mnt) put us at the root of the mount namespace; the init's root is what counts (it differs after
        # --no-pivot, or when the mount namespace is shared with the host)
        st = os.fstat(root_fd)
        here = os.stat("/")
        if (st.st_dev, st.st_ino) != (here.st_dev, here.st_ino):
            os.fchdir(root_fd)
            os.chroot(".")
        os.close(root_fd)
        xpid = syscalls.fork_into_cgroup(unified_fd) if unified_fd >= 0 else os.fork()
        if xpid == 0:
            if unified_fd >= 0:
                os.close(unified_fd)  # the cgroup2 directory of the host: not in the container's process
            _process(ctx)  # never returns
        cinit._send(sock, cinit.MSG_PID, str(xpid).encode())
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything becomes a message to the parent
        cinit._fail(sock, e)
    os._exit(code)


def _process(ctx: cinit.Launch) -> None:
    """In the container's namespaces: session, terminal, credentials and limits, then execve; never returns."""
    sock = ctx.sock
    try:
        os.setsid()
        process = ctx.config["process"]
        if process.get("terminal"):
            cinit.setup_terminal(ctx, process, bind_console=False)
        path, args, env = cinit._finish_process(ctx, process, {})
        cinit._exec(ctx, path, args, env)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, RuneError) and str(e).startswith(_LOOKUP_PREFIX):
            e = RuneError(str(e)[len(_LOOKUP_PREFIX):])
        cinit._fail(sock, e)
    os._exit(1)


