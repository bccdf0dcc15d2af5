"""rune-device-plugin without a kubelet: its DevicePlugin service over a real gRPC unix socket, driven the way the
kubelet drives it (tests/k8s/test_device_plugin.py does it with the real kubelet).

There is no SGX here: the SGX cases use stand-in device nodes (character devices with /dev/null's numbers under a
private root) and a stand-in sysfs EPC size, and say so in their names.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from inclavare.k8s.deviceplugin import api_pb2 as api  # noqa: E402
from inclavare.k8s.deviceplugin import grpcapi, sgx, sim  # noqa: E402
from inclavare.k8s.deviceplugin.server import Manager, PluginServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def stand_in_sgx(root: Path, epc_mib: int = 64, legacy_symlink: bool = True) -> None:
    """Character devices named like the SGX driver's (numbers of /dev/null), and the EPC size in a sysfs tree."""
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    dev = root / "dev"
    (dev / "sgx").mkdir(parents=True, exist_ok=True)
    for name in ("sgx_enclave", "sgx_provision"):
        os.mknod(dev / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    if legacy_symlink:
        (dev / "sgx" / "enclave").symlink_to("../sgx_enclave")
        (dev / "sgx" / "provision").symlink_to("../sgx_provision")
    node = root / "sys/devices/system/node/node0/x86"
    node.mkdir(parents=True, exist_ok=True)
    (node / "sgx_total_bytes").write_text(f"{epc_mib << 20}\n")


@pytest.fixture
def served(tmp_path: Path) -> Iterator:
    """serve(resource) -> (PluginServer, DevicePluginClient) on a socket in tmp_path; stopped afterwards."""
    made = []

    def serve(resource):
        s = PluginServer(resource, str(tmp_path))
        s.start()
        c = grpcapi.DevicePluginClient(s.path)
        made.append((s, c))
        return s, c

    yield serve
    for s, c in made:
        c.close()
        s.stop()


def test_generated_api_matches_the_kubelets_proto() -> None:
    """api_pb2.py is what tools/deviceplugin_api.py generates from k8s.io/kubelet's api.proto (Go module proxy)."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("go"):
        pytest.skip("go fetches k8s.io/kubelet's api.proto")
    pytest.importorskip("grpc_tools")
    p = subprocess.run([sys.executable, "tools/deviceplugin_api.py", "--check"], cwd=REPO, capture_output=True,
                       text=True)
    if "is installed" in p.stdout + p.stderr:
        pytest.skip((p.stdout + p.stderr).strip())
    assert p.returncode == 0, p.stdout + p.stderr


def test_message_field_numbers() -> None:
    """The wire numbers the kubelet uses (../shared/reference/containerd-shim.md section 7)."""
    fields = {m: {f.name: f.number for f in getattr(api, m).DESCRIPTOR.fields}
              for m in ("RegisterRequest", "Device", "ContainerAllocateResponse", "DeviceSpec", "Mount")}
    assert fields["RegisterRequest"] == {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4}
    assert fields["Device"] == {"ID": 1, "health": 2, "topology": 3}
    assert fields["ContainerAllocateResponse"] == {"envs": 1, "mounts": 2, "devices": 3, "annotations": 4,
                                                   "cdi_devices": 5}
    assert fields["DeviceSpec"] == {"container_path": 1, "host_path": 2, "permissions": 3}
    assert fields["Mount"] == {"container_path": 1, "host_path": 2, "read_only": 3}


def test_sim_options_list_allocate(served) -> None:
    _, c = served(sim.SimEnclave(limit=3))
    opts = c.GetDevicePluginOptions(api.Empty(), timeout=5)
    assert (opts.pre_start_required, opts.get_preferred_allocation_available) == (False, True)
    stream = c.ListAndWatch(api.Empty(), timeout=5)
    first = next(stream)
    stream.cancel()
    assert [(d.ID, d.health) for d in first.devices] == [(f"sim-enclave-{i}", "Healthy") for i in range(3)]
    r = c.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["sim-enclave-1"])]),
                   timeout=5)
    assert len(r.container_responses) == 1 and dict(r.container_responses[0].envs) == {"ENCLAVE_TYPE": "sim"}
    assert c.PreStartContainer(api.PreStartContainerRequest(devices_ids=["sim-enclave-1"]), timeout=5) is not None


def test_allocate_of_an_unknown_device_is_refused(served) -> None:
    _, c = served(sim.SimEnclave(limit=2))
    with pytest.raises(grpc.RpcError) as e:
        c.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["sim-enclave-7"])]),
                   timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "inclavare-containers.io/sim-enclave: unknown device ID 'sim-enclave-7' (this node has 2)"


def test_preferred_allocation_keeps_must_include_then_lowest(served) -> None:
    _, c = served(sim.SimEnclave(limit=12))
    req = api.ContainerPreferredAllocationRequest(
        available_deviceIDs=["sim-enclave-11", "sim-enclave-2", "sim-enclave-10", "sim-enclave-3"],
        must_include_deviceIDs=["sim-enclave-10"], allocation_size=3)
    r = c.GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[req]), timeout=5)
    assert list(r.container_responses[0].deviceIDs) == ["sim-enclave-10", "sim-enclave-2", "sim-enclave-3"]


def test_sgx_allocation_on_stand_in_device_nodes(served, tmp_path: Path) -> None:
    root = tmp_path / "host"
    stand_in_sgx(root)
    aesmd = tmp_path / "aesmd"
    aesmd.mkdir()
    assert sgx.is_sgx_node(str(root)) and sgx.epc_bytes(str(root)) == 64 << 20
    _, c = served(sgx.SgxEnclave(str(root), str(aesmd), limit=4))
    r = c.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["sgx-enclave-0"])]),
                   timeout=5).container_responses[0]
    real = str(root / "dev/sgx_enclave")
    assert [(d.host_path, d.container_path, d.permissions) for d in r.devices] == [
        (real, "/dev/sgx_enclave", "rw"), (real, "/dev/sgx/enclave", "rw")]  # the symlink is given as its target
    assert [(m.host_path, m.container_path, m.read_only) for m in r.mounts] == [(str(aesmd), "/var/run/aesmd", True)]
    assert dict(r.envs) == {"SGX_AESM_ADDR": "1"}
    _, p = served(sgx.SgxProvision(str(root), str(aesmd), limit=2))
    r = p.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["sgx-provision-1"])]),
                   timeout=5).container_responses[0]
    assert [d.container_path for d in r.devices] == ["/dev/sgx_provision", "/dev/sgx/provision"] and not r.mounts
    epc = sgx.EpcMiB(str(root), str(aesmd))
    assert epc.device_ids() == [str(i) for i in range(64)]


def test_vanished_device_nodes_turn_unhealthy_on_the_stream(served, tmp_path: Path) -> None:
    root = tmp_path / "host"
    stand_in_sgx(root, legacy_symlink=False)
    s, c = served(sgx.SgxEnclave(str(root), str(tmp_path / "no-aesmd"), limit=2))
    stream = c.ListAndWatch(api.Empty(), timeout=20)
    seen: list[list[str]] = []
    got = threading.Event()

    def read() -> None:
        for resp in stream:
            seen.append([d.health for d in resp.devices])
            if len(seen) == 3:
                got.set()
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    _wait(lambda: len(seen) == 1)  # the kubelet's first list
    (root / "dev/sgx_enclave").unlink()
    assert s.refresh()
    with pytest.raises(grpc.RpcError) as e:  # Allocate of a device that is gone
        c.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["sgx-enclave-0"])]),
                   timeout=5)
    assert "gone from the node" in e.value.details()
    os.mknod(root / "dev/sgx_enclave", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert s.refresh() and not s.refresh()  # a second look without a change sends nothing
    assert got.wait(10), seen
    stream.cancel()
    assert seen == [["Healthy"] * 2, ["Unhealthy"] * 2, ["Healthy"] * 2]


class StandInKubelet:
    """A Registration server on kubelet.sock that records what registers (a stand-in for the kubelet's)."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[api.RegisterRequest] = []
        self.path = directory / grpcapi.KUBELET_SOCKET
        self.server = None

    def start(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        register = grpc.unary_unary_rpc_method_handler(self.register, request_deserializer=api.RegisterRequest.FromString,
                                                       response_serializer=api.Empty.SerializeToString)
        handler = grpc.method_handlers_generic_handler(grpcapi.REGISTRATION, {"Register": register})
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix://{self.path}")
        self.server.start()

    def register(self, request: api.RegisterRequest, context) -> api.Empty:
        self.requests.append(request)
        return api.Empty()

    def restart(self) -> None:
        """What a restarting kubelet does to the directory: every socket removed, kubelet.sock made anew."""
        self.server.stop(0).wait()
        for p in self.path.parent.iterdir():
            if not p.is_dir():
                p.unlink()
        self.start()


def test_manager_registers_and_registers_again_after_a_stand_in_kubelet_restart(tmp_path: Path) -> None:
    kubelet = StandInKubelet(tmp_path)
    kubelet.start()
    m = Manager([sim.SimEnclave(limit=2)], str(tmp_path), interval=0.05)
    t = threading.Thread(target=m.run, daemon=True)
    t.start()
    try:
        _wait(lambda: len(kubelet.requests) == 1)
        r = kubelet.requests[0]
        assert (r.version, r.endpoint, r.resource_name) == ("v1beta1", "inclavare-containers.io-sim-enclave.sock",
                                                            "inclavare-containers.io/sim-enclave")
        assert r.options.get_preferred_allocation_available
        kubelet.restart()
        _wait(lambda: len(kubelet.requests) == 2)
        assert (tmp_path / r.endpoint).exists()  # serving again on a new socket
    finally:
        m.stop()
        t.join(10)
        kubelet.server.stop(0)
    assert not (tmp_path / r.endpoint).exists()  # its socket removed at exit


def _wait(check, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
