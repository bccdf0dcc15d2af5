"""The audit trail: one JSON line per release, refusal and attestation, with who asked (the peer address or
session), which claims (the identity that matters for a decision) and which rule decided."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

CLAIM_KEYS = ("tee", "simulated", "mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "mr_td", "debug", "tcb_status",
              "sim_root")


def claim_summary(claims: dict[str, Any] | None) -> dict[str, Any]:
    return {k: claims[k] for k in CLAIM_KEYS if claims and k in claims}


class Audit:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.f = None
        self.open()

    def open(self) -> None:
        if self.path in ("-", ""):
            self.f = sys.stderr
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.f = open(self.path, "a", buffering=1)  # noqa: SIM115 - lives with the daemon
        os.chmod(self.path, 0o600)

    def reopen(self) -> None:
        with self.lock:
            if self.f not in (None, sys.stderr):
                self.f.close()
            self.open()

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields},
                          default=str)
        with self.lock:
            try:
                self.f.write(line + "\n")
                self.f.flush()
            except (OSError, ValueError):
                pass
