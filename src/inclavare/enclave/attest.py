"""`rune attest`: a local REPORT of an enclave container's enclave, or with --isRA a quote for remote attestation.

The host side does what aesmd and the quoting enclave do in the original: it gets the QE's TARGETINFO (the sim QE's,
or aesmd's ECDSA QE on SGX hosts), the runelet asks the enclave runtime for a REPORT for it (pal_get_local_report,
PAL v3 or the built-in sim runtime), and with --isRA the QE turns the REPORT into a quote v3.
"""

from __future__ import annotations

import os

from inclavare.enclave import agent
from inclavare.enclave.config import SIM
from inclavare.errors import RuneError


def attest(state_dir: str, state: dict, is_ra: bool, quote_type: str = "") -> dict:
    """{"report": bytes, "quote": bytes | None}."""
    enclave = state.get("enclave") or {}
    cid = state.get("id", os.path.basename(state_dir))
    if not enclave:
        raise RuneError(f"container {cid!r} is not an enclave container: nothing to attest")
    if quote_type and quote_type != "ecdsa" and is_ra:
        raise RuneError(f"--quote-type {quote_type}: EPID quotes (and IAS) are not supported; use --quote-type ecdsa "
                        "(SGX quote v3)")
    if enclave.get("type") == SIM:
        from inclavare.tee.sim import qe
        from inclavare.tee.sim.platform import load_platform

        report = agent.local_report(state_dir, state, qe.qe_target_info().to_bytes())
        quote = qe.gen_quote(load_platform(enclave.get("sim_dir")), report) if is_ra else None
    else:
        from inclavare.tee.sgx.aesm import AesmClient, AesmError

        try:
            client = AesmClient()
            target_info, _ = client.ecdsa_target_info()
            report = agent.local_report(state_dir, state, target_info)
            quote = client.ecdsa_quote(report) if is_ra else None
        except (AesmError, OSError) as e:
            raise RuneError(f"aesmd (/var/run/aesmd/aesm.socket) failed: {e}") from None
    return {"report": report, "quote": quote}
