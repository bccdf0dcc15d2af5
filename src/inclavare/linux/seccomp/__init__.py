"""Seccomp for containers: the OCI `linux.seccomp` object compiled with libseccomp (through ctypes) and loaded.

    f = seccomp.compile(spec["linux"]["seccomp"])  # in `rune create`: validates, RuneError names the field
    fd = f.load()                                   # in the container init, right before execve
    if fd is not None:                              # the profile has SCMP_ACT_NOTIFY rules
        seccomp.send_listener_fd(f.listener_path, fd, state, f.listener_metadata)

Modules: libseccomp (ctypes bindings), profile (OCI object -> filter), notify (listener fd and agent side).
"""

from __future__ import annotations

from .notify import send_listener_fd
from .profile import (
    Filter,
    compile,
    supported_actions,
    supported_archs,
    supported_flags,
    supported_operators,
)

__all__ = [
    "Filter",
    "compile",
    "send_listener_fd",
    "supported_actions",
    "supported_archs",
    "supported_flags",
    "supported_operators",
]
