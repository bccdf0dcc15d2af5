"""One entry point for every kind of evidence: `Verifier(...).verify(quote_bytes, now=...) -> Claims`.

An SGX quote v3 or TDX quote v4/v5 is recognised by its header. Evidence that carries any sim mark goes to the sim
verifier (and verifies only against the simulated roots the Verifier was given); everything else to DCAP, with the
collateral passed in, else the loaded collateral whose TCB info matches the quote's TEE and FMSPC (the FMSPC of its
PCK certificate), else collateral fetched from `pccs_url` (kept for an hour at most, a minute at least, refetched after its TCB info's nextUpdate).
The verification time is an explicit input: `now` (Unix seconds), the clock when None.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import time
from collections.abc import Iterable
from typing import Any

from inclavare.attest import sgx_dcap, sim, tdx
from inclavare.attest.claims import Claims
from inclavare.attest.collateral import Collateral
from inclavare.attest.errors import VerificationError
from inclavare.tee.sgx import quote_verify as qv
from inclavare.tee.sgx.layout import FormatError

MAX_EVIDENCE = 64 * 1024  # a real quote is 4-6 KiB


class Verifier:
    def __init__(self, collateral: Iterable[Collateral] = (), pccs_url: str | None = None,
                 sim_roots: Iterable[Any] = (), root_ca_der: bytes | None = None, cache_size: int = 1024,
                 fetch_timeout: float = 30.0) -> None:
        self.collateral: dict[tuple[str, str], Collateral] = {(c.tee, c.fmspc): c for c in collateral}
        self.pccs_url = pccs_url
        self.sim_roots = list(sim_roots)
        self.fetch_timeout = fetch_timeout
        self.core = sgx_dcap.DcapCore(root_ca_der, cache_size) if self.collateral or pccs_url or root_ca_der is not None \
            else None
        self._root_ca_der = root_ca_der
        self._cache_size = cache_size
        self._fmspc: dict[bytes, str] = {}
        self._fetched: dict[tuple[str, str], tuple[float, Collateral]] = {}
        self._lock = threading.Lock()

    def _core(self) -> sgx_dcap.DcapCore:
        if self.core is None:
            self.core = sgx_dcap.DcapCore(self._root_ca_der, self._cache_size)
        return self.core

    def _quote_fmspc(self, quote: Any) -> str:
        key = hashlib.sha256(quote.cert_data).digest()
        fmspc = self._fmspc.get(key)
        if fmspc is None:
            import dcap_qvl

            try:
                fmspc = bytes(dcap_qvl.parse_pck_extension_from_pem(quote.cert_data).fmspc).hex().upper()
            except ValueError as e:
                raise VerificationError("pck_certificate", f"the quote's PCK certificate has no readable SGX "
                                        f"extension (FMSPC): {e}") from None
            with self._lock:
                if len(self._fmspc) > 4096:
                    self._fmspc.clear()
                self._fmspc[key] = fmspc
        return fmspc

    def collateral_for(self, quote: Any, tee: str) -> Collateral:
        fmspc = self._quote_fmspc(quote)
        c = self.collateral.get((tee, fmspc))
        if c is not None:
            return c
        if self.pccs_url:
            with self._lock:
                got = self._fetched.get((tee, fmspc))
            if got is not None and time.time() < got[0]:
                return got[1]
            c = Collateral.fetch(self.pccs_url, quote.to_bytes(), self.fetch_timeout)
            now_real = time.time()
            left = 3600.0
            try:
                left = datetime.datetime.fromisoformat(c.next_update.replace("Z", "+00:00")).timestamp() - now_real
            except ValueError:
                pass
            until = now_real + min(3600.0, max(60.0, left))  # refetched within the hour, and after nextUpdate
            with self._lock:
                self._fetched[(tee, fmspc)] = (until, c)
            return c
        have = ", ".join(f"{t} {f}" for t, f in self.collateral) or "none"
        raise VerificationError("collateral", f"no collateral for this {tee} platform (FMSPC {fmspc}; loaded: {have})"
                                " and no PCCS URL to fetch it from")

    def verify(self, evidence: bytes, now: int | None = None, collateral: Collateral | None = None) -> Claims:
        if not isinstance(evidence, bytes | bytearray) or not evidence:
            raise VerificationError("format", "the evidence is empty")
        if len(evidence) > MAX_EVIDENCE:
            raise VerificationError("format", f"the evidence is {len(evidence)} bytes, more than {MAX_EVIDENCE}")
        t = int(time.time()) if now is None else int(now)
        try:
            quote = qv.parse_any(bytes(evidence))
        except FormatError as e:
            raise VerificationError("format", f"the quote does not parse: {e}") from None
        if qv.sim_marks(quote):
            if quote.header.version != 3:
                raise VerificationError("simulated", "sim evidence is an SGX quote v3")
            return sim.verify(quote, self.sim_roots, t)
        is_tdx = quote.header.version in (4, 5)
        c = collateral or self.collateral_for(quote, "TDX" if is_tdx else "SGX")
        if is_tdx:
            return tdx.verify(quote, c, t, self._core())
        return sgx_dcap.verify(quote, c, t, self._core())
