"""Secret provisioning through the engines: containerd (`ctr run --runc-binary rune`, a bundle signed with sign-bundle
and imported) and Docker (`docker run --runtime rune`, an image signed with sign-image) run a signed sim enclave
with ENCLAVE_SECRETS in its environment; the payload reads the secret verdictd released; the same image with one
changed file, and a policy that does not accept the enclave, are refused, with the rule in the error the engine shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from tests.conftest import REPO, build_rootfs, default_config
from tests.engines import daemons as d
from tests.kbs.conftest import Verdictd, allow_sim, launchers  # noqa: F401

pytestmark = pytest.mark.engines
PAYLOAD = ["sh", "-c", "echo secret=$(cat /run/secrets/api-token); stat -c '%a' /run/secrets/api-token"]


def signed_image(work: Path, name: str, key: Path, tamper: bool = False) -> str:
    """A busybox image whose rootfs is signed for the sim TEE (args and env as the image gives them)."""
    b = work / f"bundle-{name}"
    (b / "rootfs").mkdir(parents=True)
    build_rootfs(b / "rootfs", shutil.which("busybox") or "/bin/busybox")
    c = default_config(b / "rootfs", PAYLOAD)
    c["process"]["env"] = ["PATH=/bin"]
    (b / "config.json").write_text(json.dumps(c))
    p = subprocess.run([str(REPO / "bin" / "sgx-tools"), "sign-bundle", "--key", str(key), str(b)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    if tamper:
        with open(b / "rootfs" / "etc" / "group", "a") as f:
            f.write("evil:x:0:\n")
    lay = str(work / f"oci-{name}")
    ref = f"docker.io/library/rune-secrets-{name}:latest"
    d.run(["umoci", "init", "--layout", lay])
    d.run(["umoci", "new", "--image", f"{lay}:x"])
    d.run(["umoci", "insert", "--image", f"{lay}:x", str(b / "rootfs"), "/"])
    d.run(["umoci", "config", "--image", f"{lay}:x", *(x for a in PAYLOAD for x in ("--config.cmd", a)),
           "--config.env", "PATH=/bin", "--config.workingdir", "/", "--architecture", "amd64", "--os", "linux"])
    archive = work / f"{name}.tar"
    d.run(["skopeo", "copy", "-q", f"oci:{lay}:x", f"oci-archive:{archive}:{ref}"])
    return str(archive), ref, json.loads((b / "config.json").read_text())["annotations"]["enclave.sim.mrenclave"]


@pytest.fixture
def setup(containerd: d.Containerd, tmp_path: Path, rune_bin: str, launchers):  # noqa: ANN001, F811
    from cryptography.hazmat.primitives import serialization

    from inclavare.tee.sgx.sigstruct import generate_signing_key
    from inclavare.tee.sim.platform import load_platform

    sim = tmp_path / "sim"
    load_platform(sim)
    key = tmp_path / "signer.pem"
    key.write_bytes(generate_signing_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    # the shim starts rune with containerd's environment: a wrapper names this test's sim platform
    wrapper = tmp_path / "rune-sim"
    wrapper.write_text(f"#!/bin/sh\nINCLAVARE_SIM_DIR={sim} exec {rune_bin} \"$@\"\n")
    wrapper.chmod(0o755)
    (tmp_path / "vd").mkdir()
    vd = Verdictd(tmp_path / "vd", [str(sim / "root_ca.pem")]).start()
    root = tmp_path / "runc-root"
    try:
        yield containerd, tmp_path, key, str(wrapper), vd, root
    finally:
        vd.stop()
        for line in containerd.ctr("task", "ls", "-q", check=False).stdout.split():
            if line.startswith("sec-"):
                containerd.ctr("task", "delete", "--force", line, check=False)
        for line in containerd.ctr("containers", "ls", "-q", check=False).stdout.split():
            if line.startswith("sec-"):
                containerd.ctr("containers", "delete", line, check=False)


def ctr_run(c: d.Containerd, wrapper: str, root: Path, ref: str, vd: Verdictd) -> subprocess.CompletedProcess:
    env = ["ENCLAVE_TYPE=sim", "ENCLAVE_SECRETS=tenant/api/token=api-token",
           f"ENCLAVE_SECRETS_BROKER={vd.ratls_unix}", f"ENCLAVE_SECRETS_BROKER_SHA256={vd.pin.hex()}"]
    return c.ctr("run", "--rm", "--runc-binary", wrapper, "--runc-root", str(root),
                 *(x for e in env for x in ("--env", e)), ref, f"sec-{uuid.uuid4().hex[:10]}", check=False, timeout=120)


def test_ctr_run_signed_enclave_receives_its_secret(setup):
    c, work, key, wrapper, vd, root = setup
    archive, ref, mr = signed_image(work, "good", key)
    c.ctr("images", "import", archive)
    allow_sim(vd, "tenant", mr_enclave=[mr])
    assert vd.verdict("set-secret", "tenant/api/token", "--value", "tok-123", "--policy", "tenant").returncode == 0
    p = ctr_run(c, wrapper, root, ref, vd)
    assert p.returncode == 0 and p.stdout.splitlines() == ["secret=tok-123", "400"], (p.stdout, p.stderr)
    # a policy that names another enclave: containerd shows rune's sentence with the rule
    allow_sim(vd, "tenant", mr_enclave=["00" * 32])
    p = ctr_run(c, wrapper, root, ref, vd)
    assert p.returncode != 0 and "refused by rule 'mr_enclave'" in p.stderr, (p.stdout, p.stderr)
    assert "OCI runtime create failed" in p.stderr
    state = root / c.namespace
    assert not state.is_dir() or os.listdir(state) == []  # nothing of the refused container left in rune's root


def test_ctr_run_changed_image_is_refused(setup):
    c, work, key, wrapper, vd, root = setup
    archive, ref, mr = signed_image(work, "tampered", key, tamper=True)
    c.ctr("images", "import", archive)
    allow_sim(vd, "tenant", mr_enclave=[mr])
    vd.verdict("set-secret", "tenant/api/token", "--value", "tok-123", "--policy", "tenant")
    p = ctr_run(c, wrapper, root, ref, vd)
    assert p.returncode != 0 and "/etc/group changed since signing" in p.stderr, (p.stdout, p.stderr)
    assert not any(a["event"] == "release" for a in vd.audit())


# ---- Docker, with an image signed once by `sgx-tools sign-image` (tests/engines/test_signed_images.py) ------------


@pytest.fixture
def host_broker(tmp_path: Path, launchers):  # noqa: ANN001, F811
    """verdictd trusting the host's sim platform, which rune uses under an engine (no INCLAVARE_SIM_DIR there)."""
    from inclavare.tee.sim.platform import DEFAULT_DIR, load_platform

    load_platform(DEFAULT_DIR)
    (tmp_path / "vd").mkdir()
    vd = Verdictd(tmp_path / "vd", [f"{DEFAULT_DIR}/root_ca.pem"]).start()
    yield vd
    vd.stop()


