"""An enclave pod that gets its secret from verdictd, through the real kubelet: deploy/kubernetes/examples/
pod-enclave-secret.yaml as it is (its RuntimeClass rune, the sim enclave resource of rune-device-plugin, the
broker named by the Service's name, verdictd's key pinned), the init-runelet attesting to verdictd with the
enclave's own quote before the payload starts; the payload reads the secret from /run/secrets and $DB_PASSWORD.
A pod whose enclave measurement verdictd's policy does not accept gets nothing: its container is not created and
the pod's status carries verdictd's sentence naming the rule; verdictd's audit lines show both decisions.

verdictd runs here as a host service of the node (bin/verdictd in the cluster's network namespace) with the
configuration of deploy/kubernetes/verdictd-config-secret.yaml, its paths moved under the test's directory and the
node's sim platform root added to sim_roots (which a sim test cluster does). What this one-node cluster lacks is
cluster DNS and kube-proxy: the pod is a host-network pod (as all pods here) and its hostAliases map the Service's
name to the node's address, where verdictd listens; the init-runelet resolves the name in the container, as the
payload would, so on a cluster the same name goes through the cluster's DNS.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.k8s import cluster as k
from tests.k8s.conftest import pod_name
from tests.k8s.test_deploy import DEPLOY, load
from tests.k8s.test_device_plugin import SIM, Plugin, wait_allocatable
from tests.k8s.test_kubelet import _messages

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
SECRET = "correct horse battery staple"
APP = "docker.io/library/rune-k8s-app-enclave:latest"
OTHER = "docker.io/library/rune-k8s-other-enclave:latest"
ROTATED = "docker.io/library/rune-k8s-app-enclave:new-key"


class Verdictd:
    """bin/verdictd in the cluster's network namespace, with the deployed configuration; stopped by its PID."""

    def __init__(self, c: k.Cluster, sim_root: str) -> None:
        import tomlkit

        self.base = Path(tempfile.mkdtemp(prefix="verdictd-", dir=c.base))  # one per test: the fixture is per test
        secret = load(DEPLOY / "verdictd-config-secret.yaml")
        conf = tomlkit.parse(secret["stringData"]["verdictd.toml"])
        conf["state_dir"] = str(self.base / "state")
        conf["key_file"] = str(self.base / "secrets.key")
        conf["admin_socket"] = str(self.base / "admin.sock")
        conf["attestation"]["collateral"] = []
        conf["attestation"]["sim_roots"] = [sim_root]
        self.config = self.base / "verdictd.toml"
        self.config.write_text(tomlkit.dumps(conf))
        self.port = int(conf["attested_tls"]["listen"][0].rsplit(":", 1)[1])
        self.log = self.base / "verdictd.log"  # audit_log "-": the audit lines are its stderr, as in the pod's log
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*c.wrap, str(BIN / "verdictd"), "--config", str(self.config)], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        d.wait_for(lambda: self.proc.poll() is None and self.verdict("status", check=False).returncode == 0, 60,
                   "verdictd", self.log)

    def verdict(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return d.run([str(BIN / "verdict"), "--socket", str(self.base / "admin.sock"), *args], check=check)

    def pin(self) -> str:
        return next(line.split()[1] for line in self.verdict("status").stdout.splitlines()
                    if line.startswith("tls_spki_sha256"))

    def audit(self, event: str) -> list[dict]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [a for a in lines if a.get("event") == event]

    def stop(self) -> None:
        d.stop_pid(self.proc.pid)


def _sign(c: k.Cluster, source: Path, dest: Path, ref: str, key: Path) -> dict[str, str]:
    """sgx-tools sign-image (the kubelet's variables untrusted), imported for the kubelet; its mr_enclave and
    mr_signer."""
    out = d.run([str(BIN / "sgx-tools"), "sign-image", "--key", str(key), "--untrusted-env", "KUBERNETES_*",
                 f"oci-archive:{source}", f"oci-archive:{dest}:{ref}"]).stdout
    c.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(dest))
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(("mr_enclave", "mr_signer"))}


