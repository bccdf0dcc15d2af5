"""The loopback interface of a new network namespace, brought up as runc does."""

from __future__ import annotations

import fcntl

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    import _socket

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifr = bytearray(b"lo".ljust(16, b"\0") + bytes(24))
        fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr)
        flags = int.from_bytes(ifr[16:18], "little") | IFF_UP
        ifr[16:18] = flags.to_bytes(2, "little")
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, ifr)
    finally:
        s.close()
