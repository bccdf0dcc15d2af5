"""The refusal of a verifier: which check failed, and one sentence saying why."""

from __future__ import annotations


class VerificationError(ValueError):
    """Evidence that does not verify. `check` names the failed check (e.g. "isv_signature", "collateral", "dcap",
    "simulated", "format", "time"); str() is one sentence naming it."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"evidence refused by check '{check}': {message}")
        self.check = check
        self.reason = message
