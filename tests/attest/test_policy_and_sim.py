"""Appraisal policy (Rego through regopy) and SIMULATED evidence: the default policy's rules, each refusal naming its
rule; the original's sgxPolicy.rego reference data; custom modules; sim quotes only against a named sim root and
refused by default."""

from __future__ import annotations

import base64
import json

import pytest

from inclavare.attest.errors import VerificationError
from inclavare.attest.policy import Policy, PolicyError, load, normalise_reference
from inclavare.attest.verifier import Verifier

MRE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRS = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def claims(**kw):
    base = {"tee": "sgx", "simulated": False, "debug": False, "tcb_status": "UpToDate", "advisory_ids": [],
            "mr_enclave": MRE, "mr_signer": MRS, "isv_prod_id": 1, "isv_svn": 2, "report_data": "00" * 64}
    return {**base, **kw}


@pytest.mark.parametrize("change,rule", [
    ({"debug": True}, "debug"),
    ({"tcb_status": "OutOfDate"}, "tcb_status"),
    ({"tcb_status": "Revoked"}, "tcb_status"),
    ({"simulated": True, "sim_root": "ab"}, "simulated"),
    ({"mr_enclave": "00" * 32}, "mr_enclave"),
    ({"mr_signer": "00" * 32}, "mr_signer"),
    ({"isv_prod_id": 0}, "isv_prod_id"),
    ({"isv_svn": 1}, "isv_svn"),
    ({"advisory_ids": ["INTEL-SA-00615"]}, "advisory"),
])
def test_each_default_rule_names_itself(change, rule):
    p = Policy.default({"mr_enclave": [MRE], "mr_signer": [MRS], "isv_prod_id": 1, "isv_svn": 2,
                        "rejected_advisories": ["INTEL-SA-00615"]})
    assert p.appraise(claims()).allowed
    v = p.appraise(claims(**change))
    assert not v.allowed and v.rule == rule, v
    assert f"rule '{rule}'" in v.reason()


def test_empty_reference_lists_accept_any_as_sgxpolicy_rego():
    p = Policy.default()
    assert p.appraise(claims(mr_enclave="11" * 32, mr_signer="22" * 32, isv_prod_id=0, isv_svn=0)).allowed


def test_original_sgx_data_keys():
    ref = {"mrEnclave": [base64.b64encode(bytes.fromhex(MRE)).decode()], "mrSigner": [], "productId": 1, "svn": 3}
    assert normalise_reference(ref) == {"mr_enclave": [MRE], "mr_signer": [], "isv_prod_id": 1, "isv_svn": 3}
    p = Policy.default(ref)
    assert p.appraise(claims(isv_svn=3)).allowed
    assert p.appraise(claims(isv_svn=2)).rule == "isv_svn"


def test_simulated_needs_allow_and_may_pin_roots():
    sim = claims(simulated=True, tcb_status="Simulated", sim_root="aa" * 32)
    assert Policy.default({"allow_simulated": True}).appraise(sim).allowed
    assert Policy.default({"allow_simulated": True, "sim_roots": ["aa" * 32]}).appraise(sim).allowed
    assert Policy.default({"allow_simulated": True, "sim_roots": ["bb" * 32]}).appraise(sim).rule == "sim_root"
    assert Policy.default({"allow_simulated": True}).appraise({**sim, "debug": True}).rule == "debug"
    assert Policy.default({"allow_simulated": True, "allow_debug": True}).appraise({**sim, "debug": True}).allowed


def test_bad_reference_values_name_the_key(tmp_path):
    for ref, match in (({"mr_enclave": "ab"}, "'mr_enclave' must be a list"), ({"mr_enclave": ["zz"]}, "not hex"),
                       ({"isv_svn": -1}, "'isv_svn' must be an integer"), ({"frob": 1}, "unknown reference value 'frob'"),
                       ({"allow_debug": "yes"}, "'allow_debug' must be true or false"),
                       ({"mrEnclave": ["!!"]}, "not base64")):
        with pytest.raises(PolicyError, match=match):
            Policy.default(ref)


