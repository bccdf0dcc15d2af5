"""deploy/kubernetes/: every manifest checked against the Kubernetes 1.34 object schemas (kubernetes-validate, strict:
an unknown field is an error), accepted by the real API server (server-side dry run: admission, RBAC objects, field
validation), consistent with what the node really offers (the RuntimeClass handler is the one `rune install
containerd` adds, the resource names are the device plugin's), and the RuntimeClass used as it is by a pod.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

from tests.k8s import cluster as k  # noqa: E402
from tests.k8s.conftest import pod_name  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))
KUBERNETES = "1.34.0"


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path}: one object per file"
    return docs[0]


def objects() -> dict[str, dict]:
    return {str(p.relative_to(DEPLOY)): load(p) for p in MANIFESTS}


def test_the_layout() -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects().values())
    assert kinds == ["ClusterRole/rune-device-plugin", "ClusterRoleBinding/rune-device-plugin",
                     "DaemonSet/rune-device-plugin", "DaemonSet/rune-node-installer", "Deployment/verdictd",
                     "Namespace/inclavare-system", "PersistentVolumeClaim/verdictd-state", "Pod/app-with-secret",
                     "Pod/hello-enclave", "Pod/hello-rune", "RuntimeClass/rune", "Secret/verdictd-config",
                     "Service/verdictd", "ServiceAccount/rune-device-plugin"]


@pytest.mark.parametrize("name", [str(p.relative_to(DEPLOY)) for p in MANIFESTS])
def test_schema(name: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    try:
        kv.validate(load(DEPLOY / name), KUBERNETES, strict=True)
    except kv.ValidationError as e:
        pytest.fail(f"{name}: {e.message} at {'.'.join(map(str, e.path))}")


def test_a_broken_manifest_is_caught() -> None:
    """The schema check can fail: a misspelt field and a wrong type in copies of real manifests."""
    kv = pytest.importorskip("kubernetes_validate")
    rc = load(DEPLOY / "runtimeclass.yaml")
    rc["handlr"] = rc.pop("handler")
    with pytest.raises(kv.ValidationError):
        kv.validate(rc, KUBERNETES, strict=True)
    ds = load(DEPLOY / "device-plugin-daemonset.yaml")
    ds["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = ["10m"]
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, KUBERNETES, strict=True)


def test_they_agree_with_each_other_and_the_node() -> None:
    from inclavare.k8s import containerd_config
    from inclavare.k8s.deviceplugin import sim

    o = objects()
    rc = o["runtimeclass.yaml"]
    assert rc["handler"] == containerd_config.Runtime().name  # what `rune install containerd` adds
    selector = rc["scheduling"]["nodeSelector"]
    for ds in ("node-installer-daemonset.yaml", "device-plugin-daemonset.yaml"):
        assert o[ds]["spec"]["template"]["spec"]["nodeSelector"] == selector, ds
    for name, pod in o.items():
        if pod["kind"] == "Pod":
            assert pod["spec"]["runtimeClassName"] == rc["metadata"]["name"], name
    for name in ("examples/pod-enclave-sim.yaml", "examples/pod-enclave-secret.yaml"):
        limits = o[name]["spec"]["containers"][0]["resources"]["limits"]
        assert sim.SimEnclave.name in limits, name
    plugin = o["device-plugin-daemonset.yaml"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in plugin["containers"][0]["volumeMounts"]}
    assert "/var/lib/kubelet/device-plugins" in mounts and plugin["serviceAccountName"] == "rune-device-plugin"
    secret = o["verdictd-config-secret.yaml"]["stringData"]["verdictd.toml"]
    import tomllib

    config = tomllib.loads(secret)
    deploy = o["verdictd-deployment.yaml"]["spec"]["template"]["spec"]
    ports = {p["containerPort"] for p in deploy["containers"][0]["ports"]}
    assert {int(config["kbs"]["listen"].rsplit(":", 1)[1]), int(config["attested_tls"]["listen"][0].rsplit(":", 1)[1])} == ports
    service = {p["targetPort"] for p in o["verdictd-service.yaml"]["spec"]["ports"]}
    assert service == {p["name"] for p in deploy["containers"][0]["ports"]}
    broker = {e["name"]: e["value"] for e in o["examples/pod-enclave-secret.yaml"]["spec"]["containers"][0]["env"]}
    assert broker["ENCLAVE_SECRETS_BROKER"] == "verdictd.inclavare-system.svc:1234"


@pytest.mark.engines
def test_the_api_server_accepts_them(cluster: k.Cluster) -> None:
    """Server-side dry run of everything in its namespace (made for real first), then the RuntimeClass for real."""
    o = objects()
    cluster.apply(o["namespace.yaml"])
    rest = [obj for name, obj in o.items() if name != "namespace.yaml"]
    p = cluster.kubectl("apply", "--dry-run=server", "-f", "-", check=False, input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": rest}))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("(server dry run)") == len(rest), p.stdout


@pytest.mark.engines
def test_a_pod_through_the_deployed_runtime_class(cluster: k.Cluster) -> None:
    """deploy/kubernetes/runtimeclass.yaml as it is, and examples/pod-plain.yaml with the local image (and the host
    network of this test node): the pod waits for a labelled node, then runs through rune."""
    rc = load(DEPLOY / "runtimeclass.yaml")
    rc["metadata"]["name"] = "rune-deployed"  # beside the session's `rune`, same handler
    cluster.apply(rc)
    pod = load(DEPLOY / "examples/pod-plain.yaml")
    name = pod_name("deployed")
    pod["metadata"]["name"] = name
    pod["spec"].update(runtimeClassName="rune-deployed", hostNetwork=True, dnsPolicy="Default")
    pod["spec"]["containers"][0].update(image=k.d.IMAGE, imagePullPolicy="Never")
    (label, value), = rc["scheduling"]["nodeSelector"].items()
    try:
        cluster.apply(pod)
        cluster.wait_pod(name, lambda p: any(c.get("reason") == "Unschedulable"
                                             for c in p.get("status", {}).get("conditions", [])))
        cluster.kubectl("label", "node", cluster.node, f"{label}={value}")
        cluster.wait_pod(name, k.running)
        assert cluster.kubectl("logs", name).stdout == "hello from rune\n"
        cid = cluster.get("pod", name)["status"]["containerStatuses"][0]["containerID"].split("//")[1]
        assert (cluster.runtime_roots["rune"] / cid / "state.json").exists()  # the shim's rune ran it
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
        cluster.kubectl("label", "node", cluster.node, f"{label}-", check=False)
        cluster.kubectl("delete", "runtimeclass", "rune-deployed", check=False)
