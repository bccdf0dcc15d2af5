"""The example services receive their API token from verdictd only after attestation, and prove it: GET
/proof?challenge=C answers HMAC-SHA256(token, C), which the test computes itself with a fresh challenge. Through
Docker (the image signed with `sgx-tools sign-image`, the host's sim platform) and through containerd-shim-rune-v2
(the ordinary image signed by the shim, its own sim platform). A policy that names another enclave gets no token
and the container is refused at create with the rule; the tampered image never reaches the broker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e import languages as lang
from tests.e2e.test_languages import _ctr_flags, _docker_flags, _task
from tests.engines import shimd
from tests.engines.test_shim import _mrsigner_of, remove, stop_task
from tests.kbs.conftest import Verdictd, allow_sim, launchers  # noqa: F401

pytestmark = pytest.mark.engines
RESOURCE = "shop/api/token"


def _broker(base: Path, sim_dir: Path) -> Verdictd:
    from inclavare.tee.sim.platform import load_platform

    load_platform(sim_dir)
    base.mkdir(parents=True, exist_ok=True)
    return Verdictd(base, [str(sim_dir / "root_ca.pem")]).start()


@pytest.fixture
def host_broker(tmp_path: Path, launchers) -> Iterator[Verdictd]:  # noqa: ANN001, F811
    """verdictd trusting the host's sim platform, which rune uses under dockerd."""
    from inclavare.tee.sim.platform import DEFAULT_DIR

    vd = _broker(tmp_path / "vd", Path(DEFAULT_DIR))
    yield vd
    vd.stop()


@pytest.fixture
def shim_broker(tmp_path: Path, shim: shimd.ShimContainerd, launchers) -> Iterator[Verdictd]:  # noqa: ANN001, F811
    """verdictd trusting the sim platform of the shim's configuration ([enclave_runtime] sim_dir)."""
    vd = _broker(tmp_path / "vd", shim.base / "sim")
    yield vd
    vd.stop()


def secret_env(vd: Verdictd) -> dict[str, str]:
    return {"ENCLAVE_SECRETS": f"{RESOURCE}=api-token", "ENCLAVE_SECRETS_BROKER": vd.ratls_unix,
            "ENCLAVE_SECRETS_BROKER_SHA256": vd.pin.hex()}


def prove(port: int, token: bytes) -> None:
    challenge = secrets.token_hex(16)
    status, body = lang.get(port, f"/proof?challenge={challenge}")
    assert status == 200, body
    want = hmac.new(token, challenge.encode(), hashlib.sha256).hexdigest()
    assert json.loads(body) == {"hmac_sha256": want}, body
    assert token not in lang.get(port, "/")[1]


def test_docker_service_proves_the_token_verdictd_released(example: lang.Example, docker_engine,  # noqa: ANN001
                                                           host_broker: Verdictd) -> None:
    vd, dk = host_broker, docker_engine.k.docker
    token = secrets.token_hex(24).encode()
    allow_sim(vd, "shop", mr_enclave=[example.signed_mr_enclave])
    assert vd.verdict("set-secret", RESOURCE, "--value", token.decode(), "--policy", "shop").returncode == 0
    port = lang.free_port()
    env = [x for kv in secret_env(vd).items() for x in ("-e", "=".join(kv))]
    cid = dk("run", "-d", *_docker_flags(docker_engine, port), *env, example.signed_ref).stdout.strip()
    try:
        lang.first_answer(port, alive=lambda: dk("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true")
        prove(port, token)
        release = [a for a in vd.audit() if a["event"] == "release"]
        assert [r["claims"]["mr_enclave"] for r in release] == [example.signed_mr_enclave], release
        dk("stop", cid, timeout=60)
        assert dk("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "0"
    finally:
        dk("rm", "-f", cid, check=False)
    # a policy for another enclave: no token, the container is refused at create with the rule (docker's 125)
    allow_sim(vd, "shop", mr_enclave=["00" * 32])
    p = dk("run", "--rm", *_docker_flags(docker_engine, lang.free_port()), *env, example.signed_ref, check=False)
    assert p.returncode == 125 and "refused by rule 'mr_enclave'" in p.stderr, (p.returncode, p.stderr)
    # the tampered image is refused before it asks
    allow_sim(vd, "shop")
    before = len([a for a in vd.audit() if a["event"] in ("release", "refuse")])
    p = dk("run", "--rm", *_docker_flags(docker_engine, lang.free_port()), *env, example.tampered_ref, check=False)
    assert p.returncode == 125 and example.tamper_path in p.stderr, (p.returncode, p.stderr)
    assert len([a for a in vd.audit() if a["event"] in ("release", "refuse")]) == before


def test_containerd_shim_service_proves_the_token(example: lang.Example, shim: shimd.ShimContainerd,
                                                  shim_broker: Verdictd) -> None:
    vd = shim_broker
    token = secrets.token_hex(24).encode()
    mr_signer = _mrsigner_of(shim.base / "owner.pem")
    allow_sim(vd, "shop", mr_signer=[mr_signer])
    assert vd.verdict("set-secret", RESOURCE, "--value", token.decode(), "--policy", "shop").returncode == 0
    port = lang.free_port()
    env = [x for kv in secret_env(vd).items() for x in ("--env", "=".join(kv))]
    cid = shimd.name("l")
    shim.ctr("run", "-d", "--null-io", *_ctr_flags(shim, port), *env, example.plain_ref, cid, timeout=600)
    try:
        lang.first_answer(port, alive=lambda: _task(shim, cid) == "RUNNING")
        prove(port, token)
        release = [a for a in vd.audit() if a["event"] == "release"]
        assert len(release) == 1 and release[0]["claims"]["mr_signer"] == mr_signer, release
        assert stop_task(shim, cid) == 0
    except BaseException:
        remove(shim, cid)
        raise
    allow_sim(vd, "shop", mr_signer=["00" * 32])
    cid = shimd.name("l")
    p = shim.ctr("run", "--rm", *_ctr_flags(shim, lang.free_port()), *env, example.plain_ref, cid, check=False,
                 timeout=600)
    shim.ctr("containers", "delete", cid, check=False)
    assert p.returncode != 0 and "refused by rule 'mr_signer'" in p.stderr, (p.returncode, p.stderr)
