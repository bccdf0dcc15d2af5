"""DCAP collateral: the PCK CRL and root CA CRL with their issuer chains, the TCB info and QE identity with their
signatures and issuer chains. Read from a file in dcap-qvl's JSON layout (`QuoteCollateralV3.to_json`: the nine
fields below, CRLs and signatures as hex), or fetched for a quote from a PCCS or Intel PCS v4 URL through dcap-qvl's
own client (`/sgx|tdx/certification/v4/{pckcrl,tcb,qe/identity,rootcacrl}`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inclavare.attest.errors import VerificationError

FIELDS = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info", "tcb_info_signature",
          "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature")
INTEL_PCS_URL = "https://api.trustedservices.intel.com"


@dataclass(frozen=True)
class Collateral:
    qvl: Any  # dcap_qvl.QuoteCollateralV3
    digest: bytes  # SHA-256 of the canonical JSON: what a cached verdict is keyed by
    fmspc: str  # uppercase hex, from the TCB info
    tee: str  # "SGX" or "TDX", the TCB info's id
    next_update: str
    source: str

    @classmethod
    def from_json(cls, text: str, source: str = "collateral") -> Collateral:
        import dcap_qvl

        try:
            data = json.loads(text)
        except ValueError as e:
            raise VerificationError("collateral", f"{source} is not JSON ({e})") from None
        if not isinstance(data, dict):
            raise VerificationError("collateral", f"{source} is not a JSON object of dcap-qvl's collateral fields")
        missing = [f for f in FIELDS if not isinstance(data.get(f), str)]
        if missing:
            raise VerificationError("collateral", f"{source} lacks the field {missing[0]!r} (a string)")
        try:
            tcb = json.loads(data["tcb_info"])
            fmspc, tee, nxt = str(tcb["fmspc"]).upper(), str(tcb["id"]), str(tcb["nextUpdate"])
        except (ValueError, KeyError, TypeError):
            raise VerificationError("collateral", f"{source}: its tcb_info is not a TCB info JSON object "
                                    "(fmspc, id, nextUpdate)") from None
        try:
            qvl = dcap_qvl.QuoteCollateralV3.from_json(text)
        except ValueError as e:
            raise VerificationError("collateral", f"{source} does not load in dcap-qvl: {e}") from None
        canon = json.dumps({f: data[f] for f in FIELDS}, sort_keys=True, separators=(",", ":")).encode()
        return cls(qvl, hashlib.sha256(canon).digest(), fmspc, tee, nxt, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Collateral:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise VerificationError("collateral", f"cannot read the collateral file {path}: "
                                    f"{getattr(e, 'strerror', None) or e}") from None
        return cls.from_json(text, f"the collateral file {path}")

    @classmethod
    def fetch(cls, url: str, raw_quote: bytes, timeout: float = 30.0) -> Collateral:
        """Fetch the collateral for `raw_quote` from a PCCS or Intel PCS base URL (e.g. https://pccs.example:8081,
        or INTEL_PCS_URL), with dcap-qvl's client."""
        import dcap_qvl

        async def get() -> Any:
            return await asyncio.wait_for(dcap_qvl.get_collateral(url, bytes(raw_quote)), timeout)

        try:
            qvl = asyncio.run(get())
        except TimeoutError:
            raise VerificationError("collateral", f"fetching collateral from {url} timed out after {timeout:g} s") from None
        except (ValueError, RuntimeError, OSError) as e:
            raise VerificationError("collateral", f"fetching collateral from {url} failed: {e}") from None
        return cls.from_json(qvl.to_json(), f"the collateral from {url}")

    def to_json(self) -> str:
        return self.qvl.to_json()
