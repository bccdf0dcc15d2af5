"""The agent: how `rune exec` and `rune attest` reach the init-runelet of an enclave container.

The runelet listens on a unix socket in the container's state dir (`<root>/<id>/agent.sock`, mode 0600). Both ends
reach it path-length safely: through /proc/self/fd/N/agent.sock of an O_PATH fd of the directory, so state dirs of
any length work (the original failed over 108 bytes).

Framing: a 4-byte little-endian length, then a JSON object (inclavare.oci.jsonlite: no `json`/`re` import in PID 1); file descriptors travel with a message by SCM_RIGHTS.
Requests (client -> runelet):
    {"type": "exec", "argv": [...], "env": ["K=V", ...], "cwd": "/", "tty": false, "size": [rows, cols]}
        + fds stdin, stdout, stderr (none with "tty": the runelet makes a pty in the container and sends the master)
    {"type": "kill", "sig": N}            (while an exec runs: forwarded to that process with pal_kill(pid, N))
    {"type": "attest", "target_info": hex, "report_data": hex}
Replies (runelet -> client):
    {"type": "started", "pid": N}         (+ the pty master with "tty"; N is the pid in the container, 0 for PAL v1)
    {"type": "exit", "code": N}           (the exec'd process's exit status, 128+signal when killed)
    {"type": "report", "report": hex}     (a 432-byte REPORT)
    {"type": "error", "msg": "..."}       (one sentence; the client raises it as RuneError)
argv is a list: arguments with spaces arrive as they were given (the original space-joined them).
"""

from __future__ import annotations

import _socket as socket
import os
import struct

from inclavare.errors import RuneError
from inclavare.oci import jsonlite

SOCKET = "agent.sock"
MAX_MSG = 16 << 20
_SCM = (socket.SOL_SOCKET, socket.SCM_RIGHTS)
_MSG_CMSG_CLOEXEC = 0x40000000  # not in the socket module


