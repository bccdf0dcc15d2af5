"""Seccomp user notification: handing the listener fd to a seccomp agent, and the agent's side of the protocol.

send_listener_fd is what the runtime does for `linux.seccomp.listenerPath` (runtime-spec config-linux.md#seccomp and
runtime.md "container process state"). receive/respond/id_valid are for a supervisor (a seccomp agent, or tests)
holding the listener fd.
"""

from __future__ import annotations

import ctypes
import os
import sys

from inclavare.errors import RuneError

from . import libseccomp as _ls

OCI_VERSION = "1.0.2"
FLAG_CONTINUE = _ls.USER_NOTIF_FLAG_CONTINUE


def send_listener_fd(listener_path: str, fd: int, state: dict, metadata: str = "", *, pid: int | None = None) -> None:
    """Send the container process state with the seccomp notify fd to the agent listening on listener_path.

    One AF_UNIX SOCK_STREAM connection, one sendmsg carrying the JSON and the fd (SCM_RIGHTS), then close.
    pid defaults to state["pid"], the container process as the runtime sees it.
    """
    import _socket  # lazily: only containers with a listenerPath pay for it
    import json

    where = f"linux.seccomp.listenerPath {listener_path!r}"
    if type(fd) is not int or fd < 0:
        raise RuneError(f"{where}: no seccomp notify fd to send (got {fd!r})")
    if pid is None:
        pid = state.get("pid")
    if type(pid) is not int:
        pid = os.getpid()
    message: dict = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid}
    if metadata:
        message["metadata"] = metadata
    message["state"] = state
    payload = json.dumps(message, separators=(",", ":")).encode()
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder, signed=True))]
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    step = "connect to the seccomp agent"
    try:
        sock.connect(listener_path)
        step = "send the seccomp notify fd"
        sent = sock.sendmsg([payload], rights)
        if sent < len(payload):  # the fd went with the first bytes; the rest follows on the same stream
            sock.sendall(payload[sent:])
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise RuneError(f"{where}: cannot {step}: {reason}") from None
    finally:
        sock.close()


class Notification:
    """One seccomp_notif: which process (pid in the agent's pid namespace) made which syscall with which args."""

    __slots__ = ("id", "pid", "flags", "nr", "arch", "instruction_pointer", "args")

    def __init__(self, req: _ls.SeccompNotif) -> None:
        self.id: int = req.id
        self.pid: int = req.pid
        self.flags: int = req.flags
        self.nr: int = req.data.nr
        self.arch: int = req.data.arch
        self.instruction_pointer: int = req.data.instruction_pointer
        self.args: tuple[int, ...] = tuple(req.data.args)

    def __repr__(self) -> str:
        return f"Notification(id={self.id}, pid={self.pid}, nr={self.nr}, args={self.args})"


_bufs: tuple | None = None


def _buffers() -> tuple:
    """seccomp_notify_alloc'd request/response, sized as this kernel wants; allocated once per process."""
    global _bufs
    if _bufs is None:
        req = ctypes.POINTER(_ls.SeccompNotif)()
        resp = ctypes.POINTER(_ls.SeccompNotifResp)()
        rc = _ls.lib().seccomp_notify_alloc(ctypes.byref(req), ctypes.byref(resp))
        if rc < 0:
            raise OSError(-rc, f"seccomp_notify_alloc: {os.strerror(-rc)}")
        _bufs = (req, resp)
    return _bufs


def receive(fd: int) -> Notification:
    """Block until the next notification on the listener fd (poll the fd for POLLIN to wait with a timeout).

    OSError(ENOENT) when the process that made the syscall went away before it was read.
    """
    req, _ = _buffers()
    ctypes.memset(req, 0, ctypes.sizeof(_ls.SeccompNotif))  # the kernel wants a zeroed buffer
    rc = _ls.lib().seccomp_notify_receive(fd, req)
    if rc < 0:
        raise OSError(-rc, f"seccomp_notify_receive: {os.strerror(-rc)}")
    return Notification(req.contents)


def respond(fd: int, id: int, *, error: int = 0, val: int = 0, flags: int = 0) -> None:  # noqa: A002
    """Answer notification id: the syscall returns val, or fails with errno `error` (a positive errno) if set;
    flags=FLAG_CONTINUE lets the kernel run the syscall as it was."""
    _, resp = _buffers()
    r = resp.contents
    r.id, r.val, r.error, r.flags = id, val, -abs(error), flags
    rc = _ls.lib().seccomp_notify_respond(fd, resp)
    if rc < 0:
        raise OSError(-rc, f"seccomp_notify_respond: {os.strerror(-rc)}")


def id_valid(fd: int, id: int) -> bool:  # noqa: A002
    """Whether notification id is still pending (its process still waits in the syscall)."""
    return _ls.lib().seccomp_notify_id_valid(fd, id) == 0
