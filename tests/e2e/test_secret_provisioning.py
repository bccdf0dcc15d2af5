"""The whole journey with rune: a signed sim enclave bundle, verdictd with a secret and a policy, the enclave
container that receives its secret on a memory-only filesystem before its payload starts; the same image with one
changed file refused (at launch, and by the policy once re-signed); simulated evidence refused by a default policy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.enclave.conftest import signing_key, sim_dir  # noqa: F401
from tests.enclave.test_sim_enclave import sim_bundle
from tests.kbs.conftest import Verdictd, allow_sim, launchers  # noqa: F401

PAYLOAD = ("cat /run/secrets/db-password; echo; stat -c '%a %u %g' /run/secrets/db-password; stat -c '%a' /run/secrets; "
           "grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; echo env=$DB_PASSWORD; "
           "env | grep -c ENCLAVE_SECRETS; echo x > /run/secrets/new 2>/dev/null || echo read-only")


@pytest.fixture
def broker(tmp_path: Path, sim_dir: Path, launchers):  # noqa: ANN001, F811
    from inclavare.tee.sim.platform import load_platform

    load_platform(sim_dir)
    (tmp_path / "vd").mkdir()
    d = Verdictd(tmp_path / "vd", [str(sim_dir / "root_ca.pem")]).start()
    yield d
    d.stop()


def secrets_env(d: Verdictd, extra: tuple[str, ...] = ()) -> list[str]:
    return ["ENCLAVE_SECRETS=app/db/password=db-password,app/db/user", f"ENCLAVE_SECRETS_BROKER={d.ratls_unix}",
            f"ENCLAVE_SECRETS_BROKER_SHA256={d.pin.hex()}", "ENCLAVE_SECRETS_ENV=db-password=DB_PASSWORD", *extra]


def with_env(bundle: Path, env: list[str], uid: int | None = None) -> None:
    c = json.loads((bundle / "config.json").read_text())
    c["process"]["env"] += env
    if uid is not None:
        c["process"]["user"] = {"uid": uid, "gid": uid}
    (bundle / "config.json").write_text(json.dumps(c))


def test_enclave_container_receives_its_secret(rune, sim_dir, signing_key, tmp_path, broker):  # noqa: F811
    b = sim_bundle(tmp_path, ["sh", "-c", PAYLOAD], signing_key, rune.binary)
    mr = json.loads((b / "config.json").read_text())["annotations"]["enclave.sim.mrenclave"]
    allow_sim(broker, "app", mr_enclave=[mr])
    assert broker.verdict("set-secret", "app/db/password", "--value", "hunter2", "--policy", "app").returncode == 0
    assert broker.verdict("set-secret", "app/db/user", "--value", "admin", "--policy", "app").returncode == 0
    with_env(b, secrets_env(broker), uid=1000)
    p = rune("run", "--bundle", str(b), new_id(), capture_output=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines == ["hunter2", "400 1000 1000", "500", "tmpfs ro", "env=hunter2", "0", "read-only"], p.stdout
    releases = [a for a in broker.audit() if a["event"] == "release"]
    assert {r["resource"] for r in releases} == {"app/db/password", "app/db/user"}
    assert all(r["claims"]["mr_enclave"] == mr for r in releases)
    # nothing of the secret on the host's disk: not in the bundle, the rootfs, rune's state
    hits = subprocess.run(["grep", "-rl", "hunter2", str(b), str(rune.root)], capture_output=True, text=True)
    assert hits.stdout == "", hits.stdout


def test_changed_image_is_refused(rune, sim_dir, signing_key, tmp_path, broker):  # noqa: F811
    b = sim_bundle(tmp_path, ["cat", "/run/secrets/db-password"], signing_key, rune.binary)
    mr = json.loads((b / "config.json").read_text())["annotations"]["enclave.sim.mrenclave"]
    allow_sim(broker, "app", mr_enclave=[mr])
    for path in ("app/db/password", "app/db/user"):
        assert broker.verdict("set-secret", path, "--value", "v", "--policy", "app").returncode == 0
    with_env(b, secrets_env(broker))
    assert rune("run", "--bundle", str(b), new_id()).returncode == 0
    # one changed file: refused at launch, before any attestation
    passwd = b / "rootfs" / "etc" / "passwd"
    passwd.write_text(passwd.read_text() + "evil:x:0:0::/:/bin/sh\n")
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1 and "/etc/passwd changed since signing" in p.stderr
    # re-signed with the change: a valid enclave, but not the one the policy names
    c = json.loads((b / "config.json").read_text())
    c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("ENCLAVE_")]
    (b / "config.json").write_text(json.dumps(c))
    sgx_tools = str(Path(rune.binary).with_name("sgx-tools"))
    assert subprocess.run([sgx_tools, "sign-bundle", "--key", str(signing_key), str(b)], capture_output=True).returncode == 0
    with_env(b, secrets_env(broker))
    cid = new_id()
    log = tmp_path / "log.json"
    p = rune("--log", str(log), "--log-format", "json", "run", "--bundle", str(b), cid)
    assert p.returncode == 1
    assert "secret provisioning from unix:" in p.stderr and "refused by rule 'mr_enclave'" in p.stderr, p.stderr
    assert "rule 'mr_enclave'" in json.loads(log.read_text().splitlines()[-1])["msg"]
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_simulated_evidence_refused_by_the_default_policy(rune, sim_dir, signing_key, tmp_path, broker):  # noqa: F811
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    for path in ("app/db/password", "app/db/user"):
        assert broker.verdict("set-secret", path, "--value", "v").returncode == 0  # the default policy
    with_env(b, secrets_env(broker))
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1 and "refused by rule 'simulated'" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


@pytest.mark.parametrize("env,match", [
    (["ENCLAVE_SECRETS=a/b"], "is not REPO/TYPE/TAG"),
    (["ENCLAVE_SECRETS=a/b/c"], "gives no broker"),
    (["ENCLAVE_SECRETS=a/b/c", "ENCLAVE_SECRETS_BROKER=nowhere"], "must be unix:/ABSOLUTE/PATH or HOST:PORT"),
    (["ENCLAVE_SECRETS=a/b/c", "ENCLAVE_SECRETS_BROKER=unix:/nonexistent/v.sock"], "cannot reach the secrets broker"),
    (["ENCLAVE_SECRETS=a/b/c=../x", "ENCLAVE_SECRETS_BROKER=unix:/x"], "must be a plain name"),
    (["ENCLAVE_SECRETS=a/b/c", "ENCLAVE_SECRETS_BROKER=unix:/x", "ENCLAVE_SECRETS_BROKER_SHA256=ab"], "64 hex digits"),
])
def test_bad_provisioning_settings(rune, sim_dir, signing_key, tmp_path, env, match):  # noqa: F811
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    with_env(b, env)
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1 and match in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert not (rune.root / cid).exists()
