"""Secrets over mutual attested TLS, for enclave containers (the init-runelet) and verdictd's original clients.

verdictd presents its own TLS key (not attested: it runs outside an enclave here; clients pin its SHA-256, shown by
`verdict status`); the client must present an attested certificate (inclavare.attest.ratls), verified before a
request is read. Then one request, one JSON line of at most `max_body` bytes, and one JSON line in reply:

    {"command": "version"}                                   -> {"status": "OK", "version": "v1"}
    {"command": "Get Resource", "optional": {"resource_path": "REPO/TYPE/TAG"}}
                                                             -> {"status": "OK", "data": {"REPO/TYPE/TAG": base64}}
    {"command": "Get Resources", "paths": ["R/T/G", ...]}    -> all of them, or a failure naming the first refused
    failure                                                  -> {"status": "Fail", "data": {}, "error": "..."}

A peer whose evidence does not verify gets a failure line naming the check, then the connection closes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
from typing import Any

from inclavare.attest import ratls
from inclavare.attest.errors import VerificationError
from inclavare.kbs.broker import Broker, Refused
from inclavare.kbs.listener import AcceptLoop, read_line


def _fail(msg: str) -> bytes:
    return json.dumps({"status": "Fail", "data": {}, "error": msg}).encode() + b"\n"


class RatlsService(AcceptLoop):
    def __init__(self, broker: Broker, verifier_ref: Any, ctx: ssl.SSLContext, listen: str, max_connections: int,
                 max_body: int, io_timeout: float) -> None:
        self.broker = broker
        self.verifier_ref = verifier_ref  # callable -> the current Verifier (replaced on reload)
        self.ctx = ctx
        self.listen = listen
        self.max_body = max_body
        self.io_timeout = io_timeout
        if listen.startswith("unix:"):
            path = listen[5:]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o666)  # any process may connect: attestation, not the socket, authorizes
        else:
            from inclavare.kbs.http import parse_address

            host, port = parse_address(listen)
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.listen(128)
        super().__init__(sock, max_connections)

    @property
    def address(self) -> str:
        if self.listen.startswith("unix:"):
            return self.listen
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def handle(self, conn: socket.socket, addr: Any) -> None:
        who = addr[0] if isinstance(addr, tuple) else "unix:" + self.listen[5:]
        tls = None
        try:
            conn.settimeout(self.io_timeout)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            try:
                peer = ratls.verify_certificate(tls.getpeercert(binary_form=True) or b"", self.verifier_ref(), None)
            except VerificationError as e:
                self.broker.audit.log("refuse", who=who, rule=e.check, reason=str(e))
                self._read_line(tls)  # the request is read (never answered) so the refusal reaches the client
                tls.sendall(_fail(str(e)))
                return
            line = self._read_line(tls)
            if line is None:
                tls.sendall(_fail(f"the request must be one JSON line of at most {self.max_body} bytes"))
                return
            tls.sendall(self._answer(line, peer.claims.as_input(), who))
        except (OSError, ssl.SSLError, ValueError):
            pass  # garbage, a failed handshake, a client gone or too slow: its connection only
        finally:
            try:
                (tls or conn).close()
            except OSError:
                pass

    def _read_line(self, tls: ssl.SSLSocket) -> bytes | None:
        line = read_line(tls, self.max_body)
        return line if line and line.strip() else None

    def _answer(self, line: bytes, claims: dict[str, Any], who: str) -> bytes:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _fail("the request is not JSON")
        if not isinstance(req, dict):
            return _fail("the request must be a JSON object")
        cmd = req.get("command")
        if cmd == "version":
            return json.dumps({"status": "OK", "version": "v1"}).encode() + b"\n"
        if cmd == "Get Resource":
            opt = req.get("optional") or {}
            paths = [opt.get("resource_path")] if isinstance(opt, dict) else [None]
        elif cmd == "Get Resources":
            paths = req.get("paths")
        else:
            return _fail(f"unknown command {cmd!r} (version, Get Resource, Get Resources)")
        if not isinstance(paths, list) or not paths or len(paths) > 64 or not all(isinstance(p, str) for p in paths):
            return _fail("name the resources as REPO/TYPE/TAG strings (at most 64)")
        from inclavare.kbs.store import StoreError, check_path

        data = {}
        for p in paths:
            try:
                check_path(p)
                data[p] = base64.b64encode(self.broker.release(p, claims, who)).decode()
            except StoreError as e:
                return _fail(str(e))
            except Refused as e:
                return _fail(e.detail)
        return json.dumps({"status": "OK", "data": data}).encode() + b"\n"
