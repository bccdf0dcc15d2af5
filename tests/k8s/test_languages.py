"""The web services of examples/ (Python, Go, Java, built from Debian packages) as sim enclave pods through the real
kubelet: RuntimeClass rune (containerd-shim-rune-v2), the ordinary image imported into the node's containerd and
signed by the shim at Create (`ENCLAVE_TYPE=sim` in the pod's env). Each pod's service answers HTTP on the node's
network (host network: the cluster's own network namespace, reached from a client started in it), `kubectl exec`
and `crictl exec` of a measured program work, the CRI's StopContainer (what the kubelet does on deletion) ends it
with status 0 and its goodbye line, deleting the pod leaves nothing on the node, and the image signed for
Kubernetes with one changed file of its language runtime fails with rune's sentence naming the file in the pod's
status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e import languages as lang
from tests.e2e.test_language_secrets import RESOURCE, secret_env
from tests.engines import daemons as d
from tests.engines.test_shim import _mrsigner_of
from tests.k8s import cluster as k
from tests.k8s.conftest import Leftovers, pod_name
from tests.k8s.test_kubelet import _messages
from tests.kbs.conftest import Verdictd, allow_sim, launchers  # noqa: F401

from inclavare.oci import image as oci_image

pytestmark = pytest.mark.engines

NAMES = list(lang.TAMPER)
# the cluster's network namespace is its own: any port its daemons do not use is free
PORTS = {name: 18080 + i for i, name in enumerate(NAMES)}


class K8sExample:
    """One example's ordinary image and, signed for Kubernetes (the kubelet's service variables and PORT untrusted),
    a copy with one changed runtime file, both imported into the node's containerd."""

    def __init__(self, name: str, c: k.Cluster, key: Path) -> None:
        self.name = name
        reason = d.ensure_packages(lang.PACKAGES[name])
        assert reason is None, reason
        try:
            built = lang.imagebuild().build(name)
        except SystemExit as e:  # the builder's one sentence
            raise AssertionError(str(e)) from None
        self.plain_ref, plain_oci = built["ref"], Path(built["oci_archive"])
        work = c.base / f"lang-{name}"
        work.mkdir()
        signed = work / "signed-oci.tar"
        self.tampered_ref = f"docker.io/library/inclavare-{name}-k8s-tampered:latest"
        d.run([str(d.REPO / "bin" / "sgx-tools"), "sign-image", "--key", str(key), "--untrusted-env", "KUBERNETES_*",
               "--untrusted-env", "PORT", f"oci-archive:{plain_oci}", f"oci-archive:{signed}:{self.tampered_ref}"],
              timeout=600)
        img, _ = oci_image.read(str(signed), work)
        self.tamper_path = lang.TAMPER[name]
        original = _file(img, self.tamper_path)
        oci_image.add_layer(img, oci_image.layer_of({self.tamper_path.lstrip("/"): (original + b"\n", 0o755)}), work,
                            "tamper")
        tampered = work / "tampered-oci.tar"
        oci_image.write(img, "oci-archive", str(tampered), self.tampered_ref)
        for archive in (plain_oci, tampered):
            c.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(archive), timeout=300)


def _file(img, path: str) -> bytes:  # noqa: ANN001 - an oci_image image
    import tarfile

    rel = path.lstrip("/")
    for layer in reversed(img.layers):
        with tarfile.open(layer.path) as t:
            try:
                f = t.extractfile(rel)
            except KeyError:
                continue
            if f is not None:
                return f.read()
    raise AssertionError(f"{path} is not in the image")


@pytest.fixture(scope="module")
def owner_key(cluster: k.Cluster) -> Path:
    key = cluster.base / "lang-owner.pem"
    d.run([str(d.REPO / "bin" / "sgx-tools"), "gen-key", str(key)])
    return key


@pytest.fixture(scope="module", params=NAMES)
def k8s_example(request: pytest.FixtureRequest, cluster: k.Cluster, owner_key: Path) -> K8sExample:
    return K8sExample(request.param, cluster, owner_key)


def fetch(c: k.Cluster, port: int, paths: list[str], timeout: float = 120) -> list[tuple[int, bytes]]:
    """The answers to GET of paths on port of the node's network, from a client run in the cluster's network
    namespace: the first one polled until timeout (the service starting), the others asked once."""
    client = textwrap.dedent(f"""
        import json, sys, time, urllib.request
        def get(path):
            with urllib.request.urlopen("http://127.0.0.1:{port}" + path, timeout=5) as r:
                return [r.status, r.read().decode()]
        paths = {paths!r}
        deadline = time.monotonic() + {timeout}
        while True:
            try:
                first = get(paths[0])
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("no HTTP answer on port {port}")
                time.sleep(0.05)
        print(json.dumps([first] + [get(p) for p in paths[1:]]))
    """)
    p = d.run([*c.wrap, "python3", "-I", "-c", client], check=False, timeout=timeout + 30)
    assert p.returncode == 0, p.stderr
    return [(status, body.encode()) for status, body in json.loads(p.stdout)]


def _web_pod(name: str, ex: K8sExample, env: dict[str, str] | None = None) -> dict:
    body = k.pod(name, [], runtime_class="rune", image=ex.plain_ref,
                 env={"ENCLAVE_TYPE": "sim", "PORT": str(PORTS[ex.name]), **(env or {})},
                 restartPolicy="Never", terminationGracePeriodSeconds=30,
                 volumes=[{"name": "tmp", "emptyDir": {"medium": "Memory"}}])
    container = body["spec"]["containers"][0]
    del container["command"]  # the image's own entrypoint
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]  # the runtimes' scratch space
    return body


