"""Pseudo-terminals and file-descriptor passing (SCM_RIGHTS) over unix sockets."""

from __future__ import annotations

import fcntl
import os

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
_SOL_SOCKET = 1
_SCM_RIGHTS = 1
_MSG_CMSG_CLOEXEC = 0x40000000


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, str]:
    """Open a new pty master on ptmx and unlock it: (master fd, slave path)."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    n = int.from_bytes(fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"), "little")
    return master, f"/dev/pts/{n}"


TIOCGPTPEER = 0x5441


def open_peer(master: int) -> int:
    """The slave of a pty master, opened through the master (TIOCGPTPEER, Linux 4.13+), never by its path: a
    /dev/pts entry replaced by a link cannot hand over another file (CVE-2025-52565)."""
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, height.to_bytes(2, "little") + width.to_bytes(2, "little") + bytes(4))


def make_controlling(fd: int) -> None:
    fcntl.ioctl(fd, TIOCSCTTY, 0)


def send_fds(sock, data: bytes, fds: list[int]) -> None:
    """Send data with the fds attached (sock: a socket or _socket.socket)."""
    payload = b"".join(fd.to_bytes(4, "little", signed=True) for fd in fds)
    sock.sendmsg([data], [(_SOL_SOCKET, _SCM_RIGHTS, payload)])


def recv_fds(sock, bufsize: int = 4096, maxfds: int = 8) -> tuple[bytes, list[int]]:
    data, anc, _flags, _addr = sock.recvmsg(bufsize, maxfds * 4 + 64, _MSG_CMSG_CLOEXEC)  # close-on-exec as they come
    fds: list[int] = []
    for level, typ, payload in anc:
        if level == _SOL_SOCKET and typ == _SCM_RIGHTS:
            for i in range(0, len(payload) - len(payload) % 4, 4):
                fds.append(int.from_bytes(payload[i : i + 4], "little", signed=True))
    return data, fds


def connect_unix(path: str):
    """A connected AF_UNIX stream socket (the _socket type, to keep the `socket` module off the hot path)."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s
