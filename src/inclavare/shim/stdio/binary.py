"""binary://PATH?KEY=VALUE stdio: a logging binary started by the shim, as containerd-shim-runc-v2 starts one.

The binary gets the process's stdout and stderr pipes as fds 3 and 4 and a pipe to close (or write to) when it is
ready as fd 5, with CONTAINER_ID and CONTAINER_NAMESPACE in its environment and each query pair as two arguments.
At close it gets SIGTERM, and SIGKILL if it has not exited 12 seconds later.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from inclavare.shim.stdio import Stdio, StdioError

TERM_TIMEOUT = 12.0


class BinaryIO:
    def __init__(self, stdio: Stdio, spawn, cid: str, namespace: str) -> None:  # noqa: ANN001 - Reaper.spawn
        u = urlsplit(stdio.stdout or stdio.stderr)
        path = u.path
        if not os.path.isabs(path) or not os.access(path, os.X_OK):
            raise StdioError(f"the logging binary {path} (from {stdio.stdout!r}) is not an executable absolute path")
        args = [path]
        for k, v in parse_qsl(u.query, keep_blank_values=True):
            args += [k, v] if v else [k]
        self.null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        ready_r, ready_w = os.pipe()
        env = dict(os.environ, CONTAINER_ID=cid, CONTAINER_NAMESPACE=namespace)
        try:
            self.cmd = spawn(args, (self.null, self.null, self.null), env=env, extra=(out_r, err_r, ready_w))
        finally:
            os.close(out_r)
            os.close(err_r)
            os.close(ready_w)
        try:
            os.read(ready_r, 1)  # the binary is ready when it writes or closes fd 5
        finally:
            os.close(ready_r)

    def child_fds(self) -> tuple[int, int, int]:
        return self.null, self.out_w, self.err_w

    def started(self) -> None:
        for fd in (self.null, self.out_w, self.err_w):
            os.close(fd)
        self.null = self.out_w = self.err_w = -1

    def close_stdin(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        for fd in (self.null, self.out_w, self.err_w):
            if fd >= 0:
                os.close(fd)
        self.null = self.out_w = self.err_w = -1
        if self.cmd.status is None:
            try:
                os.kill(self.cmd.pid, 15)
                if self.cmd.wait(TERM_TIMEOUT) is None:
                    os.kill(self.cmd.pid, 9)
            except ProcessLookupError:
                pass


__all__ = ["BinaryIO", "StdioError"]