@pytest.fixture(scope="module")
def enclave_images(cluster: k.Cluster, k8s_image: d.Image) -> dict[str, dict[str, str]]:
    """The app's image and another one (one more file: another measurement), signed with one key, and the app's
    image signed with a second key (ROTATED); ref -> its mr_enclave and mr_signer."""
    from inclavare.oci import image as oci_image

    work = cluster.base / "secret-images"
    work.mkdir()
    key = work / "owner.pem"
    d.run([str(BIN / "sgx-tools"), "gen-key", str(key)])
    img, _ = oci_image.read(str(k8s_image.oci_archive), work)
    oci_image.add_layer(img, oci_image.layer_of({"etc/motd": (b"another app\n", 0o644)}), work, "other")
    other = work / "other-oci.tar"
    oci_image.write(img, "oci-archive", str(other), "docker.io/library/other:unsigned")
    new_key = work / "new-owner.pem"
    d.run([str(BIN / "sgx-tools"), "gen-key", str(new_key)])
    return {APP: _sign(cluster, k8s_image.oci_archive, work / "app-signed.tar", APP, key),
            OTHER: _sign(cluster, other, work / "other-signed.tar", OTHER, key),
            ROTATED: _sign(cluster, k8s_image.oci_archive, work / "app-new-key.tar", ROTATED, new_key)}


@pytest.fixture
def verdictd(cluster: k.Cluster, enclave_images: dict[str, dict[str, str]]) -> Iterator[Verdictd]:
    """verdictd with the secret app/db/password under policy `app`, which accepts the app image's measurement."""
    from inclavare.tee.sim.platform import load_platform

    sim_dir = cluster.base / "shim" / "sim"  # the shim's enclave_runtime.sim_dir (tests/k8s/conftest.py)
    root = cluster.base / "sim-root.pem"
    root.write_bytes(load_platform(sim_dir).root_ca_pem)
    v = Verdictd(cluster, str(root))
    try:
        reference = v.base / "app-reference.json"
        reference.write_text(json.dumps({"allow_simulated": True, "mr_enclave": [enclave_images[APP]["mr_enclave"]]}))
        v.verdict("set-policy", "app", "--reference", str(reference))
        v.verdict("set-secret", "app/db/password", "--value", SECRET, "--policy", "app")
        yield v
    finally:
        v.stop()
    assert "Traceback" not in v.log.read_text(), v.log.read_text()


@pytest.fixture(scope="module")
def sim_plugin(cluster: k.Cluster) -> Iterator[Plugin]:
    p = Plugin(cluster, [])
    try:
        wait_allocatable(cluster, SIM, "110")
        yield p
    finally:
        p.stop()


def example_pod(c: k.Cluster, image: str, pin: str) -> dict:
    """examples/pod-enclave-secret.yaml with what this node needs: the local image, the pin `verdict status` gives,
    and, for want of cluster DNS and kube-proxy, the host network and the Service's name on the node's address."""
    pod = load(DEPLOY / "examples/pod-enclave-secret.yaml")
    pod["metadata"]["name"] = pod_name("secret")
    spec = pod["spec"]
    container = spec["containers"][0]
    container.update(image=image, imagePullPolicy="Never")
    env = {e["name"]: e for e in container["env"]}
    env["ENCLAVE_SECRETS_BROKER_SHA256"]["value"] = pin
    host = env["ENCLAVE_SECRETS_BROKER"]["value"].rpartition(":")[0]
    spec.update(hostNetwork=True, dnsPolicy="Default", terminationGracePeriodSeconds=2,
                hostAliases=[{"ip": k.NODE_IP, "hostnames": [host]}])
    return pod


def test_the_example_pod_gets_its_secret_from_verdictd_on_the_node(cluster: k.Cluster, sim_plugin: Plugin,
                                                                   verdictd: Verdictd) -> None:
    secret_and_refusal(cluster, verdictd.pin(), verdictd.audit)


