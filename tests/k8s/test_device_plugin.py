"""rune-device-plugin with the real kubelet: registered (the node's allocatable shows the resource), its Allocate
answer visible inside the container that asked, devices that vanish reported unhealthy (the kubelet stops counting
them), and the kubelet restarted while pods run (the plugin registers again, the running pod is untouched).

The sim resource is the real thing here. The SGX resources run on stand-in device nodes (character devices with
/dev/null's numbers, named like the SGX driver's, under a private root) with a stand-in sysfs EPC size, since this
machine has no SGX: the test names say so. The plugin runs as its launcher, bin/rune-device-plugin, as a node runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.k8s import cluster as k
from tests.k8s.conftest import pod_name
from tests.k8s.test_device_plugin_units import stand_in_sgx

pytestmark = pytest.mark.engines

SIM = "inclavare-containers.io/sim-enclave"
ENCLAVE, PROVISION, EPC_MIB, EPC = ("sgx.intel.com/enclave", "sgx.intel.com/provision",
                                    "alibabacloud.com/sgx_epc_MiB", "sgx.intel.com/epc")
REPO = Path(__file__).resolve().parents[2]


class Plugin:
    """bin/rune-device-plugin started in the cluster's network namespace, stopped by its PID."""

    def __init__(self, c: k.Cluster, args: list[str]) -> None:
        self.c = c
        self.log = c.base / f"device-plugin-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*c.wrap, str(REPO / "bin" / "rune-device-plugin"), "--interval", "0.2", *args],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

    def registrations(self, resource: str) -> int:
        return self.log.read_text().count(f"registered {resource} with the kubelet")

    def stop(self) -> None:
        d.stop_pid(self.proc.pid)


@pytest.fixture
def plugin(cluster: k.Cluster) -> Iterator:
    started: list[Plugin] = []

    def start(*args: str) -> Plugin:
        p = Plugin(cluster, list(args))
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
        assert "Traceback" not in p.log.read_text(), p.log.read_text()


def allocatable(c: k.Cluster, resource: str) -> str:
    return c.node_object()["status"].get("allocatable", {}).get(resource, "")


def wait_allocatable(c: k.Cluster, resource: str, value: str, timeout: float = 60) -> None:
    d.wait_for(lambda: allocatable(c, resource) == value, timeout, f"{resource}={value} on node {c.node}")


def limits(**r: str) -> dict:
    names = {"sim": SIM, "enclave": ENCLAVE, "provision": PROVISION, "epc_mib": EPC_MIB, "epc": EPC}
    return {"limits": {names[n]: v for n, v in r.items()}}


# $$$$: Kubernetes turns $$ into $ in a command (its variable expansion); the shell then sees $$
SHOW = "tr '\\0' ' ' < /proc/1/cmdline; echo; echo self=$$$$; env | sort; sleep 1000"


def test_sim_resource_allocated_into_the_container(cluster: k.Cluster, plugin, pal_libs: dict[int, str]) -> None:
    p = plugin()
    wait_allocatable(cluster, SIM, "110")
    assert p.registrations(SIM) == 1
    # through runc the variable Allocate gave is seen as it is
    name = pod_name("sim-runc")
    cluster.apply(k.pod(name, ["sh", "-c", SHOW], runtime_class="runc", resources=limits(sim="1")))
    cluster.wait_pod(name, k.running)
    assert "ENCLAVE_TYPE=sim\n" in cluster.kubectl("logs", name).stdout
    # through rune it makes the container a sim enclave: PID 1 is rune's init-runelet, the payload runs in the
    # enclave runtime and does not see the ENCLAVE_* variables. Through the shim, an ordinary image becomes a signed
    # sim enclave (the shim signs it at Create) run by the built-in sim runtime; through runc's shim with
    # BinaryName = rune, the reference PAL runs the payload.
    enclaves = {pod_name("sim-shim"): ("rune", {}), pod_name("sim-pal"): ("rune-runc", {"ENCLAVE_RUNTIME_PATH": pal_libs[2]})}
    for enclave, (handler, env) in enclaves.items():
        cluster.apply(k.pod(enclave, ["sh", "-c", SHOW], runtime_class=handler, resources=limits(sim="1"), env=env))
    for enclave in enclaves:
        cluster.wait_pod(enclave, k.running)
        pid1, me, env = cluster.kubectl("logs", enclave).stdout.split("\n", 2)
        # PID 1 is the init-runelet (named so by the sim runtime; rune's own command line under the PAL), the payload
        # another process
        assert pid1.startswith("init-runelet") or "/rune " in pid1, (enclave, pid1)
        assert me.startswith("self=") and me[5:].isdigit() and me != "self=1", (enclave, me)
        assert "ENCLAVE_" not in env, env
    assert allocatable(cluster, SIM) == "110"  # allocatable is capacity; the scheduler counts what pods requested
    for n in (name, *enclaves):
        cluster.kubectl("delete", "pod", n, "--wait", "--timeout", "60s")


