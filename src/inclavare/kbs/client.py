"""Clients of verdictd.

- `KbsClient`: the KBS protocol 0.4.0 as the Confidential Containers guest speaks it (RCAR, written to the
  published protocol: auth, attest with the JCS/SHA-384 report_data binding, resource as a JWE decrypted with the
  session's own key), over HTTP with the standard library. The evidence comes from an attester: report_data -> quote.
- `fetch_secrets`: the attested-TLS path enclave containers use (inclavare.kbs.ratls_service): a DICE certificate
  over the enclave's own quote, one request for all the secrets, the broker's key pinned when its SHA-256 is known.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable
from typing import Any

Attester = Callable[[bytes], bytes]


class KbsError(Exception):
    """status 0: the attested-TLS broker refused (str() is its sentence); else the KBS HTTP status and error."""

    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body
        detail = body.get("detail", body) if isinstance(body, dict) else body
        kind = body.get("type", "").rsplit("/", 1)[-1] if isinstance(body, dict) else ""
        super().__init__(f"KBS answered {status} {kind}: {detail}" if status else str(detail))
        self.kind = kind


class KbsClient:
    def __init__(self, address: str, attester: Attester, tee: str = "sgx", timeout: float = 30,
                 key_type: str = "EC") -> None:
        from jwcrypto import jwk

        host, _, port = address.removeprefix("http://").rstrip("/").rpartition(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.attester = attester
        self.tee = tee
        self.key = jwk.JWK.generate(kty="EC", crv="P-256") if key_type == "EC" else jwk.JWK.generate(kty="RSA", size=2048)
        pub = json.loads(self.key.export_public())
        self.pubkey = ({"kty": "EC", "crv": pub["crv"], "alg": "ECDH-ES+A256KW", "x": pub["x"], "y": pub["y"]}
                       if key_type == "EC" else {"kty": "RSA", "alg": "RSA-OAEP-256", "n": pub["n"], "e": pub["e"]})
        self.cookie = ""
        self.token = ""

    def _call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            h = {"Content-Type": "application/json", **(headers or {})}
            if self.cookie:
                h["Cookie"] = self.cookie
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
            r = conn.getresponse()
            data = r.read()
            cookie = r.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
        finally:
            conn.close()
        try:
            obj = json.loads(data)
        except ValueError:
            obj = data.decode(errors="replace")
        if r.status != 200:
            raise KbsError(r.status, obj)
        return obj

    def attest(self) -> str:
        from inclavare.kbs.rcar import PROTOCOL_VERSION, report_data_for

        challenge = self._call("POST", "/kbs/v0/auth", {
            "version": PROTOCOL_VERSION, "tee": self.tee,
            "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]}})
        nonce = challenge["nonce"]
        quote = self.attester(report_data_for(nonce, self.pubkey, ""))
        att = {"init-data": None, "runtime-data": {"nonce": nonce, "tee-pubkey": self.pubkey},
               "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(quote).decode()},
                                "additional_evidence": ""}}
        self.token = self._call("POST", "/kbs/v0/attest", att)["token"]
        return self.token

    def resource(self, path: str, bearer: bool = False) -> bytes:
        headers = {"Authorization": f"Bearer {self.token}"} if bearer else {}
        saved = self.cookie
        if bearer:
            self.cookie = ""
        try:
            resp = self._call("GET", f"/kbs/v0/resource/{path}", headers=headers)
        finally:
            self.cookie = saved or self.cookie
        return self.decrypt(resp)

    def decrypt(self, resp: dict[str, str]) -> bytes:
        """As the guest does: the AAD is the protected header re-serialised from what was parsed (alg, enc, epk)."""
        from jwcrypto import jwe

        header = json.loads(base64.urlsafe_b64decode(resp["protected"] + "=="))
        reserialised = {"alg": header["alg"], "enc": header["enc"]}
        if "epk" in header:
            reserialised["epk"] = {k: header["epk"][k] for k in ("crv", "kty", "x", "y")}
        if base64.urlsafe_b64encode(json.dumps(reserialised, separators=(",", ":")).encode()).rstrip(b"=").decode() \
                != resp["protected"]:
            raise ValueError("the JWE protected header is not in the form the KBS guest client re-serialises")
        token = jwe.JWE()
        token.deserialize(json.dumps(resp), key=self.key)
        return token.payload


def fetch_secrets(address: str, attester: Attester, paths: list[str], pin: bytes | None = None,
                  timeout: float = 10) -> dict[str, bytes]:
    """The secrets at `paths` from verdictd's attested-TLS listener (`unix:PATH` or `HOST:PORT`). Raises
    KbsError(0, message) with verdictd's sentence (naming the check or the policy rule) when it refuses."""
    from inclavare.attest import ratls
    from inclavare.kbs.listener import read_line

    cert, key = ratls.make_certificate(attester)
    tls = ratls.connect(address, ratls.client_context(cert, key), timeout)
    try:
        if pin is not None:
            ratls.pinned_peer(tls, pin)
        tls.sendall(json.dumps({"command": "Get Resources", "paths": paths}).encode() + b"\n")
        buf = read_line(tls, 32 << 20)
        if buf is None:
            raise KbsError(0, "the broker's answer is larger than 32 MiB")
    finally:
        tls.close()
    try:
        resp = json.loads(buf)
    except ValueError:
        raise KbsError(0, f"the secrets broker at {address} closed the connection without an answer") from None
    if not isinstance(resp, dict) or resp.get("status") != "OK":
        raise KbsError(0, str(resp.get("error") if isinstance(resp, dict) else resp))  # verdictd's sentence
    data = resp.get("data") or {}
    try:
        return {p: base64.b64decode(data[p], validate=True) for p in paths}
    except (KeyError, ValueError, TypeError):
        raise KbsError(0, "the secrets broker's answer lacks a secret asked for") from None
