"""Fixtures of the attestation tests: the shared vectors, a private sim platform, a signed sim enclave and its quote,
and a private DCAP PKI (dcap_pki.Platform) that dcap-qvl verifies with its test root."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.tee.conftest import _make_bundle, other_key_pem, signing_key_pem, sim_dir, vectors  # noqa: F401, F811


@pytest.fixture
def sim_enclave(tmp_path: Path, sim_dir: Path, signing_key_pem: Path):  # noqa: F811
    """A launched sim enclave (LaunchedEnclave) of a freshly signed bundle."""
    from inclavare.tee.sim import bundle, launch_check

    b = _make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem)
    return launch_check(b / "rootfs", sim_dir=sim_dir)


@pytest.fixture
def sim_root(sim_dir: Path, sim_enclave):  # noqa: ANN001, F811
    from cryptography import x509

    from inclavare.tee.sim.platform import load_platform

    return x509.load_pem_x509_certificate(load_platform(sim_dir).root_ca_pem)


@pytest.fixture
def pki(vectors: Path):  # noqa: F811
    from tests.attest.dcap_pki import Platform

    return Platform(vectors)
