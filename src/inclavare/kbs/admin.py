"""The local admin socket `verdict` talks to: a Unix socket (mode 0600) in the config's admin_socket; only root and
verdictd's own user may connect (SO_PEERCRED). One JSON line in, one JSON line out:

    {"op": "status"}                                     {"ok": true, ...addresses, TLS key SHA-256, counts}
    {"op": "list_secrets"}                               {"ok": true, "secrets": [{"path", "policy", "size"}]}
    {"op": "set_secret", "path", "value" (base64), "policy"}
    {"op": "delete_secret", "path"}
    {"op": "list_policies"} / {"op": "get_policy", "name"}
    {"op": "set_policy", "name", "rego" (module text or null), "reference" ({...})}
    {"op": "set_reference", "name", "reference"}         the reference values of a policy, its module kept
    {"op": "delete_policy", "name"}
    {"op": "reload"}                                     as SIGHUP
    failure                                              {"ok": false, "error": "one sentence"}
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from inclavare.kbs.listener import AcceptLoop, read_line

MAX_REQUEST = 4 << 20


class AdminServer(AcceptLoop):
    def __init__(self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        super().__init__(sock, 16)

    def stop(self) -> None:
        super().stop()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def handle(self, conn: socket.socket, _addr: Any) -> None:
        try:
            conn.settimeout(30)
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid not in (0, os.geteuid()):
                conn.sendall(json.dumps({"ok": False, "error": f"uid {uid} may not administer verdictd"}).encode() + b"\n")
                return
            try:
                req = json.loads(read_line(conn, MAX_REQUEST) or b"")
                if not isinstance(req, dict):
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                resp: dict[str, Any] = {"ok": False, "error": "the admin request must be one JSON object on one line"}
            else:
                resp = self.handler(req)
            conn.sendall(json.dumps(resp).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()


def request(path: str, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """One admin request; OSError when verdictd is not there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = read_line(s, 64 << 20) or b""
    finally:
        s.close()
    try:
        return json.loads(buf)
    except ValueError:
        return {"ok": False, "error": "verdictd closed the admin connection without an answer"}
