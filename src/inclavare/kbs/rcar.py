"""The Confidential Containers KBS protocol, version 0.4.0 (RCAR: Request, Challenge, Attestation, Response),
independent of HTTP: `Rcar.handle(method, path, headers, body, peer) -> (status, headers, body)`.

    POST /kbs/v0/auth      {"version":"0.4.0","tee":"sgx"|"tdx","extra-params":...}
                           -> {"nonce": base64 of 32 random bytes, "extra-params": ""} and Set-Cookie kbs-session-id
    POST /kbs/v0/attest    {"init-data":..., "runtime-data":{"nonce","tee-pubkey":JWK},
                            "tee-evidence":{"primary_evidence":{"quote": base64, ...},"additional_evidence":"..."}}
                           -> {"token": JWT}; the quote's report_data must be SHA-384 of the RFC 8785 (JCS) form of
                           {"additional-evidence","nonce","tee-pubkey"}, zero-padded to 64 bytes
    GET  /kbs/v0/resource/REPO/TYPE/TAG   (the session cookie, or Authorization: Bearer TOKEN)
                           -> the secret as a flattened JWE for the tee-pubkey (see jwe)

Errors: {"type": "https://github.com/confidential-containers/kbs/errors/VARIANT", "detail": "..."}; 401 for every
refusal (as Trustee, PolicyDeny included), 404 for an unknown path or secret, 413 for an oversized body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.cookies
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from inclavare.attest.errors import VerificationError
from inclavare.kbs import jwe
from inclavare.kbs.audit import claim_summary
from inclavare.kbs.broker import Broker, Refused
from inclavare.kbs.token import TokenError, TokenIssuer

PROTOCOL_VERSION = "0.4.0"
TEES = ("sgx", "tdx")
ERROR_BASE = "https://github.com/confidential-containers/kbs/errors/"
COOKIE = "kbs-session-id"
MAX_SESSIONS = 10000

Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Session:
    id: str
    tee: str
    nonce: str
    expires: float
    token: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    tee_pubkey: dict[str, Any] = field(default_factory=dict)


def error(status: int, kind: str, detail: str) -> Response:
    body = json.dumps({"type": ERROR_BASE + kind, "detail": detail}).encode()
    return status, [("Content-Type", "application/json")], body


def ok(obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return 200, [("Content-Type", "application/json"), *(headers or [])], json.dumps(obj).encode()


def report_data_for(nonce: str, tee_pubkey: Any, additional: str) -> bytes:
    import rfc8785

    digest = hashlib.sha384(rfc8785.dumps({"additional-evidence": additional, "nonce": nonce,
                                           "tee-pubkey": tee_pubkey})).digest()
    return digest.ljust(64, b"\0")


class Rcar:
    def __init__(self, broker: Broker, verifier: Any, tokens: TokenIssuer, session_timeout: int = 300,
                 token_lifetime: int = 300) -> None:
        self.broker = broker
        self.verifier = verifier
        self.tokens = tokens
        self.session_timeout = session_timeout
        self.token_lifetime = token_lifetime
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    # ---- sessions ----
    def _new_session(self, tee: str) -> Session:
        now = time.time()
        s = Session(uuid.uuid4().hex, tee, base64.b64encode(os.urandom(32)).decode(), now + self.session_timeout)
        with self.lock:
            if len(self.sessions) >= MAX_SESSIONS:
                for k in [k for k, v in self.sessions.items() if v.expires < now]:
                    del self.sessions[k]
                while len(self.sessions) >= MAX_SESSIONS:
                    del self.sessions[next(iter(self.sessions))]
            self.sessions[s.id] = s
        return s

    def _session(self, headers: dict[str, str]) -> Session | None:
        raw = headers.get("cookie")
        if not raw:
            return None
        try:
            c = http.cookies.SimpleCookie(raw)
        except http.cookies.CookieError:
            return None
        m = c.get(COOKIE)
        if m is None:
            return None
        with self.lock:
            s = self.sessions.get(m.value)
            if s is not None and s.expires < time.time():
                del self.sessions[s.id]
                s = None
        return s

    def _cookie(self, s: Session) -> tuple[str, str]:
        exp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(s.expires))
        return "Set-Cookie", f"{COOKIE}={s.id}; Expires={exp}; Path=/kbs; HttpOnly"

    # ---- dispatch ----
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes, peer: str) -> Response:
        path = path.split("?", 1)[0]
        if not path.startswith("/kbs/v0/"):
            return error(404, "InvalidRequestPath", f"{path} is not a KBS v0 path")
        rest = path[len("/kbs/v0/"):]
        try:
            if rest == "auth" and method == "POST":
                return self.auth(_json(body))
            if rest == "attest" and method == "POST":
                return self.attest(headers, _json(body), peer)
            if rest.startswith("resource/") and method == "GET":
                return self.resource(headers, rest[len("resource/"):], peer)
        except Refused as e:
            return error(e.status, e.kind, e.detail)
        return error(404, "InvalidRequestPath", f"{method} {path} is not a KBS endpoint of verdictd")

    def auth(self, req: Any) -> Response:
        if not isinstance(req, dict):
            raise Refused(401, "InvalidRequest", "the auth request must be a JSON object")
        if req.get("version") != PROTOCOL_VERSION:
            raise Refused(401, "ProtocolVersion", f"KBS Client Protocol Version Mismatch: verdictd speaks "
                          f"{PROTOCOL_VERSION}, the request says {req.get('version')!r}")
        tee = req.get("tee")
        if tee not in TEES:
            raise Refused(401, "UnsupportedTee", f"tee {tee!r} is not supported (verdictd verifies {', '.join(TEES)})")
        s = self._new_session(tee)
        return ok({"nonce": s.nonce, "extra-params": ""}, [self._cookie(s)])

    def attest(self, headers: dict[str, str], req: Any, peer: str) -> Response:
        s = self._session(headers)
        if s is None:
            raise Refused(401, "InvalidRequest", "no valid kbs-session-id cookie: POST /kbs/v0/auth first")
        if s.token:
            return ok({"token": s.token}, [self._cookie(s)])
        if not isinstance(req, dict):
            raise Refused(401, "InvalidRequest", "the attestation must be a JSON object")
        rt = req.get("runtime-data")
        ev = req.get("tee-evidence")
        if not isinstance(rt, dict) or not isinstance(ev, dict):
            raise Refused(401, "InvalidRequest", "the attestation needs runtime-data and tee-evidence objects")
        if rt.get("nonce") != s.nonce:
            raise Refused(401, "InvalidNonce", "runtime-data.nonce is not this session's challenge nonce")
        pubkey = rt.get("tee-pubkey")
        try:
            jwe.public_key(pubkey)
        except jwe.JweError as e:
            raise Refused(401, "InvalidRequest", str(e)) from None
        primary = ev.get("primary_evidence")
        additional = ev.get("additional_evidence", "")
        if not isinstance(primary, dict) or not isinstance(primary.get("quote"), str) or not isinstance(additional, str):
            raise Refused(401, "InvalidRequest", "tee-evidence.primary_evidence must be {\"quote\": base64} and "
                          "additional_evidence a string")
        try:
            quote = base64.b64decode(primary["quote"], validate=True)
        except (binascii.Error, ValueError):
            raise Refused(401, "InvalidRequest", "primary_evidence.quote is not base64") from None
        try:
            claims = self.verifier.verify(quote)
        except VerificationError as e:
            self.broker.audit.log("refuse", who=peer, session=s.id, rule=e.check, reason=str(e))
            raise Refused(401, "AttestationFailed", str(e)) from None
        tee_of = "tdx" if claims.tee == "tdx" else "sgx"
        if tee_of != s.tee:
            raise Refused(401, "AttestationFailed", f"the evidence is {tee_of}, the session was opened for {s.tee}")
        if claims.report_data != report_data_for(s.nonce, pubkey, additional):
            self.broker.audit.log("refuse", who=peer, session=s.id, rule="report_data",
                                  reason="report_data does not bind nonce and tee-pubkey",
                                  claims=claim_summary(claims.as_input()))
            raise Refused(401, "AttestationFailed", "the quote's report_data is not SHA-384 of the JCS form of "
                          "{additional-evidence, nonce, tee-pubkey}")
        s.claims, s.tee_pubkey = claims.as_input(), pubkey
        s.token = self.tokens.issue(s.tee, s.claims, s.nonce, pubkey, self.token_lifetime)
        self.broker.audit.log("attest", who=peer, session=s.id, claims=claim_summary(s.claims))
        return ok({"token": s.token}, [self._cookie(s)])

    def resource(self, headers: dict[str, str], path: str, peer: str) -> Response:
        from inclavare.kbs.store import StoreError, check_path

        try:
            check_path(path)
        except StoreError as e:
            raise Refused(404, "InvalidRequestPath", str(e)) from None
        s = self._session(headers)
        if s is not None and s.token:
            claims, pubkey, who = s.claims, s.tee_pubkey, f"{peer} session {s.id}"
        else:
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                raise Refused(401, "TokenNotFound", "no attested session cookie and no Authorization: Bearer token")
            try:
                _tee, claims, pubkey = self.tokens.check(auth[7:].strip())
            except TokenError as e:
                raise Refused(401, "TokenInvalid", str(e)) from None
            who = f"{peer} token"
        value = self.broker.release(path, claims, who)
        try:
            return ok(jwe.encrypt(value, pubkey))
        except jwe.JweError as e:
            raise Refused(401, "InvalidRequest", str(e)) from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(401, "InvalidRequest", "the request body is not JSON") from None
