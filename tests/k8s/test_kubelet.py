"""Pods through a real kubelet: kubectl -> kube-apiserver -> scheduler -> kubelet -> containerd 1.6 CRI -> the runc
shim -> runc, or rune as a drop-in (a runc-type handler whose options.BinaryName is rune). Each pod chooses its
runtime with a RuntimeClass, as on a cluster; logs and exec go through the API server to the kubelet and through
crictl to containerd; a deleted pod leaves nothing on the node.
"""

from __future__ import annotations

import json

import pytest
from tests.k8s import cluster as k
from tests.k8s.conftest import HANDLERS, Leftovers, pod_name

pytestmark = pytest.mark.engines

WAIT_FOR_TERM = "trap 'echo bye; exit 0' TERM; echo hello from $(cat /proc/1/comm); sleep 1000 & wait"


def handler_root(c: k.Cluster, handler: str):
    return c.runtime_roots[handler]


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_logs_exec_delete(cluster: k.Cluster, leftovers: Leftovers, handler: str) -> None:
    name = pod_name(handler)
    cluster.apply(k.pod(name, ["sh", "-c", WAIT_FOR_TERM], runtime_class=handler))
    pod = cluster.wait_pod(name, k.running)
    ids = leftovers.ids(pod)
    assert pod["spec"]["nodeName"] == cluster.node  # placed by the scheduler
    # the runtime that ran it keeps the sandbox's and the container's state under the handler's own root
    assert all((handler_root(cluster, handler) / i / "state.json").exists() for i in ids), ids

    logs = cluster.kubectl("logs", name).stdout
    assert logs.startswith("hello from sh"), logs
    p = cluster.kubectl("exec", name, "--", "sh", "-c", "echo $((6*7)); echo err >&2; exit 3", check=False)
    assert (p.stdout, p.returncode) == ("42\n", 3) and "err" in p.stderr, p

    cid = ids[-1]
    assert cluster.crictl("exec", cid, "cat", "/proc/1/comm").stdout == "sh\n"
    assert "hello from sh" in cluster.crictl("logs", cid).stdout
    info = json.loads(cluster.crictl("inspect", cid).stdout)["info"]
    if handler == "rune":
        assert info["runtimeType"] == "io.containerd.rune.v2", info["runtimeType"]
    else:
        assert info["runtimeType"] == "io.containerd.runc.v2"
        assert info["runtimeOptions"]["binary_name"].endswith(handler.split("-")[0]), info["runtimeOptions"]

    cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s")
    leftovers.wait_none(pod, ids, handler)


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_exit_status_and_restart(cluster: k.Cluster, leftovers: Leftovers, handler: str) -> None:
    """A pod that exits: Succeeded with restartPolicy Never, its exit code and output kept."""
    name = pod_name(handler)
    cluster.apply(k.pod(name, ["sh", "-c", "echo done; exit 0"], runtime_class=handler, restartPolicy="Never"))
    pod = cluster.wait_pod(name, k.phase("Succeeded", "Failed"))
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], term["exitCode"]) == ("Succeeded", 0), term
    assert cluster.kubectl("logs", name).stdout == "done\n"
    cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s")

    name = pod_name(handler)
    cluster.apply(k.pod(name, ["sh", "-c", "exit 5"], runtime_class=handler, restartPolicy="Never"))
    pod = cluster.wait_pod(name, k.phase("Succeeded", "Failed"))
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 5
    cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s")


def _messages(pod: dict) -> str:
    out = []
    for s in pod.get("status", {}).get("containerStatuses", []):
        for st in (s.get("state", {}), s.get("lastState", {})):
            for v in st.values():
                out.append(v.get("message", ""))
    return "\n".join(out)


