"""The cluster fixtures: one real single-node Kubernetes cluster per session (tests/k8s/cluster.py), with the busybox
and pause images imported into containerd, RuntimeClasses `runc` and `rune`, and a per-test check that a deleted pod
leaves nothing on the node."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.conftest import (
    _interrupt,
    pal_libs,  # noqa: F401  (the reference PAL, a fixture)
)
from tests.k8s import cluster as k

pytestmark = pytest.mark.engines

# runc; rune as a drop-in under runc's shim (options.BinaryName); rune through containerd-shim-rune-v2
HANDLERS = ("runc", "rune-runc", "rune")


@pytest.fixture(scope="session")
def k8s_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("a kubelet needs root")
    reason = d.ensure_packages(("containerd", "skopeo", "umoci", "busybox-static", "runc", "iproute2", "util-linux"))
    if reason:
        pytest.skip(reason)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    return tmp_path_factory.mktemp("k8s")


@pytest.fixture(scope="session")
def tools() -> k.Tools:
    tools, why = k.ensure_tools()
    if tools is None:
        pytest.skip(why)
    return tools


@pytest.fixture(scope="session")
def k8s_image(k8s_base: Path) -> d.Image:
    return d.Image(k8s_base / "image").build()


@pytest.fixture(scope="session")
def cluster(k8s_base: Path, tools: k.Tools, k8s_image: d.Image, rune_bin: str) -> Iterator[k.Cluster]:
    shim_base = k8s_base / "shim"
    shim_base.mkdir()
    shimd.owner_key(shim_base / "owner.pem")
    config = shimd.write_config(shim_base / "shim.toml", shim_base)
    handlers = {"runc": {}, "rune-runc": k.runc_handler(k8s_base, "rune-runc", rune_bin),
                "rune": k.shim_handler(str(config))}
    c = k.Cluster(k8s_base, tools, handlers)
    c.runtime_roots = {"runc": c.containerd.base / "cri-runc" / k.NAMESPACE, "rune-runc": k8s_base / "cri-rune-runc" / k.NAMESPACE,
                       "rune": shim_base / "rune-root" / k.NAMESPACE}
    try:
        c.start()
        for archive in (k8s_image.oci_archive, k8s_image.pause_archive):
            c.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(archive))
        c.apply([k.runtime_class(h, h) for h in HANDLERS])
        yield c
    finally:
        c.stop()


def pod_name(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Leftovers:
    """What a pod may leave on the node: the runtime's state, mounts, cgroups, the kubelet's pod directory.

    ids(pod) is taken while the pod runs (its sandbox and container ids); gone(...) is checked after its deletion."""

    def __init__(self, c: k.Cluster) -> None:
        self.c = c

    def ids(self, pod: dict) -> list[str]:
        uid = pod["metadata"]["uid"]
        sandboxes = self.c.crictl("pods", "-q", "--label", f"io.kubernetes.pod.uid={uid}").stdout.split()
        containers = [s["containerID"].split("//", 1)[1] for s in pod["status"].get("containerStatuses", [])
                      if s.get("containerID")]
        return sandboxes + containers

    def of(self, uid: str, ids: list[str], handler: str) -> dict[str, list[str]]:
        root = self.c.runtime_roots[handler]
        state = [n for n in (os.listdir(root) if root.is_dir() else []) if n in ids]
        mounts = [m for m in d.mounts_under(self.c.base) if uid in m or any(i in m for i in ids)]
        cgroups = [str(p) for h in k.CGROUP.iterdir() if not h.is_symlink() and (h / self.c.cgroup_root).is_dir()
                   for p in (h / self.c.cgroup_root).rglob(f"pod{uid}")]
        shims = [str(pid) for i in ids for pid in d.pids_naming(i)]
        pod_dir = self.c.kubelet_root / "pods" / uid
        left = {"state": state, "mounts": mounts, "cgroups": cgroups, "processes": shims,
                "kubelet": [str(pod_dir)] if pod_dir.exists() else []}
        return {key: v for key, v in left.items() if v}

    def wait_none(self, pod: dict, ids: list[str], handler: str, timeout: float = 30) -> None:
        uid = pod["metadata"]["uid"]
        deadline = time.monotonic() + timeout
        left = self.of(uid, ids, handler)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.of(uid, ids, handler)
        assert not left, f"pod {pod['metadata']['name']} left behind: {left}"


@pytest.fixture
def leftovers(cluster: k.Cluster) -> Leftovers:
    return Leftovers(cluster)


SIGNED = "docker.io/library/rune-k8s-enclave:latest"
TAMPERED = "docker.io/library/rune-k8s-enclave-tampered:latest"
UNPREPARED = "docker.io/library/rune-k8s-enclave-no-kubernetes-env:latest"


@pytest.fixture(scope="session")
def signed_images(cluster: k.Cluster, k8s_image: d.Image, rune_bin: str) -> tuple[str, str, str]:
    """The busybox image signed once as a sim enclave image (sgx-tools sign-image), and a copy with one more layer
    that changes a signed file (/etc/group), imported for the kubelet; and the sentence an image signed without
    the kubelet's variables untrusted gets."""
    from inclavare.oci import image as oci_image

    work = cluster.base / "signed"
    work.mkdir()
    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    key = work / "owner.pem"
    d.run([sgx_tools, "gen-key", str(key)])
    signed = work / "signed-oci.tar"
    # the kubelet gives every container the kubernetes service's variables (KUBERNETES_SERVICE_HOST ...): a
    # Kubernetes image is signed with them untrusted, or its launch is refused naming the first of them
    d.run([sgx_tools, "sign-image", "--key", str(key), "--untrusted-env", "KUBERNETES_*",
           f"oci-archive:{k8s_image.oci_archive}", f"oci-archive:{signed}:{SIGNED}"])
    img, _ = oci_image.read(str(signed), work)
    oci_image.add_layer(img, oci_image.layer_of({"etc/group": (b"root:x:0:\nevil:x:0:\n", 0o644)}), work, "tamper")
    tampered = work / "tampered-oci.tar"
    oci_image.write(img, "oci-archive", str(tampered), TAMPERED)
    plain_signed = work / "plain-signed-oci.tar"
    d.run([sgx_tools, "sign-image", "--key", str(key), f"oci-archive:{k8s_image.oci_archive}",
           f"oci-archive:{plain_signed}:{UNPREPARED}"])
    for archive in (signed, tampered, plain_signed):
        cluster.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(archive))
    return SIGNED, TAMPERED, UNPREPARED