SIGNED = "docker.io/library/rune-secrets-enclave:latest"
TAMPERED = "docker.io/library/rune-secrets-enclave-tampered:latest"


@pytest.fixture
def docker_images(image: d.Image, dockerd: d.Dockerd, tmp_path: Path, rune_bin: str) -> None:
    """The session's busybox image signed with `sgx-tools sign-image`, and a copy with a layer changing /etc/group,
    loaded into dockerd (as test_signed_images.py does, under names of our own)."""
    from inclavare.oci import image as oci_image

    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    work = tmp_path / "img"
    work.mkdir()
    d.run([sgx_tools, "gen-key", str(work / "owner.pem")])
    d.run([sgx_tools, "sign-image", "--key", str(work / "owner.pem"), f"docker-archive:{image.docker_archive}",
           f"docker-archive:{work / 'signed.tar'}:{SIGNED}"])
    img, _ = oci_image.read(str(work / "signed.tar"), work)
    oci_image.add_layer(img, oci_image.layer_of({"etc/group": (b"root:x:0:\nevil:x:0:\n", 0o644)}), work, "tamper")
    oci_image.write(img, "docker-archive", str(work / "tampered.tar"), TAMPERED)
    dockerd.docker("load", "-i", str(work / "signed.tar"))
    dockerd.docker("load", "-i", str(work / "tampered.tar"))


def docker_run(k: d.Dockerd, image: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    flags = [x for kv in env.items() for x in ("-e", "=".join(kv))]
    return k.docker("run", "--rm", "--network", "none", "--runtime", "rune", "--cgroup-parent", "/rune-test-docker",
                    *flags, image, *args, check=False)


def test_docker_run_signed_image_receives_its_secret(docker_images, dockerd, host_broker):  # noqa: ANN001
    vd = host_broker
    env = {"ENCLAVE_SECRETS": "tenant/api/token=api-token", "ENCLAVE_SECRETS_BROKER": vd.ratls_unix,
           "ENCLAVE_SECRETS_BROKER_SHA256": vd.pin.hex(), "ENCLAVE_SECRETS_ENV": "api-token=API_TOKEN"}
    allow_sim(vd, "tenant")
    assert vd.verdict("set-secret", "tenant/api/token", "--value", "tok-docker", "--policy", "tenant").returncode == 0
    p = docker_run(dockerd, SIGNED, ["sh", "-c", "cat /run/secrets/api-token; echo; echo env=$API_TOKEN; "
                                     "stat -c '%a' /run/secrets/api-token"], env)
    assert p.returncode == 0 and p.stdout.splitlines() == ["tok-docker", "env=tok-docker", "400"], (p.stdout, p.stderr)
    release = [a for a in vd.audit() if a["event"] == "release"][-1]
    # the policy now names another enclave: docker shows rune's sentence with the rule, exit 125 (create failed)
    allow_sim(vd, "tenant", mr_enclave=["00" * 32], mr_signer=[release["claims"]["mr_signer"]])
    p = docker_run(dockerd, SIGNED, ["sh", "-c", "cat /run/secrets/api-token"], env)
    assert p.returncode == 125 and "refused by rule 'mr_enclave'" in p.stderr, (p.returncode, p.stderr)
    # the tampered copy never reaches the broker
    allow_sim(vd, "tenant")
    before = len([a for a in vd.audit() if a["event"] in ("release", "refuse")])
    p = docker_run(dockerd, TAMPERED, ["sh", "-c", "cat /run/secrets/api-token"], env)
    assert p.returncode == 125 and "/etc/group" in p.stderr, (p.returncode, p.stderr)
    assert len([a for a in vd.audit() if a["event"] in ("release", "refuse")]) == before
