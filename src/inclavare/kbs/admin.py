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
import threading
from collections.abc import Callable
from typing import Any

MAX_REQUEST = 4 << 20


class AdminServer:
    def __init__(self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.stopped = False
        self.slots = threading.BoundedSemaphore(16)

    def serve_forever(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.stopped:
                    return
                continue
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid not in (0, os.geteuid()):
                conn.sendall(json.dumps({"ok": False, "error": f"uid {uid} may not administer verdictd"}).encode() + b"\n")
                return
            buf = b""
            while b"\n" not in buf and len(buf) <= MAX_REQUEST:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            try:
                req = json.loads(buf.split(b"\n", 1)[0])
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
            self.slots.release()


def request(path: str, req: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """One admin request; OSError when verdictd is not there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    try:
        return json.loads(buf)
    except ValueError:
        return {"ok": False, "error": "verdictd closed the admin connection without an answer"}
