"""A client of the signing server's HTTP API (the original shim-rune's, served by rune-signing-server):

    GET  {address}/api/v1/signature/public-key   -> the PEM public key (a JSON string, or the PEM itself)
    POST {address}/api/v1/signature/pkcs1        body: the bytes to sign
                                                 -> {"signature": base64 RSA-PKCS#1 v1.5 SHA-256, "publicKey": PEM}

`address` is http(s)://HOST:PORT, optionally already ending in /api/v1/signature (the original's server_address).
Every failure is a RuneError naming the server and what went wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.request

from inclavare.errors import RuneError

PATH = "/api/v1/signature"
TIMEOUT = 10.0


class SigningClient:
    def __init__(self, address: str, timeout: float = TIMEOUT) -> None:
        base = address.strip().rstrip("/")
        if "://" not in base:
            base = "http://" + base
        if not base.endswith(PATH):
            base += PATH
        self.address = address
        self.base = base
        self.timeout = timeout

    def _request(self, path: str, data: bytes | None, what: str) -> bytes:
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "text/plain"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read(1 << 20)
        except urllib.error.HTTPError as e:
            raise RuneError(f"the signing server {self.address} answered HTTP {e.code} to {what}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RuneError(f"the signing server {self.address} cannot be reached ({reason}); check [signature] "
                            f"server_address and that rune-signing-server runs") from None

    def public_key(self) -> bytes:
        body = self._request("/public-key", None, "the public key request")
        text = body.decode(errors="replace").strip()
        if text.startswith('"'):
            try:
                text = json.loads(text)
            except ValueError:
                pass
        if "-----BEGIN" not in text:
            raise RuneError(f"the signing server {self.address} answered the public key request with something that "
                            f"is not a PEM public key")
        return text.encode()

    def sign(self, data: bytes) -> tuple[bytes, bytes]:
        """(signature, the signer's PEM public key)."""
        body = self._request("/pkcs1", data, "the signing request")
        try:
            answer = json.loads(body)
            signature = base64.b64decode(answer["signature"], validate=True)
            public_key = str(answer.get("publicKey", "")).encode()
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise RuneError(f"the signing server {self.address} answered the signing request with something that is "
                            f"not a signature (want JSON with a base64 \"signature\")") from None
        return signature, public_key
