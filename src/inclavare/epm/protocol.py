"""epm's wire format and its client: one JSON object per line each way over a Unix stream socket.

Request:  {"op": "GetCache"|"PickCache"|"SaveCache"|"ListCache"|"DeleteCache"|"Healthz", ...}
          GetCache {type, id}; PickCache {type, subtype?} (takes one out: single use, as the original's pool);
          SaveCache {cache}; ListCache {type?}; DeleteCache {type, id}
Response: {"ok": true, "cache": {...}} / {"ok": true, "caches": [...]} / {"ok": false, "error": "one sentence"}
A Cache: {"type", "subtype", "id", "parent", "size", "created", "options": {...}} ("savePath" of the original is
the daemon's business: it keeps the cache in its own directory).
"""

from __future__ import annotations

import json
import os
import socket

ENV_SOCKET = "INCLAVARE_EPM_SOCKET"
DEFAULT_SOCKET = "/run/epm/epm.sock"
OPS = ("GetCache", "PickCache", "SaveCache", "ListCache", "DeleteCache", "Healthz")


class EpmError(Exception):
    """epm could not be reached, or answered something other than a result (the caller falls back)."""


def socket_path() -> str:
    """The socket rune uses: $INCLAVARE_EPM_SOCKET, else /run/epm/epm.sock ("" in the variable: epm off)."""
    return os.environ.get(ENV_SOCKET, DEFAULT_SOCKET)


def call(path: str, request: dict, timeout: float = 2.0) -> dict:
    """One request, one response. EpmError for anything but a well-formed {"ok": ...} answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 64 << 20:
                    raise EpmError(f"epm at {path} sent an answer too large")
    except OSError as e:
        raise EpmError(f"epm at {path} cannot be reached: {e.strerror or e}") from None
    try:
        resp = json.loads(buf)
    except ValueError:
        raise EpmError(f"epm at {path} sent an answer that is not JSON") from None
    if not isinstance(resp, dict) or not isinstance(resp.get("ok"), bool):
        raise EpmError(f"epm at {path} sent an answer without 'ok'")
    return resp