def send_msg(sock: socket.socket, obj: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = jsonlite.dumps(obj).encode()
    frame = struct.pack("<I", len(data)) + data
    anc = [(*_SCM, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sent = sock.sendmsg([frame], anc, socket.MSG_NOSIGNAL)
    if sent < len(frame):
        sock.sendall(frame[sent:], socket.MSG_NOSIGNAL)


def recv_msg(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message and the fds that came with it; (None, []) at end of stream."""
    fds: list[int] = []
    head = b""
    while len(head) < 4:
        # close-on-exec as they arrive (MSG_CMSG_CLOEXEC): the runelet serves connections in threads, and a payload
        # forked by another thread before a later fcntl would inherit another exec's stdio
        data, anc, _flags, _addr = sock.recvmsg(4 - len(head), socket.CMSG_SPACE(16 * 4), _MSG_CMSG_CLOEXEC)
        for level, typ, payload in anc:
            if (level, typ) == _SCM:
                n = len(payload) // 4
                fds.extend(struct.unpack(f"{n}i", payload[: n * 4]))
        if not data:
            for fd in fds:
                os.close(fd)
            return None, []
        head += data
    (size,) = struct.unpack("<I", head)
    if size > MAX_MSG:
        raise RuneError(f"agent message of {size} bytes is too large")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise RuneError("the agent connection closed in the middle of a message")
        body += chunk
    return jsonlite.loads(bytes(body)), fds


def _short_path(state_dir: str) -> tuple[str, int]:
    """A path to the socket under 108 bytes, and the dir fd that keeps it valid (close it after use)."""
    dfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dfd}/{SOCKET}", dfd


def listen(state_dir: str) -> socket.socket:
    """Bind and listen on the agent socket in `state_dir` (done by the runelet, before pivot_root)."""
    path, dfd = _short_path(state_dir)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o177)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        s.listen(128)
    except OSError as e:
        s.close()
        raise RuneError(f"cannot listen on the enclave agent socket in {state_dir}: {e.strerror}") from None
    finally:
        os.close(dfd)
    return s


def connect(state_dir: str, cid: str) -> socket.socket:
    path, dfd = _short_path(state_dir)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise RuneError(f"cannot reach the enclave agent of container {cid!r} ({state_dir}/{SOCKET}): "
                        f"{e.strerror}") from None
    finally:
        os.close(dfd)
    return s


def check_running(state_dir: str, state: dict, what: str) -> None:
    from inclavare.linux import proc

    cid = state.get("id", os.path.basename(state_dir))
    if not state.get("enclave"):
        raise RuneError(f"container {cid!r} is not an enclave container")
    if not proc.alive(state.get("pid") or 0, state.get("init_start")):
        raise RuneError(f"cannot {what} container {cid!r}: it is not running")
    if state.get("use_fifo") and os.path.exists(os.path.join(state_dir, "exec.fifo")):
        raise RuneError(f"cannot {what} enclave container {cid!r}: it is created but not started, and its enclave "
                        f"runtime runs processes only after start; run 'rune start {cid}' first")


def _reply(sock: socket.socket, cid: str) -> tuple[dict, list[int]]:
    msg, fds = recv_msg(sock)
    if msg is None:
        raise RuneError(f"the enclave agent of container {cid!r} closed the connection (the container stopped?)")
    if msg.get("type") == "error":
        for fd in fds:
            os.close(fd)
        raise RuneError(msg.get("msg") or "the enclave agent failed")
    return msg, fds


def _host_pid(init_pid: int, ns_pid: int) -> int:
    """The host pid of the init's child whose pid in the container is ns_pid (0 when not found)."""
    try:
        tasks = os.listdir(f"/proc/{init_pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{init_pid}/task/{t}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for c in children:
            try:
                with open(f"/proc/{c}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                            return int(c)
            except (OSError, ValueError):
                continue
    return 0


def exec_in_enclave(container_state_dir: str, state: dict, args: list[str], env: list[str] | dict[str, str],
                    cwd: str | None, tty: bool, console_socket: str | None, detach: bool,
                    pid_file: str | None) -> int:
    """`rune exec` into an enclave container: the process runs through the container's enclave runtime.

    Returns its exit status (0 at once with detach); RuneError for what the user can fix."""
    cid = state.get("id", os.path.basename(container_state_dir))
    check_running(container_state_dir, state, "exec in")
    if not args:
        raise RuneError("rune exec: no command given")
    env_list = [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else list(env)
    req: dict = {"type": "exec", "argv": list(args), "env": env_list, "cwd": cwd or "", "tty": bool(tty)}
    if tty and os.isatty(0):
        import fcntl
        import termios

        ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols = struct.unpack("HHHH", ws)[:2]
        req["size"] = [rows, cols]
    sock = connect(container_state_dir, cid)
    caught = _catch_signals()  # before the process exists: no signal may slip past (a detached waiter inherits it)
    try:
        send_msg(sock, req, () if tty else (0, 1, 2))
        started, fds = _reply(sock, cid)
        master = fds[0] if fds else -1
        if pid_file and not detach:
            hp = _host_pid(state["pid"], started.get("pid") or 0)
            if not hp:
                raise RuneError(f"--pid-file: the enclave runtime of container {cid!r} does not report the "
                                "process's pid (PAL API v1)")
            from inclavare.runtime.store import write_atomic

            write_atomic(os.path.abspath(pid_file), str(hp).encode(), sync=False)
        if master >= 0 and console_socket:
            from inclavare.linux import console

            try:
                cs = console.connect_unix(console_socket)
            except OSError as e:
                raise RuneError(f"--console-socket {console_socket}: cannot connect: {e.strerror}") from None
            console.send_fds(cs, b"/dev/ptmx", [master])
            cs.close()
            os.close(master)
            master = -1
        if detach:
            if master >= 0:
                os.close(master)
            _detach_waiter(sock, cid, caught, pid_file)
            return 0
        return _wait_exit(sock, cid, master, caught)
    finally:
        sock.close()
        if caught is not None:
            import signal

            signal.set_wakeup_fd(caught[2])
            os.close(caught[0])
            os.close(caught[1])


def _detach_waiter(sock: socket.socket, cid: str, caught: tuple[int, int, int, list[int]], pid_file: str | None) -> None:
    """Leave behind a waiter that holds the agent connection, forwards the signals it gets and exits with the exec'd
    process's status; the pid file names it.

    The process itself is a child of the runelet inside the container: the engine's shim (or conmon), a child
    subreaper that waits for the pid in --pid-file, could never reap it. The waiter is our child, so it is reparented
    to the shim when we return, as runc's exec'd process is."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # the process has its own copies: its pipes end when it does
                os.dup2(null, fd)
            os.close(null)
            code = _wait_exit(sock, cid, -1, caught)
        except RuneError:  # the runelet went away: the container, and the process with it, was killed
            code = 128 + 9
        except BaseException:  # noqa: BLE001 - no traceback from a detached waiter (its stderr is /dev/null)
            code = 1
        finally:
            os._exit(code & 0xFF)
    if pid_file:
        from inclavare.runtime.store import write_atomic

        write_atomic(os.path.abspath(pid_file), str(pid).encode(), sync=False)


def _catch_signals() -> tuple[int, int, int, list[int]]:
    """Catch every signal we forward into a wakeup pipe: (read fd, write fd, previous wakeup fd, signals)."""
    import signal

    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wfd)
    forwarded = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD,
                                                                 signal.SIGPIPE)]
    for s in forwarded:
        try:
            signal.signal(s, lambda *_: None)
        except (OSError, ValueError):
            pass
    return rfd, wfd, old_wakeup, forwarded


def _wait_exit(sock: socket.socket, cid: str, master: int, caught: tuple[int, int, int, list[int]]) -> int:
    """Forward our signals as kill requests (and the terminal, with a pty) until the exit status arrives."""
    import select
    import signal

    rfd, _wfd, _old, forwarded = caught
    saved = None
    watch = [sock, rfd]
    if master >= 0:
        import termios
        import tty as tty_mod

        watch += [master, 0]
        if os.isatty(0):
            saved = termios.tcgetattr(0)
            tty_mod.setraw(0)
    try:
        while True:
            ready, _, _ = select.select(watch, [], [])
            if rfd in ready:
                for b in os.read(rfd, 256):
                    if b == signal.SIGWINCH and master >= 0:
                        _copy_winsize(0, master)
                    elif b in forwarded:
                        send_msg(sock, {"type": "kill", "sig": b})
            if master >= 0 and master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    os.write(1, data)
                else:
                    watch.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
            if sock in ready:
                msg, _ = _reply(sock, cid)
                if msg.get("type") == "exit":
                    if master >= 0 and master in watch:
                        _drain(master)
                    return int(msg.get("code", 1))
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if master >= 0:
            os.close(master)


def _drain(master: int) -> None:
    import select

    while select.select([master], [], [], 0.05)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def local_report(container_state_dir: str, state: dict, target_info: bytes, report_data: bytes = b"") -> bytes:
    """Ask the runelet for a local REPORT of its enclave for the enclave `target_info` designates."""
    cid = state.get("id", os.path.basename(container_state_dir))
    check_running(container_state_dir, state, "attest")
    sock = connect(container_state_dir, cid)
    try:
        send_msg(sock, {"type": "attest", "target_info": target_info.hex(), "report_data": report_data.hex()})
        msg, _ = _reply(sock, cid)
        return bytes.fromhex(msg["report"])
    finally:
        sock.close()
