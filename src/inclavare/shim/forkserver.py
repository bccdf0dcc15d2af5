"""rune's commands in forks of a process that has rune loaded, instead of a new interpreter for each.

containerd-shim-runc-v2 runs runc (Go, about 5 ms to start) three or four times per container. rune is Python: its
interpreter alone takes 13 ms to start here, and a command imports a few milliseconds more before it does anything.
So when the configured rune is this installation's own launcher, the shim runs rune's commands in a fork server:

- the first server is forked from the shim at its start, before any thread exists (a fork of a threaded process
  would inherit locks that no thread will ever release), and imports rune's lifecycle modules once;
- for each command the shim sends it the command's argv and environment, with its stdio and a reply socket
  (SCM_RIGHTS, on a SOCK_SEQPACKET socketpair), and the server forks a worker: the worker takes the fds as 0, 1 and 2,
  closes every other fd, unblocks every signal, takes the environment and argv, runs rune's main and exits with its
  code, exactly as the launcher would;
- the server sends the worker's pid, then its exit status (waited for on a pidfd), on the reply socket;
- a server ends after IDLE seconds with no request and no worker: a container's commands come in bursts (create and
  start; kill and delete, maybe hours later), and a server costs memory (about 4 MB of PSS) between them. The command
  that finds no server spawns a new one (the shim has threads by then: a fresh interpreter, not a fork) and waits
  until it says it is ready (less than an exec of rune takes); a server that does not get ready within
  READY_TIMEOUT seconds leaves every later command of this shim to exec.

A worker is the server's child, the server the shim's: the container processes that a worker leaves behind (the
init of `create`, the process of `exec --detach`) are orphaned to the nearest subreaper, the shim, exactly as those
of an exec'd rune. What is "this installation's own launcher" is checked on the file: the rune binary must read
byte for byte as the shim's own launcher does with the module changed (same interpreter, same package directory,
same site-packages), so that the worker runs the very code and sys.path the binary would have. Any other binary
(`[rune] binary` naming another rune, runc, a wrapper script) is exec'd, as is every command when the server cannot
take it. `[rune] fork_server = false` turns it off.
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys

from inclavare.shim import sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_MAX_REQUEST = 1 << 20
_SCM_RIGHTS = 1
_SOL_SOCKET = 1
_FD_END = 0x7FFFFFFF  # os.closerange is close_range(2): one call whatever the bound
# what rune's lifecycle commands import (create, start, state, kill, delete, exec, ps, pause, update, events):
# imported once by the server, not by every worker
PRELOAD = tuple(f"inclavare.cli.{m}" for m in ("rune", "args", "log", "create", "start", "state", "kill", "delete",
                                                "exec_", "ps", "pause", "update", "events")) + \
    tuple(f"inclavare.runtime.{m}" for m in ("create", "init", "rootfs", "start", "status", "store", "kill",
                                             "interrupt", "delete", "exec", "pause", "update", "events")) + \
    tuple(f"inclavare.linux.{m}" for m in ("capabilities", "cgroups.host", "cgroups.v1", "cgroups.v2", "dmz",
                                           "mountopts", "net", "securejoin")) + ("errno", "fcntl", "gc")

# what an enclave container's create adds (the init-runelet, the sim launch check, libcrypto mapped through hashlib,
# which a cold launch measures files with and which makes the runelet's dlopen of it a lookup): imported
# as well by the servers of a shim whose container is an enclave one (names_enclave), after they are ready and while no
# request waits, so that the init a worker forks starts with the enclave runtime loaded - the warm runelet the shim can
# give: a process forked from it by the worker becomes the container's PID 1 (a process made in advance cannot move
# into a new PID namespace)
PRELOAD_ENCLAVE = tuple(f"inclavare.enclave.{m}" for m in (
    "config", "create", "runelet", "sim_runtime", "agent", "provision", "attestation_dev", "epm_client", "pal")) + \
    tuple(f"inclavare.tee.{m}" for m in ("openssl", "records", "marker", "sha256", "sgx.attributes", "sgx.layout",
                                         "sgx.report", "sgx.measure", "sgx.sigstruct")) + \
    tuple(f"inclavare.tee.sim.{m}" for m in ("envpolicy", "identity", "ereport", "evidence", "image", "launch",
                                             "measure_cache", "platform")) + \
    ("inclavare.linux.console", "inclavare.linux.proctitle", "hashlib", "select", "struct", "termios",
     "binascii")


def names_enclave(spec: dict) -> bool:
    """config.json (parsed) names an enclave type: ENCLAVE_TYPE in process.env, or the enclave.type annotation."""
    env = (spec.get("process") or {}).get("env") or ()
    return any(isinstance(e, str) and e.startswith("ENCLAVE_TYPE=") for e in env) or "enclave.type" in (
        spec.get("annotations") or {})


COMM = "rune-forkserver"
READY_TIMEOUT = 2.0  # seconds a server has to get ready
IDLE = 5.0  # seconds without a request or a worker after which a server ends (a container's commands come in bursts)
current: ForkServer | None = None  # the shim's, made at its start


class Forked:
    """A command run by the fork server; wait() gives its exit status as the reaper does (code, or 128 + signal)."""

    forked = True

    def __init__(self, reply: _socket.socket, pid: int) -> None:
        self.reply = reply
        self.pid = pid
        self.status: int | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        if self.status is None:
            try:
                data = self.reply.recv(64)
            finally:
                self.reply.close()
            # no status: the server died under the worker (the worker went on, orphaned to the shim)
            self.status = int(data) if data else 255
        return self.status


class ForkServer:
    """The shim's handle on its fork server: the first one forked at the shim's start, later ones started on demand
    (see start_again)."""

    def __init__(self, ctl: _socket.socket | None, pid: int = 0, enclave: bool = False) -> None:
        self.ctl = ctl  # None: no server now
        self.pid = pid
        self.enclave = enclave  # its servers preload PRELOAD_ENCLAVE too
        self.ready = False  # the server has said it has rune loaded
        self.broken = False  # a server failed to get ready: every command is exec'd from then on
        self.spawner = None  # the reaper's spawn, for starting a server again after one ended
        self.launcher = sys.argv[0] if sys.argv else ""  # the shim's own launcher
        self._checked: dict[str, tuple[tuple[int, int, int], bool]] = {}
        self._lock = sync.Lock()

    # ---- in the shim ----------------------------------------------------------------------------------------------
    def serves(self, binary: str) -> bool:
        """True when `binary` is this installation's rune launcher (see the module's docstring)."""
        try:
            st = os.stat(binary)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                hit = self._checked.get(binary)
            if hit is not None and hit[0] == key:
                return hit[1]
            with open(binary, "rb") as f:
                text = f.read(8192)
            with open(self.launcher, "rb") as f:
                own = f.read(8192)
        except OSError:
            return False
        ok = own.count(_SHIM_MAIN) == 1 and text == own.replace(_SHIM_MAIN, _RUNE_MAIN)
        with self._lock:
            self._checked[binary] = (key, ok)
        return ok

    def _usable(self) -> _socket.socket | None:
        """The control socket of a server ready for a request (starting one if there is none and waiting until it
        is ready: less than an exec of rune would take), else None."""
        with self._lock:
            if self.ctl is None:
                if self.broken:
                    return None
                self._start_again()
                if self.ctl is None:
                    return None
            if not self.ready:
                import select

                p = select.poll()
                p.register(self.ctl.fileno(), select.POLLIN)
                try:
                    self.ready = bool(p.poll(READY_TIMEOUT * 1000)) and self.ctl.recv(16) == b"ready"
                except OSError:
                    self.ready = False
                if not self.ready:  # it ended, or hangs, before it had rune loaded: no more servers for this shim
                    self.broken = True
                    self._gone()
                    return None
            return self.ctl

    def _gone(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
        self.ctl = None
        self.ready = False

    def _start_again(self) -> None:
        """A new server, spawned (this process has threads now: no fork) on this interpreter and sys.path, with its
        control socket as fd 3; it is used once it says it is ready."""
        if self.spawner is None:
            return
        try:
            ctl, srv = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        except OSError:
            return
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        exe = protected_interpreter()
        try:
            boot = (f"import sys; sys.path[:] = {sys.path!r}\nfrom inclavare.shim.forkserver import serve\n"
                    f"serve(3, {self.enclave!r})\n")
            # the shim's own argv after the code: ps shows whose server it is, as it does for the forked one; argv[0]
            # the interpreter's path, from which it finds its standard library, whatever file it runs from
            cmd = self.spawner([sys.executable, "-I", "-S", "-c", boot, *sys.argv], (null, null, null),
                               extra=(srv.fileno(),), path=None if exe is None else f"/proc/self/fd/{exe}")
            self.ctl, self.pid = ctl, cmd.pid
        except OSError:
            ctl.close()
        finally:
            srv.close()
            os.close(null)
            if exe is not None:
                os.close(exe)

    def spawn(self, argv: Sequence[str], fds: Sequence[int], env: dict[str, str] | None = None) -> Forked | None:
        """Run rune's command argv (argv[0] the binary) in a worker with fds as its 0, 1, 2; None when no server
        can take it now (the caller execs the binary instead)."""
        payload = marshal.dumps((list(argv), dict(os.environ if env is None else env)))
        for _ in range(2):  # a server found gone (idle, or killed) before it took the request: once more, a new one
            ctl = self._usable()
            if ctl is None:
                return None
            reply, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
            try:
                ctl.sendmsg([payload], [(_SOL_SOCKET, _SCM_RIGHTS, _fd_bytes([theirs.fileno(), *fds]))])
                theirs.close()
                # the worker's pid; end of file: the server ended with the request unread, no worker started
                data = reply.recv(64)
                if data:
                    return Forked(reply, int(data))
            except (OSError, ValueError):
                pass
            theirs.close()
            reply.close()
            with self._lock:
                if self.ctl is ctl:
                    self._gone()
        return None


def protected_interpreter() -> int | None:
    """An O_PATH fd (close-on-exec) of the interpreter seen through a read-only overlayfs attached nowhere
    (linux/sealed_exe.py), or None where none can be made; reaper.spawn keeps the fd its path names clear of the fds
    it moves. A server started from it has it as /proc/self/exe, and so has every worker and every container init
    they fork: `rune create` of an enclave container with a runtime library finds itself sealed and does not
    execute itself again (one interpreter start less). The first server is a fork of the shim (ready at once;
    measured, a server started this way for the first command costs more than that command's re-execution saves)."""
    from inclavare.linux import sealed_exe

    return sealed_exe.overlay_exe(os.path.realpath(sys.executable), "/tmp")


_SHIM_MAIN = b"from inclavare.cli.shim import main\n"
_RUNE_MAIN = b"from inclavare.cli.rune import main\n"


def _fd_bytes(fds: list[int]) -> bytes:
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def start(enclave: bool = False) -> ForkServer:
    """Fork the first server (call before any thread starts); `enclave`: its servers preload PRELOAD_ENCLAVE too."""
    try:
        ctl, srv = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    except OSError:
        return ForkServer(None, enclave=enclave)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    import gc

    # the shim's objects so far go to the collector's permanent generation: neither process's collections touch
    # them again, so their pages stay shared longer (a collection writes every object it visits)
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = srv.detach()
            ctl.close()
            code = serve(fd, enclave)
        finally:
            os._exit(code)
    srv.close()
    return ForkServer(ctl, pid, enclave)


# ---- in the server ----------------------------------------------------------------------------------------------
def serve(ctl: int, enclave: bool = False) -> int:
    """The server's life: rune loaded (with `enclave`, the enclave runtime too), then a worker per request, until
    the shim is gone or IDLE seconds pass with no request and no worker."""
    import _signal
    import select

    os.closerange(3, ctl)
    os.closerange(ctl + 1, _FD_END)
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(COMM)  # what ps -o comm and top show; its command line stays the shim's
    except OSError:
        pass
    # the signal state of a rune exec'd by the shim: nothing blocked; Python's own dispositions (SIGPIPE and SIGXFSZ
    # ignored, SIGINT raises KeyboardInterrupt unless inherited ignored); a signal the shim inherited ignored stays
    # ignored, as exec keeps it (a shim started from a background shell ignores SIGQUIT, and so do the runes it execs
    # and their containers); one the shim catches goes back to its default, as exec resets it
    for sig in range(1, _signal.NSIG):
        try:
            handler = _signal.getsignal(sig)
            if sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_IGN)
            elif handler == _signal.SIG_IGN:
                continue
            elif sig == _signal.SIGINT:
                _signal.signal(sig, _signal.default_int_handler)
            elif handler not in (_signal.SIG_DFL, None):
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    import gc
    import importlib

    gc.disable()  # the server allocates little; its workers collect (a fresh interpreter's collector is on)
    for name in PRELOAD:
        _import(importlib, name)
    try:
        os.write(ctl, b"ready")
    except OSError:
        return 0
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    running: dict[int, tuple[int, int]] = {}  # pidfd: (pid, reply fd)
    # the enclave runtime after "ready", one module at a time while no request waits: never on a command's way (the
    # shim's first command comes while it handles containerd's Create), a worker forked before the end imports the rest
    later = list(PRELOAD_ENCLAVE) if enclave else []
    while True:
        if later and not poller.poll(0):
            _import(importlib, later.pop(0))
            continue
        events = poller.poll(None if running else IDLE * 1000)
        if not events:
            return 0  # idle: the shim starts another server when it next needs one
        for fd, _ev in events:
            if fd == ctl:
                if not _take(ctl, poller, running):
                    return 0  # the shim is gone: so is the server (its workers go on, orphaned to the shim's reaper)
                continue
            pid, reply = running.pop(fd)
            poller.unregister(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            try:
                os.write(reply, str(code).encode())
            except OSError:
                pass
            os.close(reply)


def _import(importlib, name: str) -> None:  # noqa: ANN001 - the importlib module
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - the worker imports it again and reports what is wrong
        pass


def _take(ctl: int, poller, running: dict[int, tuple[int, int]]) -> bool:  # noqa: ANN001
    sock = _socket.socket(fileno=ctl)
    try:
        data, anc, _flags, _addr = sock.recvmsg(_MAX_REQUEST, _socket.CMSG_SPACE(4 * 4))
    except InterruptedError:
        return True
    finally:
        sock.detach()
    if not data:
        return False
    fds: list[int] = []
    for level, kind, blob in anc:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds += [int.from_bytes(blob[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(blob) - 3, 4)]
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        return True
    reply, stdio = fds[0], fds[1:]
    try:
        argv, env = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        for fd in fds:
            os.close(fd)
        return True
    pid = os.fork()
    if pid == 0:
        _work(argv, env, stdio)  # never returns
    for fd in stdio:
        os.close(fd)
    try:
        os.write(reply, str(pid).encode())
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.close(reply)
        return True
    running[pidfd] = (pid, reply)
    poller.register(pidfd, 1)  # POLLIN: the worker exited
    return True


def _work(argv: list[str], env: dict[str, str], stdio: list[int]) -> None:
    code = 1
    try:
        import _signal

        # stdio first, above every target, then onto 0, 1, 2 (a source may be one of the targets)
        high = [os.dup(fd) for fd in stdio]
        for i, fd in enumerate(high):
            os.dup2(fd, i)
        os.closerange(3, _FD_END)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        import gc

        gc.freeze()  # the server's objects: not visited by this worker's collections
        gc.enable()
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(argv)
        from inclavare.cli.rune import main

        code = main() or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
