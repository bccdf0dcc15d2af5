"""The KBS protocol's HTTP server (HTTP/1.0, one request per connection): a thread per connection up to
`max_connections` (more are closed at once, so a flood cannot starve the process), `io_timeout` seconds for a client
to send its request (a slow client is dropped, others are not held up), request bodies up to `max_body` bytes
(413 beyond), and no handler failure that takes the server down (500 with a JSON error)."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
from typing import Any

from inclavare.kbs.rcar import Rcar, error


def parse_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {addr!r} must be HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class BoundedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: closed at once
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that broke its own connection


def make_server(rcar: Rcar, listen: str, max_connections: int, max_body: int, io_timeout: float) -> BoundedServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "verdictd"
        sys_version = ""
        timeout = io_timeout

        def _reply(self, resp: tuple[int, list[tuple[str, str]], bytes]) -> None:
            status, headers, body = resp
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, method: str) -> None:
            try:
                body = b""
                if method == "POST":
                    length = self.headers.get("Content-Length")
                    if length is None or not length.isdigit():
                        return self._reply(error(411, "InvalidRequest", "a POST needs a Content-Length"))
                    n = int(length)
                    if n > max_body:
                        return self._reply(error(413, "PayloadTooLarge", f"the body is {n} bytes, more than {max_body}"))
                    body = self.rfile.read(n)
                    if len(body) != n:
                        return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._reply(rcar.handle(method, self.path, headers, body, f"{self.client_address[0]}"))
            except (TimeoutError, ConnectionError):
                self.close_connection = True
            except Exception as e:  # noqa: BLE001 - one request's failure never takes the server down
                try:
                    self._reply(error(500, "InternalError", f"{type(e).__name__}"))
                except OSError:
                    pass

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, *_args: object) -> None:
            pass

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # malformed request lines, oversized headers, unknown methods: a JSON error, then close
            try:
                self.close_connection = True
                body = json.dumps({"type": "https://github.com/confidential-containers/kbs/errors/InvalidRequest",
                                   "detail": message or "bad request"}).encode()
                self.send_response(code if code != 501 else 405, message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            except OSError:
                pass

    return BoundedServer(parse_address(listen), Handler, max_connections)
