"""The attestation token: an ES256 JWT signed with verdictd's token key (kept in the store, so tokens survive a
restart), carrying the verified claims and the TEE's public key as Trustee's EAR tokens place them:
submods.cpu0["ear.veraison.annotated-evidence"] = {TEE: claims, "runtime_data_claims": {"nonce", "tee-pubkey"}}."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


class TokenError(ValueError):
    pass


class TokenIssuer:
    def __init__(self, pem: bytes | None = None) -> None:
        from jwcrypto import jwk

        self.key = jwk.JWK.from_pem(pem) if pem else jwk.JWK.generate(kty="EC", crv="P-256")

    def pem(self) -> bytes:
        return self.key.export_to_pem(private_key=True, password=None)

    def issue(self, tee: str, claims: dict[str, Any], nonce: str, tee_pubkey: dict[str, Any], lifetime: int) -> str:
        from jwcrypto import jwt

        now = int(time.time())
        body = {"iss": "verdictd", "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex,
                "submods": {"cpu0": {"ear.status": "affirming", "ear.veraison.annotated-evidence": {
                    tee: claims, "runtime_data_claims": {"nonce": nonce, "tee-pubkey": tee_pubkey}}}}}
        pub = json.loads(self.key.export_public())
        t = jwt.JWT(header={"alg": "ES256", "typ": "JWT", "jwk": pub}, claims=body)
        t.make_signed_token(self.key)
        return t.serialize()

    def check(self, token: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(tee, claims, tee-pubkey) of a token this verdictd issued and that has not expired."""
        from jwcrypto import jwt

        if not isinstance(token, str) or len(token) > 64 * 1024:
            raise TokenError("the attestation token is malformed")
        try:
            t = jwt.JWT(jwt=token, key=self.key, algs=["ES256"], check_claims={"exp": None, "iss": "verdictd"})
            body = json.loads(t.claims)
            ev = body["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
            tee = next(k for k in ev if k != "runtime_data_claims")
            return tee, ev[tee], ev["runtime_data_claims"]["tee-pubkey"]
        except Exception as e:  # noqa: BLE001 - jwcrypto raises many types for bad or expired tokens
            raise TokenError(f"the attestation token is not valid: {type(e).__name__}") from None
