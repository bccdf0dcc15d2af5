"""The long-lived shim process, forked by `start` with the listening socket: it detaches (new session, stdio on
/dev/null, logs to the bundle's `log` FIFO, which containerd copies into its own log), becomes a child subreaper with
containerd's OOM score + 1, serves the task service over ttrpc and reaps on its main thread until Shutdown finds no
container left."""

from __future__ import annotations

import _socket
import os
import time

from inclavare.shim import sync
from inclavare.shim.manager import Flags

LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class Log:
    """logrus-like lines on the bundle's log FIFO (non-blocking: a full or unread FIFO drops lines)."""

    def __init__(self, bundle: str, debug: bool) -> None:
        self.fd = -1
        self.debug_enabled = debug
        try:
            self.fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass

    def __call__(self, msg: str, level: str = "info", force: bool = False) -> None:
        """force: a debug line that the shim's configuration asked for (log_level = "debug") though containerd's
        did not."""
        if self.fd < 0 or (level == "debug" and not (self.debug_enabled or force)):
            return
        t = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1_000_000_000)) + f".{t % 1_000_000_000:09d}Z"
        text = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        try:
            os.write(self.fd, f'time="{stamp}" level={level} msg="{text}" runtime=io.containerd.rune.v2\n'.encode())
        except OSError:
            pass


def _detach() -> None:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    os.chdir("/")


def _become_subreaper(containerd_pid: int) -> None:
    from inclavare.linux import syscalls as sc

    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    try:
        with open(f"/proc/{containerd_pid}/oom_score_adj") as f:
            score = int(f.read().strip())
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))
    except (OSError, ValueError):
        pass


def run(listener: _socket.socket, f: Flags, bundle: str, socket_path: str, containerd_pid: int,
        enclave: bool = False) -> None:
    """The shim's life; `enclave`: the container it starts for is an enclave one (its fork servers load the enclave
    runtime)."""
    _detach()
    log = Log(bundle, f.debug)
    try:
        _serve(listener, f, enclave, socket_path, containerd_pid, log)
    except BaseException as e:  # a shim that cannot serve says why in containerd's log, and leaves no socket
        import traceback

        log("the shim failed: " + "".join(traceback.format_exception(e)), "error")
        try:
            os.unlink(socket_path)
        except OSError:
            pass
        os._exit(1)


def _serve(listener: _socket.socket, f: Flags, enclave: bool, socket_path: str, containerd_pid: int, log: Log) -> None:
    _become_subreaper(containerd_pid)
    from inclavare.shim.reaper import Reaper

    Reaper.block_sigchld()  # before any thread starts: every thread inherits the mask
    from inclavare.shim import forkserver

    # before any thread starts, too: it is a fork of this process; with the enclave runtime loaded when the container
    # the shim starts for is an enclave one
    fs = forkserver.current = forkserver.start(enclave)
    reaper = Reaper()
    if fs.pid:
        reaper.track(fs.pid)  # its exit is the reaper's, not a container process's
    fs.spawner = reaper.spawn
    from inclavare.shim import api, events, oom, service, ttrpc

    publisher = events.Publisher(f.namespace, os.environ.get("TTRPC_ADDRESS", ""), f.publish_binary, f.address,
                                 reaper.spawn, lambda m: log(m, "error"))
    server = ttrpc.Server(listener, lambda m: log(m, "error"))

    def shutdown() -> None:
        publisher.flush(3.0)
        server.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
        log("shim shut down", "debug")
        os._exit(0)

    svc = service.Service(f.namespace, reaper, publisher, None, log, shutdown)
    svc.oom = oom.Watcher(lambda cid: publisher.publish(api.TaskOOM(container_id=cid)), lambda m: log(m, "warning"))
    server.register(service.SERVICE, svc.methods())
    sync.spawn(server.serve)
    log(f"shim started for namespace {f.namespace} (pid {os.getpid()})", "debug")
    reaper.run()

