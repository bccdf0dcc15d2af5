"""containerd's CRI plugin with a runtime handler whose options.BinaryName is rune (and one for runc), driven by a
minimal CRI client: grpcio for the transport, the CRI messages written field by field (the field numbers are in
../shared/reference/containerd-shim.md, section 6) with the small protobuf codec of inclavare.tee.sgx.protobuf.

A host-network pod (NamespaceMode NODE: no CNI needed), a container in it that is exec-ed into (ExecSync), stopped
with SIGTERM and removed, then the pod stopped and removed; and a container whose command does not exist.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d

from inclavare.tee.sgx import protobuf as pb

pytestmark = pytest.mark.engines

SERVICE = "/runtime.v1.RuntimeService/"
NODE = 2  # NamespaceMode
RUNNING, EXITED = 1, 2  # ContainerState
WAIT_FOR_TERM = "trap 'exit 7' TERM; sleep 1000 & wait"


def s(text: str) -> bytes:
    return text.encode()


class CRI:
    """The RuntimeService calls of a pod's life, as raw protobuf over gRPC."""

    def __init__(self, grpc, sock: str) -> None:
        self.grpc = grpc
        self.channel = grpc.insecure_channel(f"unix://{sock}")

    def call(self, method: str, fields: list, timeout: float = 60) -> dict[int, list[int | bytes]]:
        rpc = self.channel.unary_unary(SERVICE + method)  # no serializers: bytes in, bytes out
        return pb.decode(rpc(pb.encode(fields), timeout=timeout))

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def sandbox_config(name: str) -> list:
        meta = [(1, s(name)), (2, s(uuid.uuid4().hex)), (3, s("rune-test"))]
        security = [(1, [(1, NODE)])]  # namespace_options.network = NODE
        return [(1, meta), (8, [(2, security)])]

    def run_pod(self, name: str, handler: str) -> tuple[str, list]:
        config = self.sandbox_config(name)
        r = self.call("RunPodSandbox", [(1, config), (2, s(handler))])
        return pb.first(r, 1).decode(), config

    def create(self, pod: str, pod_config: list, name: str, cmd: list[str]) -> str:
        config = [(1, [(1, s(name))]), (2, [(1, s(d.IMAGE))]), *((3, s(a)) for a in cmd)]
        r = self.call("CreateContainer", [(1, s(pod)), (2, config), (3, pod_config)])
        return pb.first(r, 1).decode()

    def status(self, cid: str) -> tuple[int, int, str]:
        st = pb.decode(pb.first(self.call("ContainerStatus", [(1, s(cid))]), 1))
        return pb.first(st, 3, 0), pb.first(st, 7, 0), pb.first(st, 11, b"").decode()

    def exec_sync(self, cid: str, cmd: list[str]) -> tuple[bytes, bytes, int]:
        r = self.call("ExecSync", [(1, s(cid)), *((2, s(a)) for a in cmd), (3, 30)])
        return pb.first(r, 1, b""), pb.first(r, 2, b""), pb.first(r, 3, 0)


def _grpc():
    try:
        return importlib.import_module("grpc")
    except ImportError:
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "grpcio"], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"grpcio (the CRI client's transport) cannot be installed: {p.stderr.strip()[-300:]}")
        importlib.invalidate_caches()
        return importlib.import_module("grpc")


@pytest.fixture(scope="module")
def cri(containerd: d.Containerd, image: d.Image) -> Iterator[CRI]:
    containerd.ctr("-n", "k8s.io", "images", "import", str(image.pause_archive))
    c = CRI(_grpc(), containerd.sock)
    yield c
    c.close()


@pytest.fixture(params=["rune", "runc"])
def handler(request: pytest.FixtureRequest, containerd: d.Containerd) -> Iterator[tuple[str, Path]]:
    root = containerd.base / f"cri-{request.param}" / "k8s.io"  # the handler's options.Root, namespace k8s.io
    yield request.param, root
    left = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    assert not left, f"{request.param} state left behind: {left}"


def test_pod_with_exec_stop_remove(cri: CRI, handler: tuple[str, Path]) -> None:
    name, root = handler
    pod, pod_config = cri.run_pod(f"pod-{uuid.uuid4().hex[:8]}", name)
    try:
        assert (root / pod).is_dir(), f"the sandbox did not run through the {name} handler's binary"
        cid = cri.create(pod, pod_config, "c1", ["sh", "-c", WAIT_FOR_TERM])
        cri.call("StartContainer", [(1, s(cid))])
        assert cri.status(cid)[0] == RUNNING and (root / cid).is_dir()
        out, err, code = cri.exec_sync(cid, ["sh", "-c", "echo $((6*7)); echo e >&2; exit 3"])
        assert (out, err, code) == (b"42\n", b"e\n", 3)
        cri.call("StopContainer", [(1, s(cid)), (2, 10)])
        state, exit_code, _ = cri.status(cid)
        assert (state, exit_code) == (EXITED, 7)
        cri.call("RemoveContainer", [(1, s(cid))])
    finally:
        cri.call("StopPodSandbox", [(1, s(pod))])
        cri.call("RemovePodSandbox", [(1, s(pod))])


def test_bad_command(cri: CRI, handler: tuple[str, Path]) -> None:
    name, _ = handler
    pod, pod_config = cri.run_pod(f"pod-{uuid.uuid4().hex[:8]}", name)
    try:
        cid = cri.create(pod, pod_config, "bad", ["/nonexistent"])
        with pytest.raises(cri.grpc.RpcError) as e:
            cri.call("StartContainer", [(1, s(cid))])
        msg = e.value.details()
        assert '"/nonexistent"' in msg and "no such file or directory" in msg, msg
        if name == "rune":
            assert "process.args[0]" in msg, msg
        cri.call("RemoveContainer", [(1, s(cid))])
    finally:
        cri.call("StopPodSandbox", [(1, s(pod))])
        cri.call("RemovePodSandbox", [(1, s(pod))])