@pytest.mark.parametrize("handler", ["rune-runc", "rune"])
def test_bad_command_gives_runes_sentence(cluster: k.Cluster, handler: str) -> None:
    """A command that does not exist: the pod's status carries rune's own sentence, naming the field."""
    name = pod_name("bad")
    cluster.apply(k.pod(name, ["/nonexistent"], runtime_class=handler, restartPolicy="Never"))
    pod = cluster.wait_pod(name, lambda p: "process.args[0]" in _messages(p), timeout=60)
    msg = _messages(pod)
    assert '"/nonexistent"' in msg and "no such file or directory" in msg, msg
    cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s")


def test_runtime_class_node_selector(cluster: k.Cluster) -> None:
    """A RuntimeClass with scheduling.nodeSelector: its pods wait for a node with the label, then run there."""
    label = f"rune-test/{pod_name('sel')}"
    cluster.apply(k.runtime_class("rune-labelled", "rune", {label: "true"}))
    name = pod_name("sel")
    try:
        cluster.apply(k.pod(name, ["sleep", "1000"], runtime_class="rune-labelled"))
        pod = cluster.wait_pod(name, lambda p: any(c.get("reason") == "Unschedulable"
                                                   for c in p.get("status", {}).get("conditions", [])))
        assert pod["spec"]["nodeSelector"] == {label: "true"}  # merged in by the RuntimeClass admission
        cluster.kubectl("label", "node", cluster.node, f"{label}=true")
        pod = cluster.wait_pod(name, k.running)
        assert pod["spec"]["nodeName"] == cluster.node
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
        cluster.kubectl("label", "node", cluster.node, f"{label}-", check=False)
        cluster.kubectl("delete", "runtimeclass", "rune-labelled", check=False)


def test_unknown_handler_is_refused(cluster: k.Cluster) -> None:
    """A RuntimeClass whose handler the node's containerd does not know: the sandbox fails with containerd's word."""
    cluster.apply(k.runtime_class("no-such", "no-such-handler"))
    name = pod_name("nohandler")
    try:
        cluster.apply(k.pod(name, ["sleep", "1000"], runtime_class="no-such"))
        events = cluster.wait_event(name, 'no runtime for "no-such-handler" is configured')
        assert "FailedCreatePodSandBox" in events, events
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
        cluster.kubectl("delete", "runtimeclass", "no-such", check=False)


@pytest.mark.parametrize("handler", ["rune", "rune-runc"])
def test_signed_image_runs_and_a_tampered_one_is_refused(cluster: k.Cluster, signed_images: tuple[str, str, str],
                                                         handler: str) -> None:
    """An image signed once (sgx-tools sign-image) runs as a sim enclave pod; the same image with a signed file
    changed in a layer added after signing fails, with rune's sentence naming the file in the pod's status."""
    good, bad, _ = signed_images
    name = pod_name("signed")
    cluster.apply(k.pod(name, ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; sleep 1000"], runtime_class=handler,
                        image=good))
    try:
        cluster.wait_pod(name, k.running)
        assert cluster.kubectl("logs", name).stdout.startswith("init-runelet"), cluster.kubectl("logs", name).stdout
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)
    msg = refused(cluster, bad, handler, "/etc/group")
    assert "OCI runtime create failed" in msg, msg


def refused(cluster: k.Cluster, image: str, handler: str, text: str) -> str:
    """The status messages of a pod of image that cannot start, once one of them contains text."""
    name = pod_name("refused")
    cluster.apply(k.pod(name, ["sleep", "1000"], runtime_class=handler, image=image, restartPolicy="Never"))
    try:
        return _messages(cluster.wait_pod(name, lambda p: text in _messages(p), timeout=60))
    finally:
        cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", check=False)


def test_image_signed_without_the_kubelets_variables_is_refused(cluster: k.Cluster,
                                                                signed_images: tuple[str, str, str]) -> None:
    """The kubelet adds the kubernetes service's variables to every container: an image signed without
    --untrusted-env 'KUBERNETES_*' is refused, and the sentence says which variable and what to do."""
    msg = refused(cluster, signed_images[2], "rune", "is not allowed by the enclave manifest")
    assert "the environment variable KUBERNETES_" in msg and "--untrusted-env KUBERNETES_" in msg, msg
