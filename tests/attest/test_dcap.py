"""DCAP verification (inclavare.attest with dcap-qvl): every real quote of ../shared/vectors with its known answer and
validity window, dcap-qvl's own verdict as the reference; a byte changed in each signed region refused; wrong time,
another platform's collateral, a revoked PCK, a debug enclave; the platform verdict cache agreeing with dcap-qvl."""

from __future__ import annotations

import json
import struct

import dcap_qvl
import pytest
from tests.attest.dcap_pki import NOW

from inclavare.attest.collateral import Collateral
from inclavare.attest.errors import VerificationError
from inclavare.attest.policy import Policy
from inclavare.attest.verifier import Verifier
from inclavare.tee.sgx import quote_verify as qv

SGX_LO, SGX_HI = 1750330571, 1752919278  # ../shared/vectors/README.md
TDX_LO, TDX_HI = 1750329147, 1752919234


def vector(vectors, name):
    return (vectors / name).read_bytes()


def coll(vectors, name):
    return Collateral.from_file(vectors / name)


def qvl_ok(raw: bytes, collateral: Collateral, now: int, root: bytes | None = None) -> bool:
    try:
        if root:
            dcap_qvl.verify_with_root_ca(raw, collateral.qvl, root, now)
        else:
            dcap_qvl.verify(raw, collateral.qvl, now)
    except ValueError:
        return False
    return True