def test_policy_files(tmp_path):
    j = tmp_path / "ref.json"
    j.write_text(json.dumps({"mr_enclave": [MRE], "tcb_status": ["UpToDate"]}))
    assert load(j).appraise(claims()).allowed
    assert load(j).appraise(claims(mr_enclave="00" * 32)).rule == "mr_enclave"
    r = tmp_path / "mine.rego"
    r.write_text('package policy\nimport rego.v1\ndefault allow := false\n'
                 'allow if input.isv_svn >= 2\n'
                 'violations contains {"rule": "svn_two", "msg": "isv_svn below 2"} if input.isv_svn < 2\n')
    assert load(r).appraise(claims()).allowed
    v = load(r).appraise(claims(isv_svn=1))
    assert (v.allowed, v.rule, v.policy) == (False, "svn_two", "mine.rego")
    j2 = tmp_path / "with-module.json"
    j2.write_text(json.dumps({"rego": "mine.rego", "isv_svn": 5}))
    assert load(j2).appraise(claims()).allowed  # mine.rego ignores the reference values
    r.write_text("package policy\nallow := \n")
    with pytest.raises(PolicyError, match="does not compile"):
        load(r)
    (tmp_path / "noallow.rego").write_text("package policy\nx := 1\n")
    v = load(tmp_path / "noallow.rego").appraise(claims())
    assert not v.allowed and v.rule == "allow"
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load(tmp_path / "missing.rego")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyError, match="neither a .rego module nor JSON"):
        load(tmp_path / "bad.json")


# ---- sim evidence ------------------------------------------------------------------------------------------------


def test_sim_quote_verifies_only_against_a_named_root(sim_enclave, sim_root):
    raw = sim_enclave.quote(b"hello")
    with pytest.raises(VerificationError, match="no simulated root was named") as e:
        Verifier().verify(raw)
    assert e.value.check == "simulated"
    c = Verifier(sim_roots=[sim_root]).verify(raw)
    d = c.as_input()
    assert d["simulated"] is True and d["tcb_status"] == "Simulated" and d["tee"] == "sgx"
    assert d["mr_enclave"] == sim_enclave.mr_enclave.hex() and bytes.fromhex(d["report_data"]).startswith(b"hello")
    verdict = Policy.default().appraise(c)
    assert not verdict.allowed and verdict.rule == "simulated"
    assert Policy.default({"allow_simulated": True, "mr_enclave": [d["mr_enclave"]]}).appraise(c).allowed


def test_sim_quote_against_another_sim_root_is_refused(sim_enclave, tmp_path):
    from cryptography import x509

    from inclavare.tee.sim.platform import load_platform

    other = x509.load_pem_x509_certificate(load_platform(tmp_path / "other-sim").root_ca_pem)
    with pytest.raises(VerificationError) as e:
        Verifier(sim_roots=[other]).verify(sim_enclave.quote(b""))
    assert e.value.check == "sim_root"


def test_sim_quote_tampered_is_refused(sim_enclave, sim_root):
    raw = sim_enclave.quote(b"x")
    v = Verifier(sim_roots=[sim_root])
    for offset in (30, 48 + 64, 48 + 320, 436 + 10, 436 + 128 + 64, 436 + 128 + 384 + 5):
        bad = bytearray(raw)
        bad[offset] ^= 1
        with pytest.raises(VerificationError):
            v.verify(bytes(bad))


def test_sim_quote_never_verifies_as_hardware_even_relabelled(sim_enclave, vectors):
    """Rewriting the sim marks in the header breaks its signature; the chain's marks remain."""
    from inclavare.attest.collateral import Collateral
    from inclavare.tee.sgx.quote import INTEL_QE_VENDOR_ID

    raw = bytearray(sim_enclave.quote(b""))
    raw[12:28] = INTEL_QE_VENDOR_ID
    raw[28:48] = bytes(20)
    c = Collateral.from_file(vectors / "dcap-qvl" / "sgx_quote_collateral.json")
    with pytest.raises(VerificationError):
        Verifier([c]).verify(bytes(raw), collateral=c)


def test_garbage_evidence(tmp_path):
    v = Verifier()
    for data, check in ((b"", "format"), (b"\x03\x00\x02\x00" + bytes(100), "format"), (bytes(70000), "format")):
        with pytest.raises(VerificationError) as e:
            v.verify(data)
        assert e.value.check == check
