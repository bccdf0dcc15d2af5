"""rune-signing-server: the signing server of the original shim-rune, so that the enclave owner's key stays off the
nodes. It signs what a shim sends with RSA PKCS#1 v1.5 over SHA-256 (for a SIGSTRUCT: its header and body).

    GET  /ping, /healthz                          liveness ("ping", "ok")
    GET  /api/v1/signature/public-key             the public key, as a JSON string holding the PEM
         (also /api/v1/publickey, the path the original's server registered)
    POST /api/v1/signature/pkcs1                  body: up to 64 KiB to sign
                                                  -> {"signature": base64, "publicKey": PEM}

It signs anything it is sent: serve it only to the nodes that may sign (a private network, or behind mutual TLS).
"""

from __future__ import annotations

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from inclavare.errors import RuneError

MAX_BODY = 64 << 10
SIGN_PATH = "/api/v1/signature/pkcs1"
KEY_PATHS = ("/api/v1/signature/public-key", "/api/v1/publickey")


def load_keys(private_path: str, public_path: str = "") -> tuple[rsa.RSAPrivateKey, bytes]:
    try:
        with open(private_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise RuneError(f"--private-key {private_path}: cannot read it: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise RuneError(f"--private-key {private_path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RuneError(f"--private-key {private_path}: not an RSA key")
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if public_path:
        try:
            with open(public_path, "rb") as f:
                given = serialization.load_pem_public_key(f.read())
        except OSError as e:
            raise RuneError(f"--public-key {public_path}: cannot read it: {e.strerror}") from None
        except ValueError as e:
            raise RuneError(f"--public-key {public_path}: not a PEM public key ({e})") from None
        if not isinstance(given, rsa.RSAPublicKey) or given.public_numbers() != key.public_key().public_numbers():
            raise RuneError(f"--public-key {public_path} is not the public half of --private-key {private_path}")
    return key, pem


def make_handler(key: rsa.RSAPrivateKey, public_pem: bytes, log) -> type[BaseHTTPRequestHandler]:  # noqa: ANN001
    class Handler(BaseHTTPRequestHandler):
        server_version = "rune-signing-server"
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(200, b"", "text/plain")

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/ping":
                self._send(200, b"ping", "text/plain; charset=utf-8")
            elif self.path == "/healthz":
                self._send(200, b"ok", "text/plain; charset=utf-8")
            elif self.path in KEY_PATHS:
                self._send(200, json.dumps(public_pem.decode()).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            if self.path != SIGN_PATH:
                self._send(404, b'{"error": "not found"}')
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, b'{"error": "a Content-Length is required"}')
                return
            if not 0 < length <= MAX_BODY:
                self._send(413, b'{"error": "the body must be 1 byte to 64 KiB"}')
                return
            data = self.rfile.read(length)
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            log(f"signed {len(data)} bytes for {self.client_address[0]}")
            self._send(200, json.dumps({"signature": base64.b64encode(signature).decode(),
                                        "publicKey": public_pem.decode()}).encode())

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    return Handler


def serve(private_key: str, public_key: str = "", listen: str = "127.0.0.1:9080",
          log=lambda m: sys.stderr.write(m + "\n")) -> ThreadingHTTPServer:  # noqa: ANN001
    """A server bound to listen (HOST:PORT; port 0 picks one), not yet serving: call serve_forever()."""
    key, pem = load_keys(private_key, public_key)
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise RuneError(f"--listen {listen!r}: use HOST:PORT")
    try:
        httpd = ThreadingHTTPServer((host or "0.0.0.0", int(port)), make_handler(key, pem, log))
    except OSError as e:
        raise RuneError(f"--listen {listen}: {e.strerror}") from None
    httpd.daemon_threads = True
    return httpd