def test_more_than_the_node_has_is_not_scheduled(cluster: k.Cluster, plugin) -> None:
    plugin("--sim-limit", "2")
    wait_allocatable(cluster, SIM, "2")
    name = pod_name("sim-too-many")
    cluster.apply(k.pod(name, ["sleep", "1000"], runtime_class="runc", resources=limits(sim="3")))
    pod = cluster.wait_pod(name, lambda p: any(c.get("reason") == "Unschedulable"
                                               for c in p.get("status", {}).get("conditions", [])))
    assert "Insufficient inclavare-containers.io/sim-enclave" in json.dumps(pod["status"]["conditions"])
    cluster.kubectl("delete", "pod", name, "--wait", "--timeout", "60s")


def test_kubelet_restart_while_pods_run(cluster: k.Cluster, plugin) -> None:
    p = plugin()
    wait_allocatable(cluster, SIM, "110")
    name = pod_name("survivor")  # a sim enclave pod through the shim
    cluster.apply(k.pod(name, ["sh", "-c", "echo up; sleep 1000"], runtime_class="rune", resources=limits(sim="1")))
    before = cluster.wait_pod(name, k.running)
    cid = before["status"]["containerStatuses"][0]["containerID"]

    cluster.stop_kubelet()
    cluster.start_kubelet()
    cluster.wait_node_ready()
    d.wait_for(lambda: p.registrations(SIM) >= 2, 60, "the plugin's second registration", p.log)
    wait_allocatable(cluster, SIM, "110")
    after = cluster.wait_pod(name, k.running)
    status = after["status"]["containerStatuses"][0]
    assert (status["containerID"], status["restartCount"]) == (cid, 0), status  # the same container, not restarted
    # the restarted kubelet serves the pod's log again once it has synced the pod
    d.wait_for(lambda: cluster.kubectl("logs", name, check=False).stdout == "up\n", 60, "the pod's log")
    # and the re-registered plugin allocates to new pods
    new = pod_name("after-restart")
    cluster.apply(k.pod(new, ["sh", "-c", SHOW], runtime_class="runc", resources=limits(sim="1")))
    cluster.wait_pod(new, k.running)
    assert "ENCLAVE_TYPE=sim\n" in cluster.kubectl("logs", new).stdout
    for n in (name, new):
        cluster.kubectl("delete", "pod", n, "--wait", "--timeout", "60s")


def test_sgx_resources_on_stand_in_device_nodes(cluster: k.Cluster, plugin, tmp_path: Path) -> None:
    root = tmp_path / "host"
    stand_in_sgx(root, epc_mib=64)
    aesmd = tmp_path / "aesmd"
    aesmd.mkdir()
    (aesmd / "aesm.socket").write_text("")  # stands in for aesmd's socket
    p = plugin("--resources", "sgx", "--root", str(root), "--aesmd-dir", str(aesmd), "--enclave-limit", "4",
               "--provision-limit", "2", "--node-name", cluster.node, "--kubeconfig", str(cluster.admin))
    for resource, value in ((ENCLAVE, "4"), (PROVISION, "2"), (EPC_MIB, "64"), (EPC, str(64 << 20))):
        wait_allocatable(cluster, resource, value)
    name = pod_name("sgx")
    show = ("for f in /dev/sgx_enclave /dev/sgx/enclave /dev/sgx_provision; do stat -c '%n %F %t:%T' $f; done; "
            "ls /var/run/aesmd; echo SGX_AESM_ADDR=$SGX_AESM_ADDR; sleep 1000")
    cluster.apply(k.pod(name, ["sh", "-c", show], runtime_class="runc",
                        resources=limits(enclave="1", provision="1", epc_mib="8", epc="1Mi")))
    cluster.wait_pod(name, k.running)
    assert cluster.kubectl("logs", name).stdout.splitlines() == [
        "/dev/sgx_enclave character special file 1:3", "/dev/sgx/enclave character special file 1:3",
        "/dev/sgx_provision character special file 1:3", "aesm.socket", "SGX_AESM_ADDR=1"]

    # the enclave device vanishes: the plugin reports it unhealthy and the kubelet stops counting it
    (root / "dev/sgx_enclave").unlink()
    wait_allocatable(cluster, ENCLAVE, "0")
    wait_allocatable(cluster, EPC_MIB, "0")
    assert allocatable(cluster, PROVISION) == "2"
    late = pod_name("sgx-late")
    cluster.apply(k.pod(late, ["sleep", "1000"], runtime_class="runc", resources=limits(enclave="1")))
    cluster.wait_pod(late, lambda p: any(c.get("reason") == "Unschedulable"
                                         for c in p.get("status", {}).get("conditions", [])))
    os.mknod(root / "dev/sgx_enclave", 0o20666, os.makedev(1, 3))  # back: healthy again, and the pod runs
    wait_allocatable(cluster, ENCLAVE, "4")
    cluster.wait_pod(late, k.running)
    assert "Unhealthy" in p.log.read_text()
    for n in (name, late):
        cluster.kubectl("delete", "pod", n, "--wait", "--timeout", "60s")