def test_example_pod_serves_exec_stops_and_leaves_nothing(cluster: k.Cluster, leftovers: Leftovers,
                                                          k8s_example: K8sExample) -> None:
    ex = k8s_example
    name = pod_name(ex.name.split("-")[0])
    cluster.apply(_web_pod(name, ex))
    try:
        pod = cluster.wait_pod(name, k.running, timeout=300)
        ids = leftovers.ids(pod)
        cid = ids[-1]
        state = json.loads((cluster.runtime_roots["rune"] / cid / "state.json").read_text())
        assert state["enclave"]["type"] == "sim", state.get("enclave")  # signed by the shim at Create

        (status, body), health = fetch(cluster, PORTS[ex.name], ["/", "/health"])
        assert status == 200 and json.loads(body)["service"] == ex.name, body
        assert health == (200, b"ok\n")

        cmd, want = lang.EXEC[ex.name]
        p = cluster.kubectl("exec", name, "--", *cmd, check=False)
        assert p.returncode == 0 and want in (p.stdout + p.stderr).lower(), p
        p = cluster.crictl("exec", cid, *cmd, check=False)
        assert p.returncode == 0 and want in (p.stdout + p.stderr).lower(), p

        # StopContainer through the CRI, as the kubelet stops a deleted pod's container: SIGTERM, status 0
        cluster.crictl("stop", "--timeout", "30", cid, timeout=90)
        pod = cluster.wait_pod(name, k.phase("Succeeded", "Failed"), timeout=60)
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (pod["status"]["phase"], term["exitCode"]) == ("Succeeded", 0), (term, cluster.kubectl(
            "logs", name, check=False).stdout)
        assert f"{ex.name}: stopped" in cluster.kubectl("logs", name).stdout
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "90s", check=False)
    leftovers.wait_none(pod, ids, "rune")


def test_tampered_runtime_file_fails_with_runes_sentence(cluster: k.Cluster, k8s_example: K8sExample) -> None:
    ex = k8s_example
    name = pod_name("tampered")
    cluster.apply(k.pod(name, [], runtime_class="rune", image=ex.tampered_ref, env={"PORT": str(PORTS[ex.name])},
                        restartPolicy="Never"))
    del_cmd = ("delete", "pod", name, "--wait", "--timeout", "60s")
    try:
        pod = cluster.wait_pod(name, lambda p: ex.tamper_path in _messages(p), timeout=120)
    except BaseException:
        cluster.kubectl(*del_cmd, check=False)
        raise
    msg = _messages(pod)
    try:
        assert f"the trusted file {ex.tamper_path} changed since signing" in msg or (
            f"the file {ex.tamper_path}" in msg and "does not match its signature" in msg), msg
        assert "OCI runtime create failed" in msg, msg
        assert pod["status"]["phase"] != "Running" and "listening" not in cluster.kubectl(
            "logs", name, check=False).stdout
    finally:
        cluster.kubectl(*del_cmd, check=False)


@pytest.fixture
def broker(cluster: k.Cluster, launchers) -> Iterator[Verdictd]:  # noqa: ANN001, F811
    """verdictd (tests/kbs) trusting the sim platform of the node's shim ([enclave_runtime] sim_dir), reached by the
    enclave's init-runelet on its attested-TLS unix socket."""
    from inclavare.tee.sim.platform import load_platform

    sim_dir = cluster.base / "shim" / "sim"  # the shim's configuration (tests/k8s/conftest.py)
    load_platform(sim_dir)
    base = cluster.base / pod_name("vd")
    base.mkdir()
    vd = Verdictd(base, [str(sim_dir / "root_ca.pem")]).start()
    yield vd
    vd.stop()


# Java's token is proven through Docker and containerd (tests/e2e/test_language_secrets.py); here the two smaller
# images keep the cluster tests' time down (the Java pod costs about 10 s more per start)
@pytest.mark.parametrize("k8s_example", ["python-web", "go-web"], indirect=True)
def test_example_pod_proves_the_token_verdictd_released(cluster: k.Cluster, k8s_example: K8sExample,
                                                        broker: Verdictd) -> None:
    """The token is released only to an enclave signed with the shim's key (policy by mr_signer) and the service
    proves it (an HMAC of a fresh challenge); a policy naming another signer gives nothing: the pod's container
    is not created and its status carries verdictd's rule."""
    ex, vd = k8s_example, broker
    token = secrets.token_hex(24).encode()
    mr_signer = _mrsigner_of(cluster.base / "shim" / "owner.pem")
    allow_sim(vd, "shop", mr_signer=[mr_signer])
    assert vd.verdict("set-secret", RESOURCE, "--value", token.decode(), "--policy", "shop").returncode == 0
    name = pod_name("secret")
    cluster.apply(_web_pod(name, ex, secret_env(vd)))
    challenge = secrets.token_hex(16)
    try:
        cluster.wait_pod(name, k.running, timeout=300)
        (status, body), (_, index) = fetch(cluster, PORTS[ex.name], [f"/proof?challenge={challenge}", "/"])
        want = hmac.new(token, challenge.encode(), hashlib.sha256).hexdigest()
        assert (status, json.loads(body)) == (200, {"hmac_sha256": want}), body
        assert token not in index
        release = [a for a in vd.audit() if a["event"] == "release"]
        assert len(release) == 1 and release[0]["claims"]["mr_signer"] == mr_signer, release
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "90s", check=False)

    allow_sim(vd, "shop", mr_signer=["00" * 32])
    name = pod_name("secret")
    cluster.apply(_web_pod(name, ex, secret_env(vd)))
    try:
        pod = cluster.wait_pod(name, lambda p: "refused by rule 'mr_signer'" in _messages(p), timeout=120)
        assert pod["status"]["phase"] != "Running", pod["status"]
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
    assert [a for a in vd.audit() if a["event"] == "refuse"], vd.audit()
