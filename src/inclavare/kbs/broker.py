"""The decision both listeners share: may a workload with these verified claims receive this secret? The secret's
own policy (a record naming a Rego module and reference values, "default" unless set) appraises the claims; every
release and refusal is audited with the claims and the rule."""

from __future__ import annotations

import threading
from typing import Any

from inclavare.attest.policy import DEFAULT_REGO, Policy, PolicyError, normalise_reference
from inclavare.kbs.audit import Audit, claim_summary
from inclavare.kbs.store import Store


class Refused(Exception):
    """status (HTTP), kind (KBS error variant), detail (one sentence)."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


class Broker:
    def __init__(self, store: Store, audit: Audit) -> None:
        self.store = store
        self.audit = audit
        self._policies: dict[str, tuple[str, Policy]] = {}
        self._lock = threading.Lock()

    def policy(self, name: str) -> Policy:
        rec = self.store.get("policy", name)
        stamp = str(rec.get("rev", rec.get("updated"))) if rec else ""
        with self._lock:
            got = self._policies.get(name)
            if got and got[0] == stamp:
                return got[1]
        if rec is None:
            if name != "default":
                raise Refused(401, "PolicyDeny", f"the secret names policy {name!r}, which does not exist")
            pol = Policy.default()
        else:
            pol = build_policy(name, rec)
        with self._lock:
            self._policies[name] = (stamp, pol)
        return pol

    def forget(self) -> None:
        with self._lock:
            self._policies.clear()

    def release(self, path: str, claims: dict[str, Any], who: str) -> bytes:
        got = self.store.secret(path)
        if got is None:
            self.audit.log("refuse", who=who, resource=path, rule="resource", reason="no such secret",
                           claims=claim_summary(claims))
            raise Refused(404, "ResourceNotFound", f"there is no secret {path}")
        value, policy_name = got
        try:
            verdict = self.policy(policy_name).appraise(claims)
        except (Refused, PolicyError) as e:
            self.audit.log("refuse", who=who, resource=path, rule="policy", reason=str(e), claims=claim_summary(claims))
            raise Refused(401, "PolicyDeny", str(e)) from None
        if not verdict.allowed:
            self.audit.log("refuse", who=who, resource=path, policy=verdict.policy, rule=verdict.rule,
                           reason=verdict.reason(), claims=claim_summary(claims))
            raise Refused(401, "PolicyDeny", f"secret {path}: {verdict.reason()}")
        self.audit.log("release", who=who, resource=path, policy=verdict.policy, claims=claim_summary(claims))
        return value


def build_policy(name: str, rec: dict[str, Any]) -> Policy:
    ref = normalise_reference(rec.get("reference") or {}, f"policy {name}")
    return Policy(rec.get("rego") or DEFAULT_REGO.read_text(), ref, name)
