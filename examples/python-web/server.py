"""A small HTTP service on the Python standard library: GET / answers who it is, GET /health "ok", and
GET /proof?challenge=C the HMAC-SHA256 of C under its API token, read from $SECRET_FILE (/run/secrets/api-token by
default), which proves it holds the token without showing it.

An ordinary program: it knows nothing of enclaves (under rune, verdictd's secret arrives in that file). It listens on $PORT (8080 by default) and ends with status 0 on
SIGTERM, as a container's stop asks.
"""

import hashlib
import hmac
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SECRET_FILE = os.environ.get("SECRET_FILE", "/run/secrets/api-token")


def proof(challenge: str) -> str | None:
    """hex HMAC-SHA256(token, challenge), or None without a token."""
    try:
        with open(SECRET_FILE, "rb") as f:
            token = f.read()
    except OSError:
        return None
    return hmac.new(token, challenge.encode(), hashlib.sha256).hexdigest()


class Handler(BaseHTTPRequestHandler):
    server_version = "python-web/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/health":
            body = b"ok\n"
        elif url.path == "/proof":
            answer = proof(parse_qs(url.query).get("challenge", [""])[0])
            if answer is None:
                self.send_error(503, f"no API token in {SECRET_FILE}")
                return
            body = json.dumps({"hmac_sha256": answer}).encode() + b"\n"
        elif url.path == "/":
            body = json.dumps({"service": "python-web", "language": "python",
                               "version": sys.version.split()[0], "pid": os.getpid()}).encode() + b"\n"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("python-web: " + fmt % args + "\n")


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"python-web: listening on port {port}", flush=True)
    httpd.serve_forever()
    httpd.server_close()
    print("python-web: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