def test_signing_key_rotation(cluster: k.Cluster, sim_plugin: Plugin, verdictd: Verdictd,
                              enclave_images: dict[str, dict[str, str]]) -> None:
    """docs/kubernetes.md's rotation: a policy naming the old key's MRSIGNER refuses the image signed with the new
    key (rule mr_signer, in the pod's status); with both MRSIGNERs as its reference values (verdict set-reference,
    no restart) the same image gets its secret."""
    old, new = enclave_images[APP]["mr_signer"], enclave_images[ROTATED]["mr_signer"]
    assert old != new and enclave_images[APP]["mr_enclave"] == enclave_images[ROTATED]["mr_enclave"]
    reference = verdictd.base / "signers.json"
    reference.write_text(json.dumps({"allow_simulated": True, "mr_signer": [old]}))
    verdictd.verdict("set-reference", "app", str(reference))
    pin = verdictd.pin()
    pod = example_pod(cluster, ROTATED, pin)
    name = pod["metadata"]["name"]
    cluster.apply(pod)
    try:
        msg = _messages(cluster.wait_pod(name, lambda p: "mr_signer" in _messages(p), timeout=120))
        assert "refused by rule 'mr_signer' of policy app" in msg, msg
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
    reference.write_text(json.dumps({"allow_simulated": True, "mr_signer": [old, new]}))
    verdictd.verdict("set-reference", "app", str(reference))
    pod = example_pod(cluster, ROTATED, pin)
    name = pod["metadata"]["name"]
    cluster.apply(pod)
    try:
        cluster.wait_pod(name, k.running, timeout=120)
        p = cluster.kubectl("exec", name, "--", "cat", "/run/secrets/db-password")
        assert p.stdout == SECRET
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
    rules = {a["rule"] for a in verdictd.audit("refuse")}  # once per attempt: the kubelet retries the refused pod
    assert rules == {"mr_signer"} and len(verdictd.audit("release")) == 1, verdictd.audit("refuse")


def secret_and_refusal(cluster: k.Cluster, pin: str, audit) -> None:  # noqa: ANN001 - event -> audit lines
    """The example pod of the app image gets the secret; the same pod of the other image is refused."""
    pod = example_pod(cluster, APP, pin)
    name = pod["metadata"]["name"]
    cluster.apply(pod)
    try:
        running = cluster.wait_pod(name, k.running, timeout=120)
        logs = cluster.kubectl("logs", name).stdout
        assert logs.startswith(f"the app has its database password, {len(SECRET)} characters\n"), logs
        assert "-r-------- " in logs and " db-password\n" in logs, logs  # the 0400 file of the secrets tmpfs
        p = cluster.kubectl("exec", name, "--", "sh", "-c",
                            "cat /run/secrets/db-password; echo; echo $DB_PASSWORD; tr '\\0' ' ' < /proc/1/cmdline; "
                            "echo; grep ' /run/secrets ' /proc/mounts; env | grep -c ^ENCLAVE_SECRETS || true")
        out = p.stdout.splitlines()
        assert out[:2] == [SECRET, SECRET], p.stdout
        assert out[2].startswith("init-runelet"), p.stdout  # PID 1 is rune's init-runelet: an enclave container
        assert out[3].startswith("tmpfs /run/secrets tmpfs ro,"), p.stdout
        assert out[4] == "0", p.stdout  # the ENCLAVE_SECRETS* settings never reach the payload
        # the pod was scheduled on the device plugin's resource
        assert running["spec"]["containers"][0]["resources"]["limits"][SIM] == "1"
        released = audit("release")
        assert [a["resource"] for a in released] == ["app/db/password"], released
        assert released[0]["policy"] == "app" and released[0]["claims"]["simulated"] is True, released
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)

    pod = example_pod(cluster, OTHER, pin)
    name = pod["metadata"]["name"]
    cluster.apply(pod)
    try:
        refused = cluster.wait_pod(name, lambda p: "mr_enclave" in _messages(p), timeout=120)
        msg = _messages(refused)
        assert "secret provisioning from verdictd.inclavare-system.svc:1234 was refused" in msg, msg
        assert "refused by rule 'mr_enclave' of policy app" in msg, msg
        assert refused["status"]["containerStatuses"][0].get("started") is not True, refused["status"]
        d.wait_for(lambda: audit("refuse"), 30, "verdictd's refusal in its audit lines")
        refusals = audit("refuse")
        assert refusals[0]["rule"] == "mr_enclave" and refusals[0]["resource"] == "app/db/password", refusals
        assert len(audit("release")) == 1  # nothing more was released
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)


