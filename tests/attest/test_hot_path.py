"""rune's hot path stays clear of attestation: create/start/run/delete of a plain container imports none of the
attestation libraries (cryptography, regopy, jwcrypto, cbor2, dcap-qvl) nor inclavare.attest/kbs."""

from __future__ import annotations

from tests.conftest import imported, new_id

HEAVY = ("cryptography", "regopy", "jwcrypto", "cbor2", "dcap_qvl", "rfc8785", "inclavare.attest", "inclavare.kbs",
         "inclavare.enclave", "inclavare.tee", "ssl")




def test_plain_container_lifecycle_imports_no_attestation_code(rune):
    b = rune.bundle(["true"])
    cid = new_id()
    seen = imported(rune, "run", "--bundle", str(b), cid)
    cid2 = new_id()
    seen |= imported(rune, "create", "--bundle", str(b), cid2)
    seen |= imported(rune, "start", cid2)
    rune("kill", cid2, "KILL")
    seen |= imported(rune, "delete", "--force", cid2)
    bad = sorted(m for m in seen if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert bad == [], bad
