"""rune's side of epm, the enclave pool manager: one connection, several requests (inclavare/epm/protocol.py's JSON
lines), standard library only (`_socket` and the `_json` accelerator: no `socket`, whose import costs `enum`).

rune works without epm: `connect` returns None, with the reason at debug level, when the socket is switched off
($INCLAVARE_EPM_SOCKET=""), missing (epm not started), stale (a socket file nobody listens on: an epm that was
killed), slow, or served by a process that is neither root nor rune's own user (SO_PEERCRED: whoever answers there
is trusted as much as the sim platform directory, so it must be who may write that directory). The caller then
starts cold. Nothing epm answers is used without the caller's own checks (bundle_cache.py).
"""

from __future__ import annotations

import os

ENV_SOCKET = "INCLAVARE_EPM_SOCKET"  # inclavare.epm.protocol.ENV_SOCKET
DEFAULT_SOCKET = "/run/epm/epm.sock"
MAX_ANSWER = 16 << 20
_SO_PEERCRED = 17
_SOL_SOCKET = 1
_MSG_CMSG_CLOEXEC = 0x40000000


class EpmError(Exception):
    """epm went away or answered something that is not a result (the caller falls back to a cold start)."""


def debug(msg: str) -> None:
    """A debug line in rune's log (--debug / --log-level debug); never fails."""
    try:
        from inclavare.cli import log

        log.debug(msg)
    except Exception:  # noqa: BLE001 - a log line must not fail a launch
        pass


def socket_path() -> str:
    return os.environ.get(ENV_SOCKET, DEFAULT_SOCKET)


class Session:
    """A connection to epm, for one request after another (the daemon answers each line in turn)."""

    def __init__(self, sock, path: str) -> None:  # noqa: ANN001 - _socket.socket
        self.sock = sock
        self.path = path
        self.buf = b""

    def call(self, request: dict) -> dict:
        resp, fds = self.call_fds(request)
        for fd in fds:
            os.close(fd)
        return resp

    def call_fds(self, request: dict) -> tuple[dict, list[int]]:
        """A request whose answer may carry file descriptors (SCM_RIGHTS, received close-on-exec); the caller owns
        them, also when this raises (then they are closed here)."""
        import _socket
        import time

        from inclavare.oci import jsonlite

        fds: list[int] = []
        limit = self.sock.gettimeout()
        deadline = time.monotonic() + limit if limit is not None else None
        try:
            try:
                self.sock.sendall(jsonlite.dumps(request).encode() + b"\n")
                while b"\n" not in self.buf:
                    if deadline is not None:  # one deadline for the whole answer, not one per read (a trickle)
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError
                        self.sock.settimeout(left)
                    chunk, anc, _flags, _addr = self.sock.recvmsg(1 << 16, _socket.CMSG_SPACE(4 * 4),
                                                                  _MSG_CMSG_CLOEXEC)
                    for level, kind, data in anc:
                        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                            n = len(data) - len(data) % 4
                            fds += [int.from_bytes(data[i:i + 4], "little", signed=True) for i in range(0, n, 4)]
                    if not chunk:
                        raise EpmError(f"epm at {self.path} closed the connection")
                    self.buf += chunk
                    if len(self.buf) > MAX_ANSWER:
                        raise EpmError(f"epm at {self.path} sent an answer larger than {MAX_ANSWER} bytes")
            except TimeoutError:
                raise EpmError(f"epm at {self.path} did not answer {request.get('op')} within {limit:g} s") from None
            except OSError as e:
                raise EpmError(f"epm at {self.path} cannot be reached: {e.strerror or e}") from None
            finally:
                if limit is not None:
                    self.sock.settimeout(limit)
            return self._answer(request), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _answer(self, request: dict) -> dict:
        from inclavare.oci import jsonlite

        line, _, self.buf = self.buf.partition(b"\n")
        try:
            resp = jsonlite.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise EpmError(f"epm at {self.path} sent an answer that is not JSON") from None
        if not isinstance(resp, dict) or not isinstance(resp.get("ok"), bool):
            raise EpmError(f"epm at {self.path} sent an answer without 'ok'")
        if not resp["ok"]:
            raise EpmError(f"epm at {self.path} refused {request.get('op')}: {resp.get('error')}")
        return resp

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def connect(path: str | None = None, timeout: float = 2.0) -> Session | None:
    """A session with epm, or None (and a debug line saying why: rune then starts the enclave cold)."""
    import _socket

    path = socket_path() if path is None else path
    if not path:
        debug(f"epm is off (${ENV_SOCKET} is empty): the enclave starts cold")
        return None
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(path)
        cred = s.getsockopt(_SOL_SOCKET, _SO_PEERCRED, 12)
    except FileNotFoundError:
        s.close()
        debug(f"no epm socket at {path} (epm is not running): the enclave starts cold")
        return None
    except ConnectionRefusedError:
        s.close()
        debug(f"the epm socket {path} is stale (nobody listens on it): the enclave starts cold")
        return None
    except OSError as e:
        s.close()
        debug(f"epm at {path} cannot be reached ({e.strerror or e}): the enclave starts cold")
        return None
    uid = int.from_bytes(cred[4:8], "little")
    if uid not in (0, os.geteuid()):
        s.close()
        debug(f"the epm socket {path} is served by uid {uid}, neither root nor rune's user: not used, the enclave "
              f"starts cold")
        return None
    session = Session(s, path)
    try:  # epm checks a connection's namespaces on its first request: made here, before rune enters the container's
        if not session.call({"op": "Healthz"}).get("ok"):
            raise EpmError(f"epm at {path} is not healthy")
    except (EpmError, OSError) as e:
        session.close()
        debug(f"{e}: the enclave starts cold")
        return None
    return session