class VerdictdPod:
    """deploy/kubernetes's verdictd layout applied as it is (Namespace, the config Secret, the PVC, the Deployment,
    the Service), its image built here (tests/k8s/node_image.py), with what an operator adds: the key Secret
    verdictd-key, the sim platform root of the node in the config (a sim test cluster), a volume for the claim (a
    hostPath PersistentVolume, this node having no storage provisioner); and the host network, as every pod of this
    node. Secrets and policies are set with `verdict` inside the pod, the audit lines read from its log."""

    NS = "inclavare-system"

    def __init__(self, c: k.Cluster, image_archive: Path, sim_root: bytes) -> None:
        import tomlkit

        self.c = c
        c.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(image_archive))
        o = {p.name: load(p) for p in DEPLOY.glob("*.yaml")}
        c.apply(o["namespace.yaml"])
        key = c.base / "verdictd-secrets.key"
        key.write_bytes(os.urandom(32))
        c.kubectl("-n", self.NS, "create", "secret", "generic", "verdictd-key", f"--from-file=secrets.key={key}")
        config = o["verdictd-config-secret.yaml"]
        toml = tomlkit.parse(config["stringData"]["verdictd.toml"])
        toml["attestation"]["sim_roots"] = ["sim-root.pem"]  # relative to the file: /etc/verdictd/config
        config["stringData"] = {"verdictd.toml": tomlkit.dumps(toml), "sim-root.pem": sim_root.decode()}
        self.volume = c.base / "verdictd-volume"
        self.volume.mkdir()
        os.chown(self.volume, 65532, 65532)  # the Deployment's runAsUser and fsGroup
        pvc = o["verdictd-pvc.yaml"]
        self.pv = f"verdictd-{c.node}"
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": self.pv},
              "spec": {"capacity": pvc["spec"]["resources"]["requests"], "accessModes": pvc["spec"]["accessModes"],
                       "hostPath": {"path": str(self.volume), "type": "Directory"}, "storageClassName": "",
                       "claimRef": {"namespace": self.NS, "name": pvc["metadata"]["name"]},
                       "persistentVolumeReclaimPolicy": "Retain"}}
        deployment = o["verdictd-deployment.yaml"]
        deployment["spec"]["template"]["spec"].update(hostNetwork=True, dnsPolicy="Default")
        c.apply([pv, config, pvc, deployment, o["verdictd-service.yaml"]])
        p = c.kubectl("-n", self.NS, "rollout", "status", "deployment/verdictd", "--timeout", "180s", check=False,
                      timeout=200)
        assert p.returncode == 0, (p.stdout, p.stderr, c.kubectl("-n", self.NS, "get", "pods", "-o", "yaml").stdout,
                                   c.kubectl("-n", self.NS, "logs", "deploy/verdictd", check=False).stdout)

    def verdict(self, *args: str, input: str | None = None) -> str:
        flags = ["-i"] if input is not None else []
        return self.c.kubectl("-n", self.NS, "exec", *flags, "deploy/verdictd", "--", "verdict", *args,
                              input=input).stdout

    def pin(self) -> str:
        return next(line.split()[1] for line in self.verdict("status").splitlines()
                    if line.startswith("tls_spki_sha256"))

    def audit(self, event: str) -> list[dict]:
        text = self.c.kubectl("-n", self.NS, "logs", "deploy/verdictd").stdout
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [a for a in lines if a.get("event") == event]

    def delete(self) -> None:
        self.c.kubectl("delete", "namespace", self.NS, "--wait", "--timeout", "120s", check=False, timeout=150)
        self.c.kubectl("delete", "pv", self.pv, "--wait", "--timeout", "60s", check=False)


@pytest.fixture
def verdictd_pod(cluster: k.Cluster, enclave_images: dict[str, dict[str, str]]) -> Iterator[VerdictdPod]:
    from tests.k8s import node_image
    from tests.packages.test_packages import make

    from inclavare.tee.sim.platform import load_platform

    archive = node_image.build(cluster.base / "node-image", make("deb"))
    v = VerdictdPod(cluster, archive, load_platform(cluster.base / "shim" / "sim").root_ca_pem)
    try:
        v.verdict("set-policy", "app", "--reference", "/dev/stdin",
                  input=json.dumps({"allow_simulated": True, "mr_enclave": [enclave_images[APP]["mr_enclave"]]}))
        v.verdict("set-secret", "app/db/password", "--stdin", "--policy", "app", input=SECRET)
        yield v
    finally:
        v.delete()


def test_the_example_pod_gets_its_secret_from_the_verdictd_deployment(cluster: k.Cluster, sim_plugin: Plugin,
                                                                      verdictd_pod: VerdictdPod) -> None:
    secret_and_refusal(cluster, verdictd_pod.pin(), verdictd_pod.audit)
    assert "Traceback" not in cluster.kubectl("-n", VerdictdPod.NS, "logs", "deploy/verdictd").stdout