def test_sgx_vector_known_answer(vectors):
    c = Verifier().verify(vector(vectors, "dcap-qvl/sgx_quote"), now=1751000000,
                          collateral=coll(vectors, "dcap-qvl/sgx_quote_collateral.json"))
    d = c.as_input()
    assert (d["tee"], d["simulated"], d["debug"]) == ("sgx", False, False)
    assert d["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert d["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert d["qe_tcb_status"] == "UpToDate"
    assert d["mr_enclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert d["mr_signer"] == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert bytes.fromhex(d["report_data"]) == b"Hello, world!".ljust(64, b"\0")
    assert (d["isv_prod_id"], d["isv_svn"], d["fmspc"]) == (0, 0, "00a067110000")
    assert (d["collateral_issued_at"], d["collateral_expires_at"]) == (SGX_LO, SGX_HI)
    assert d["verified_at"] == 1751000000


@pytest.mark.parametrize("cache", [0, 16])
def test_sgx_vector_window_matches_dcap_qvl(vectors, cache):
    raw = vector(vectors, "dcap-qvl/sgx_quote")
    c = coll(vectors, "dcap-qvl/sgx_quote_collateral.json")
    v = Verifier([c], cache_size=cache)
    v.verify(raw, now=1751000000)  # warms the cache
    for now in (SGX_LO - 1, SGX_LO, 1751000000, SGX_HI - 1, SGX_HI, SGX_HI + 1, 1800000000):
        try:
            v.verify(raw, now=now)
            ours = True
        except VerificationError as e:
            assert e.check == "dcap", e
            ours = False
        assert ours == qvl_ok(raw, c, now) == (SGX_LO <= now <= SGX_HI), now


def test_sgx_vector_at_an_expired_time_names_the_crl(vectors):
    with pytest.raises(VerificationError, match="CrlExpired") as e:
        Verifier().verify(vector(vectors, "dcap-qvl/sgx_quote"), now=1800000000,
                          collateral=coll(vectors, "dcap-qvl/sgx_quote_collateral.json"))
    assert e.value.check == "dcap"


def test_tdx_v4_vector_known_answer_and_window(vectors):
    raw = vector(vectors, "dcap-qvl/tdx_quote")
    c = coll(vectors, "dcap-qvl/tdx_quote_collateral.json")
    v = Verifier([c])
    d = v.verify(raw, now=1751000000).as_input()
    assert (d["tee"], d["tcb_status"], d["advisory_ids"], d["debug"]) == ("tdx", "UpToDate", [], False)
    assert d["mr_td"].startswith("91eb2b44d141d4ece09f0c75c2c53d247a3c68ed") and d["td_report_version"] == "1.0"
    assert d["rtmr0"].startswith("44c0197b39157fdd") and d["quote_version"] == 4
    for now in (TDX_LO - 1, TDX_LO, TDX_HI, TDX_HI + 1):
        try:
            v.verify(raw, now=now)
            ours = True
        except VerificationError:
            ours = False
        assert ours == qvl_ok(raw, c, now) == (TDX_LO <= now <= TDX_HI), now


def test_tdx_v5_outdated_vector_is_refused_as_dcap_qvl_refuses_it(vectors):
    raw = vector(vectors, "dcap-qvl/tdx_quote_outdated")
    c = coll(vectors, "dcap-qvl/tdx_quote_outdated_collateral.json")
    for now in (1700000000, 1751000000, 1760000000):
        assert not qvl_ok(raw, c, now)
        with pytest.raises(VerificationError, match="dcap-qvl"):
            Verifier().verify(raw, now=now, collateral=c)


def test_mobilecoin_quote_has_no_common_validity_window(vectors):
    raw = vector(vectors, "mobilecoin-attestation/hw_quote.dat")
    c = coll(vectors, "mobilecoin-attestation/collateral_dcap_qvl.json")
    qv.verify_hardware_quote(raw)  # every signature in it is valid
    for now in (1684000000, 1689200000, 1689300000, 1691000000, 1751000000):
        with pytest.raises(VerificationError):
            Verifier().verify(raw, now=now, collateral=c)
        assert not qvl_ok(raw, c, now)


def test_intel_sample_quote_certification_type_1_is_refused(vectors):
    with pytest.raises(VerificationError) as e:
        Verifier().verify(vector(vectors, "intel-qvl-sampleData/quote.dat"), now=1751000000,
                          collateral=coll(vectors, "dcap-qvl/sgx_quote_collateral.json"))
    assert e.value.check == "certification_data"


def test_collateral_of_another_platform(vectors, pki):
    raw = vector(vectors, "dcap-qvl/sgx_quote")
    with pytest.raises(VerificationError):
        Verifier().verify(raw, now=1751000000, collateral=coll(vectors, "mobilecoin-attestation/collateral_dcap_qvl.json"))
    pki.fmspc = "00906ED50000"  # the TCB info of another platform, validly signed
    with pytest.raises(VerificationError, match="Fmspc mismatch|FMSPC") as e:
        Verifier(root_ca_der=pki.root_der).verify(pki.quote(), now=NOW, collateral=Collateral.from_json(pki.collateral()))
    assert e.value.check == "dcap"
    with pytest.raises(VerificationError, match="TDX collateral, not SGX"):
        Verifier().verify(raw, now=1751000000, collateral=coll(vectors, "dcap-qvl/tdx_quote_collateral.json"))
    # loaded collateral is chosen by FMSPC: none for this platform
    with pytest.raises(VerificationError, match="no collateral for this SGX platform .FMSPC 00A067110000"):
        Verifier([coll(vectors, "mobilecoin-attestation/collateral_dcap_qvl.json")]).verify(raw, now=1751000000)


def test_bad_collateral_files(tmp_path, vectors):
    p = tmp_path / "c.json"
    for text, match in (("{", "not JSON"), ("[]", "not a JSON object"), ("{}", "lacks the field 'pck_crl_issuer_chain'")):
        p.write_text(text)
        with pytest.raises(VerificationError, match=match):
            Collateral.from_file(p)
    with pytest.raises(VerificationError, match="cannot read the collateral file"):
        Collateral.from_file(tmp_path / "missing.json")


# ---- a private PKI: what real signed data cannot show -------------------------------------------------------------


def pki_verifier(pki, cache: int = 16) -> tuple[Verifier, Collateral]:
    c = Collateral.from_json(pki.collateral(), "test collateral")
    return Verifier([c], root_ca_der=pki.root_der, cache_size=cache), c


def test_pki_quote_verifies_up_to_date(pki):
    v, _ = pki_verifier(pki)
    claims = v.verify(pki.quote(report_data=b"nonce"), now=NOW)
    assert claims.tcb_status == "UpToDate" and claims.report_data.startswith(b"nonce")
    assert Policy.default().appraise(claims).allowed


def test_genuine_quote_with_nonzero_reserved_bytes_is_accepted(pki):
    """The old check re-serialised the body (reserved bytes zeroed) and refused such a quote."""
    v, _ = pki_verifier(pki)
    raw = pki.quote(reserved=(30, 0x5A))  # a byte of the body's reserved area after misc_select
    assert raw[48 + 30] == 0x5A
    qv.verify_signatures(qv.parse_any(raw))
    assert v.verify(raw, now=NOW).tcb_status == "UpToDate"


def test_revoked_pck_is_refused(pki):
    pki.revoke_pck = True
    v, _ = pki_verifier(pki)
    with pytest.raises(VerificationError, match="certificate chain") as e:
        v.verify(pki.quote(), now=NOW)
    assert e.value.check == "dcap"


def test_debug_enclave_is_refused(pki):
    v, _ = pki_verifier(pki)
    with pytest.raises(VerificationError, match="debug enclave") as e:
        v.verify(pki.quote(debug=True), now=NOW)
    assert e.value.check == "debug"


def test_unlisted_tcb_status_is_refused_by_the_default_policy(pki):
    pki.tcb_status = "OutOfDate"
    v, _ = pki_verifier(pki)
    claims = v.verify(pki.quote(), now=NOW)
    verdict = Policy.default().appraise(claims)
    assert not verdict.allowed and verdict.rule == "tcb_status" and "OutOfDate" in verdict.reason()
    assert Policy.default({"tcb_status": ["OutOfDate"]}).appraise(claims).allowed


def test_expired_collateral_is_refused(pki):
    v, _ = pki_verifier(pki)
    v.verify(pki.quote(), now=NOW)
    with pytest.raises(VerificationError, match="expired|Expired"):
        v.verify(pki.quote(), now=int(pki.collateral_until.timestamp()) + 10)


def test_quote_under_another_root_is_refused(pki, vectors):
    """The test PKI's quote against Intel's production root (the default): refused."""
    c = Collateral.from_json(pki.collateral())
    with pytest.raises(VerificationError, match="not at the trusted root key"):
        Verifier([c]).verify(pki.quote(), now=NOW)


def _regions(raw: bytes) -> list[tuple[str, int]]:
    """(name, offset) for every signed region of a quote v3: header fields and reserved bytes, each report body
    field and reserved gap, the ISV signature, attestation key, QE report (fields and reserved), its signature, the
    QE auth data length and data, the certification data type, size and PEM chain."""
    body = [("cpu_svn", 0), ("misc_select", 16), ("reserved1", 20), ("isv_ext_prod_id", 32), ("attributes", 48),
            ("attributes.debug", 48), ("mr_enclave", 64), ("reserved2", 96), ("mr_signer", 128),
            ("reserved3", 160), ("config_id", 192), ("isv_prod_id", 256), ("isv_svn", 258), ("config_svn", 260),
            ("reserved4", 262), ("isv_family_id", 304), ("report_data", 320), ("report_data.end", 383)]
    out = [("header.version", 0), ("header.att_key_type", 2), ("header.reserved", 4), ("header.qe_svn", 8),
           ("header.pce_svn", 10), ("header.vendor_id", 12), ("header.user_data", 28)]
    out += [(f"body.{n}", 48 + o) for n, o in body]
    out += [("signature_data_len", 432), ("isv_signature", 436), ("isv_signature.s", 436 + 40),
            ("attest_pub_key", 500), ("attest_pub_key.y", 540)]
    out += [(f"qe_report.{n}", 564 + o) for n, o in body]
    (auth_len,) = struct.unpack_from("<H", raw, 1012)
    cert_at = 1014 + auth_len
    out += [("qe_report_signature", 948), ("qe_auth_data_len", 1012), ("qe_auth_data", 1014),
            ("cert_data_type", cert_at), ("cert_data_size", cert_at + 2), ("cert_data.leaf", cert_at + 6 + 100),
            ("cert_data.root", len(raw) - 100)]
    return out


@pytest.mark.parametrize("source", ["vector", "pki"])
def test_a_byte_changed_in_each_signed_region_is_refused(vectors, pki, source):
    """Through the whole verifier, with its platform verdict cache warm from the genuine quote (a tampered quote
    must never ride on a cached verdict), and through the project's own signature checks."""
    if source == "vector":
        raw = vector(vectors, "dcap-qvl/sgx_quote")
        c = coll(vectors, "dcap-qvl/sgx_quote_collateral.json")
        v, now = Verifier([c]), 1751000000
    else:
        raw = pki.quote()
        v, c = pki_verifier(pki)
        now = NOW
    v.verify(raw, now=now)
    for name, offset in _regions(raw):
        for flip in (0x01, 0x80):
            bad = bytearray(raw)
            bad[offset] ^= flip
            with pytest.raises(VerificationError):
                v.verify(bytes(bad), now=now)
                pytest.fail(f"{name} (offset {offset}, xor {flip:#x}) was accepted")
            if name not in ("header.version", "header.att_key_type", "signature_data_len", "qe_auth_data_len",
                            "cert_data_type", "cert_data_size") and not name.startswith("cert_data."):
                with pytest.raises((qv.QuoteError, ValueError)):
                    qv.verify_signatures(qv.parse_any(bytes(bad)))
    assert v.verify(raw, now=now)  # the genuine quote still verifies


def test_tdx_quote_byte_changes_are_refused(vectors):
    raw = vector(vectors, "dcap-qvl/tdx_quote")
    v = Verifier([coll(vectors, "dcap-qvl/tdx_quote_collateral.json")])
    v.verify(raw, now=1751000000)
    for offset in (4, 12, 48, 48 + 120, 48 + 136, 48 + 520, 48 + 583, 636, 700, 636 + 134 + 10, 636 + 134 + 400):
        bad = bytearray(raw)
        bad[offset] ^= 1
        with pytest.raises(VerificationError):
            v.verify(bytes(bad), now=1751000000)
    bad = bytearray(raw)
    bad[-1] = 1  # the zero padding after the signature data must stay zero
    with pytest.raises(VerificationError, match="not zero"):
        v.verify(bytes(bad), now=1751000000)


def test_cache_only_serves_a_quote_that_differs_in_report_data(pki):
    v, c = pki_verifier(pki)
    v.verify(pki.quote(report_data=b"a"), now=NOW)
    misses = v.core.misses
    claims = v.verify(pki.quote(report_data=b"b"), now=NOW)
    assert v.core.misses == misses and v.core.hits >= 1 and claims.report_data.startswith(b"b")
    v.verify(pki.quote(report_data=b"c", isv_svn=3), now=NOW)  # another body: a full verification
    assert v.core.misses == misses + 1


def test_cache_agrees_with_dcap_qvl_at_every_time(pki):
    v, c = pki_verifier(pki)
    raw = pki.quote()
    claims = v.verify(raw, now=NOW)
    lo, hi = claims.collateral_issued_at, claims.collateral_expires_at
    for now in (lo - 1, lo, NOW, hi - 1, hi, hi + 1):
        try:
            v.verify(pki.quote(report_data=b"x"), now=now)
            ours = True
        except VerificationError:
            ours = False
        assert ours == qvl_ok(pki.quote(report_data=b"x"), c, now, pki.root_der), now


def test_pccs_fetch_from_a_local_pccs(pki, tmp_path):
    """Collateral fetched with dcap-qvl's client from a PCCS (PCS v4 API) on the loopback, serving the test PKI."""
    from tests.attest.fake_pccs import FakePccs

    with FakePccs(json.loads(pki.collateral())) as pccs:
        v = Verifier(pccs_url=pccs.url, root_ca_der=pki.root_der)
        assert v.verify(pki.quote(), now=NOW).tcb_status == "UpToDate"
        v.verify(pki.quote(report_data=b"again"), now=NOW)
        assert sum(1 for p in pccs.paths if "/tcb?" in p) == 1, pccs.paths  # fetched once, then cached
        assert any(p.startswith("/sgx/certification/v4/pckcrl?ca=processor") for p in pccs.paths)
    with pytest.raises(VerificationError, match="fetching collateral"):
        Verifier(pccs_url=pccs.url, root_ca_der=pki.root_der, fetch_timeout=5).verify(pki.quote(), now=NOW)
