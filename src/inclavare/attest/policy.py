"""Appraisal policy in Rego, evaluated by regopy (rego-cpp), the engine family Confidential Containers' Trustee uses.

A policy is a Rego module (`package policy`) with `data.policy.allow` (boolean) and, to name why it refuses,
`data.policy.violations`: a set of {"rule", "msg"} objects. Its `input` is the claims (Claims.as_input()); its
`data.reference` the reference values. The default module, default_policy.rego beside this file, accepts what
Inclavare's sgxPolicy.rego accepted (mr_enclave and mr_signer lists, where empty means any; product id and svn
minimums) and refuses debug enclaves, TCB statuses not listed and simulated evidence unless allowed.

Policy files (`load`):
- NAME.rego: a module; the reference values are the defaults;
- NAME.json: reference values for the default module, `{"mr_enclave": [hex], "mr_signer": [...], "isv_prod_id": 0,
  "isv_svn": 0, "mr_td": [...], "tcb_status": [...], "rejected_advisories": [...], "allow_debug": false,
  "allow_simulated": false, "sim_roots": [...]}`, plus optionally `"rego": "FILE"` (a module path relative to the
  JSON file) to use another module with these values. The original's sgxData keys (mrEnclave and mrSigner as
  base64 lists, productId, svn) are read too.

Each Policy compiles its module and data into a bundle once; `appraise` then costs one bundle query (thread-safe).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inclavare.attest.claims import Claims

DEFAULT_REGO = Path(__file__).with_name("default_policy.rego")
REFERENCE_KEYS = ("mr_enclave", "mr_signer", "mr_td", "isv_prod_id", "isv_svn", "tcb_status", "rejected_advisories",
                  "allow_debug", "allow_simulated", "sim_roots")
QUERY = "a = data.policy.allow; v = data.policy.violations"


class PolicyError(ValueError):
    """A policy that cannot be loaded or evaluated; str() names the file or field."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    violations: tuple[dict[str, str], ...] = ()
    policy: str = "default"

    @property
    def rule(self) -> str:
        return ",".join(v["rule"] for v in self.violations) if self.violations else ("" if self.allowed else "allow")

    def reason(self) -> str:
        if self.allowed:
            return "accepted"
        if not self.violations:
            return f"refused by policy {self.policy}: its allow rule is not true"
        return "; ".join(f"refused by rule '{v['rule']}' of policy {self.policy}: {v['msg']}" for v in self.violations)

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "policy": self.policy, "violations": list(self.violations)}


def _hex_list(values: Any, key: str, where: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{where}: reference value {key!r} must be a list of hex strings")
    out = []
    for v in values:
        try:
            out.append(bytes.fromhex(v).hex())
        except ValueError:
            raise PolicyError(f"{where}: {key!r} holds {v!r}, which is not hex") from None
    return out


def normalise_reference(ref: Any, where: str = "reference values") -> dict[str, Any]:
    """Check reference values (our keys or the original's sgxData keys); lowercase hex."""
    if not isinstance(ref, dict):
        raise PolicyError(f"{where} must be a JSON object")
    ref = dict(ref)
    for orig, ours in (("mrEnclave", "mr_enclave"), ("mrSigner", "mr_signer")):
        if orig in ref:
            vals = ref.pop(orig)
            if not isinstance(vals, list):
                raise PolicyError(f"{where}: {orig!r} must be a list of base64 strings")
            try:
                ref[ours] = [base64.b64decode(v, validate=True).hex() for v in vals]
            except (binascii.Error, TypeError, ValueError):
                raise PolicyError(f"{where}: {orig!r} holds a value that is not base64") from None
    for orig, ours in (("productId", "isv_prod_id"), ("svn", "isv_svn")):
        if orig in ref:
            ref[ours] = ref.pop(orig)
    out: dict[str, Any] = {}
    for k, v in ref.items():
        if k == "rego":
            continue
        if k not in REFERENCE_KEYS:
            raise PolicyError(f"{where}: unknown reference value {k!r} (known: {', '.join(REFERENCE_KEYS)})")
        if k in ("mr_enclave", "mr_signer", "mr_td", "sim_roots"):
            out[k] = _hex_list(v, k, where)
        elif k in ("isv_prod_id", "isv_svn"):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
                raise PolicyError(f"{where}: {k!r} must be an integer 0..65535")
            out[k] = v
        elif k in ("allow_debug", "allow_simulated"):
            if not isinstance(v, bool):
                raise PolicyError(f"{where}: {k!r} must be true or false")
            out[k] = v
        else:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise PolicyError(f"{where}: {k!r} must be a list of strings")
            out[k] = list(v)
    return out


@dataclass
class Policy:
    rego: str
    reference: dict[str, Any] = field(default_factory=dict)
    name: str = "default"

    def __post_init__(self) -> None:
        import regopy

        self._lock = threading.Lock()
        build = regopy.Interpreter()
        try:
            build.add_module(self.name, self.rego)
            build.add_data({"reference": self.reference})
            self._bundle = build.build(QUERY)
        except regopy.RegoError as e:
            raise PolicyError(f"policy {self.name} does not compile: {_first_line(e)}") from None
        if not self._bundle.ok():
            raise PolicyError(f"policy {self.name} does not compile")
        self._run = regopy.Interpreter()
        self._regopy = regopy

    @classmethod
    def default(cls, reference: dict[str, Any] | None = None) -> Policy:
        return cls(DEFAULT_REGO.read_text(), normalise_reference(reference or {}), "default")

    def appraise(self, claims: Claims | dict[str, Any]) -> Verdict:
        doc = claims.as_input() if isinstance(claims, Claims) else claims
        with self._lock:
            try:
                self._run.set_input(doc)
                out = self._run.query_bundle(self._bundle)
            except self._regopy.RegoError as e:
                return Verdict(False, ({"rule": "policy_error", "msg": _first_line(e)},), self.name)
        try:
            result = out[0]
            allowed = result["a"] is True
            violations = result["v"]
        except (IndexError, KeyError, TypeError):
            return Verdict(False, ({"rule": "allow", "msg": f"policy {self.name} gave no allow decision"},), self.name)
        vs = tuple(sorted(({"rule": str(v.get("rule", "?")), "msg": str(v.get("msg", ""))}
                           for v in violations if isinstance(v, dict)), key=lambda v: v["rule"])) \
            if isinstance(violations, list) else ()
        return Verdict(allowed and not vs, vs, self.name)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if "errormsg" in line:
            return line.split("errormsg", 1)[1].strip(" :)")
    return text.splitlines()[0] if text else type(e).__name__


def load(path: str | Path) -> Policy:
    """A .rego module (default reference values) or a .json file of reference values (see the module docstring)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"cannot read the policy file {p}: {getattr(e, 'strerror', None) or e}") from None
    if p.suffix == ".rego":
        return Policy(text, {}, p.name)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PolicyError(f"the policy file {p} is neither a .rego module nor JSON reference values ({e})") from None
    ref = normalise_reference(data, f"the policy file {p}")
    if isinstance(data, dict) and data.get("rego"):
        module = (p.parent / str(data["rego"]))
        try:
            return Policy(module.read_text(), ref, module.name)
        except OSError as e:
            raise PolicyError(f"cannot read the Rego module {module} named by {p}: {e.strerror}") from None
    return Policy(DEFAULT_REGO.read_text(), ref, f"default ({p.name})")
