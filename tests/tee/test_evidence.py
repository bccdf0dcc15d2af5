"""The evidence a sim enclave's runelet keeps (inclavare.tee.sim.evidence) with libcrypto through ctypes
(inclavare.tee.openssl): byte for byte the sim TEE's construction, checked with the `cryptography`-based verifiers."""

from __future__ import annotations

import pytest

from inclavare.errors import RuneError
from inclavare.tee import openssl
from inclavare.tee.sgx.report import TargetInfo
from inclavare.tee.sim import bundle, ereport, evidence, launch_check, platform, qe


@pytest.fixture
def launched(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem)
    return launch_check(b / "rootfs")


def test_lean_evidence_matches_the_sim_tee(launched) -> None:
    lib = openssl.load()
    p = platform.load_platform()
    ev = evidence.Evidence.from_json(evidence.make(p, launched.identity).to_json())
    rep = ev.report(lib, qe.qe_target_info().to_bytes(), b"nonce")
    body = ereport.verify_report(p, rep, qe.qe_target_info())
    assert body.mr_enclave == launched.mr_enclave and body.report_data.startswith(b"nonce")
    other = TargetInfo(mr_enclave=bytes(range(32)), misc_select=5, config_svn=2)
    ereport.verify_report(p, ev.report(lib, other.to_bytes(), b"x"), other)
    with pytest.raises(RuneError, match="MAC does not verify"):
        ereport.verify_report(p, ev.report(lib, other.to_bytes(), b"x"), qe.qe_target_info())
    quote = ev.quote(lib, b"user data")
    v = qe.verify_sim_quote(quote, p.root_ca_pem)
    assert v.quote.report_body.mr_enclave == launched.mr_enclave
    assert v.quote.report_body.report_data.startswith(b"user data")
    assert ev.seal_mrenclave == launched.seal_key("mrenclave") and ev.seal_mrsigner == launched.seal_key("mrsigner")
    assert ev.target_info == launched.identity.target_info().to_bytes()
    with pytest.raises(ValueError, match="at most 64"):
        ev.quote(lib, bytes(65))


def test_libcrypto_primitives_match_cryptography() -> None:
    from cryptography.hazmat.primitives import cmac, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers import algorithms

    from inclavare.tee.sgx import quote_verify as qv

    lib = openssl.load()
    c = cmac.CMAC(algorithms.AES(bytes(range(16))))
    c.update(b"data" * 50)
    assert lib.cmac_aes128(bytes(range(16)), b"data" * 50) == c.finalize()
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    sig = lib.ecdsa_p256_sign(der, b"signed bytes")
    assert len(sig) == 64 and qv._check_raw(key.public_key(), sig, b"signed bytes")
