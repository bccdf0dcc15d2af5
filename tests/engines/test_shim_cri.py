"""containerd-shim-rune-v2 under containerd's CRI plugin, as the kubelet drives it: a runtime handler `rune` of type
io.containerd.rune.v2 (tests/engines/shimd.py), a host-network pod sandbox with two containers, one plain and one
enclave (`ENCLAVE_TYPE=sim` from an ordinary image), served by one shim; ExecSync, logs, UpdateContainerResources,
ContainerStats, StopContainer, RemoveContainer, then the pod stopped and removed, and nothing left.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.test_cri import CRI, NODE, RUNNING, _grpc, s

from inclavare.tee.sgx import protobuf as pb

pytestmark = pytest.mark.engines

EXITED = 2
PARENT = "tr '\\0' ' ' < /proc/$PPID/cmdline; echo"  # the pod shares one pid namespace: PID 1 is the sandbox's
WAIT_FOR_TERM = "trap 'exit 7' TERM; sleep 1000 & wait"


@pytest.fixture(scope="module")
def cri(shim_containerd: shimd.ShimContainerd) -> Iterator[CRI]:
    c = CRI(_grpc(), shim_containerd.sock)
    yield c
    c.close()


def pod_config(name: str, log_dir: Path) -> list:
    meta = [(1, s(name)), (2, s(uuid.uuid4().hex)), (3, s("rune-test"))]
    security = [(1, [(1, NODE)])]  # host network: no CNI
    return [(1, meta), (3, s(str(log_dir))), (8, [(2, security)])]


def container_config(name: str, cmd: list[str], env: dict[str, str] | None = None) -> list:
    envs = [(6, [(1, s(k)), (2, s(v))]) for k, v in (env or {}).items()]
    return [(1, [(1, s(name))]), (2, [(1, s(d.IMAGE))]), *((3, s(a)) for a in cmd), *envs, (11, s(f"{name}.log"))]


def create(cri: CRI, pod: str, pod_cfg: list, cfg: list) -> str:
    r = cri.call("CreateContainer", [(1, s(pod)), (2, cfg), (3, pod_cfg)])
    return pb.first(r, 1).decode()


def log_lines(path: Path, stream: str) -> list[str]:
    """The text of a CRI log file's lines of one stream (`<time> <stream> <P|F> <text>`)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == stream:
            out.append(parts[3])
    return out


def wait_log(path: Path, stream: str, text: str, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = log_lines(path, stream) if path.exists() else []
        if any(text in ln for ln in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def memory_limit(shim: shimd.ShimContainerd, cid: str) -> int:
    state = json.loads((shim.rune_root / "k8s.io" / cid / "state.json").read_text())
    for line in Path(f"/proc/{state['pid']}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/{controllers}{path}/memory.limit_in_bytes").read_text())
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text())
    raise AssertionError(f"no memory cgroup for {cid}")


def test_pod_with_plain_and_enclave_containers(cri: CRI, shim_containerd: shimd.ShimContainerd,
                                               tmp_path: Path) -> None:
    shim = shim_containerd
    root = shim.rune_root / "k8s.io"
    shims_before = set(shim.shim_processes())
    pod_cfg = pod_config(f"pod-{uuid.uuid4().hex[:8]}", tmp_path)
    pod = pb.first(cri.call("RunPodSandbox", [(1, pod_cfg), (2, s("rune"))]), 1).decode()
    try:
        assert (root / pod).is_dir(), "the sandbox is not a rune container of the shim"
        plain = create(cri, pod, pod_cfg, container_config(
            "plain", ["sh", "-c", f"echo plain-out; echo plain-err >&2; {WAIT_FOR_TERM}"]))
        enclave = create(cri, pod, pod_cfg, container_config(
            "enclave", ["sh", "-c", f"echo enclave-out; {PARENT}; {WAIT_FOR_TERM}"], {"ENCLAVE_TYPE": "sim"}))
        for cid in (plain, enclave):
            cri.call("StartContainer", [(1, s(cid))])
            assert cri.status(cid)[0] == RUNNING
        # one shim serves the pod: the sandbox and both containers
        ours = [p for p in set(shim.shim_pids()) - shims_before]
        assert len(ours) == 1 and f"-id {pod}" in d._cmdline(ours[0]), [d._cmdline(p) for p in ours]
        # the enclave container is a signed sim enclave, its processes children of rune's init-runelet
        st = json.loads((root / enclave / "state.json").read_text())
        assert st["enclave"]["type"] == "sim", st.get("enclave")
        bundle = shim.base / "state" / "io.containerd.runtime.v2.task" / "k8s.io" / enclave
        assert "enclave.sim.mrenclave" in json.loads((bundle / "config.json").read_text())["annotations"]
        out, err, code = cri.exec_sync(plain, ["sh", "-c", "echo $((6*7)); echo e >&2; exit 3"])
        assert (out, err, code) == (b"42\n", b"e\n", 3)
        out, err, code = cri.exec_sync(enclave, ["sh", "-c", f"echo in-enclave; {PARENT}"])
        lines = out.decode().splitlines()
        assert code == 0 and lines[0] == "in-enclave" and lines[1].startswith("init-runelet"), (out, err, code)
        # logs, as the kubelet reads them
        assert wait_log(tmp_path / "plain.log", "stdout", "plain-out") == ["plain-out"]
        assert wait_log(tmp_path / "plain.log", "stderr", "plain-err") == ["plain-err"]
        enclave_out = wait_log(tmp_path / "enclave.log", "stdout", "init-runelet")
        assert enclave_out[0] == "enclave-out" and enclave_out[1].startswith("init-runelet"), enclave_out
        # update and stats through the shim
        cri.call("UpdateContainerResources", [(1, s(plain)), (2, [(4, 64 << 20)])])
        assert memory_limit(shim, plain) == 64 << 20
        stats = pb.decode(pb.first(cri.call("ContainerStats", [(1, s(plain))]), 1))
        memory = pb.decode(pb.first(stats, 3))
        assert pb.first(pb.decode(pb.first(memory, 2)), 1, 0) > 0, memory  # working_set_bytes
        for cid in (plain, enclave):
            cri.call("StopContainer", [(1, s(cid)), (2, 10)])
            state, exit_code, _ = cri.status(cid)
            assert (state, exit_code) == (EXITED, 7), (cid, state, exit_code)
            cri.call("RemoveContainer", [(1, s(cid))])
            assert not (root / cid).exists()
    finally:
        cri.call("StopPodSandbox", [(1, s(pod))])
        cri.call("RemovePodSandbox", [(1, s(pod))])
    deadline = time.monotonic() + 15
    while (set(shim.shim_processes()) - shims_before or any(root.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(shim.shim_processes()) - shims_before, "the pod's shim (or its fork server) outlived the pod"
    assert not sorted(p.name for p in root.iterdir()), "rune state left behind"
    assert not [m for m in d.mounts_under(shim.base / "state") if pod in m or "/rootfs" in m]


def test_a_pods_fork_server_loads_the_enclave_runtime_once_an_enclave_container_comes(
        cri: CRI, shim_containerd: shimd.ShimContainerd, tmp_path: Path) -> None:
    """A pod's shim starts for its sandbox (plain): its first fork server has no enclave runtime. Once the pod has an
    enclave container, the servers the shim starts from then on load it (forkserver.PRELOAD_ENCLAVE), so the pod's
    later commands and containers find a warm runelet; here the first server is killed after the enclave
    container's create, and the one an ExecSync starts has hashlib's libcrypto mapped."""
    import os
    import signal

    from inclavare.shim import forkserver

    shim = shim_containerd
    shims_before = set(shim.shim_pids())
    pod_cfg = pod_config(f"pod-{uuid.uuid4().hex[:8]}", tmp_path)
    pod = pb.first(cri.call("RunPodSandbox", [(1, pod_cfg), (2, s("rune"))]), 1).decode()
    try:
        ours = list(set(shim.shim_pids()) - shims_before)
        assert len(ours) == 1, ours

        def servers() -> list[int]:
            return [p for p in shim.shim_processes() if d.comm(p) == forkserver.COMM and f"PPid:\t{ours[0]}\n" in
                    open(f"/proc/{p}/status").read()]

        def maps(pid: int) -> str:
            with open(f"/proc/{pid}/maps") as f:
                return f.read()

        for pid in servers():
            assert "_hashlib" not in maps(pid)  # the sandbox's: plain
        enclave = create(cri, pod, pod_cfg, container_config("enclave", ["sh", "-c", WAIT_FOR_TERM],
                                                             {"ENCLAVE_TYPE": "sim"}))
        cri.call("StartContainer", [(1, s(enclave))])
        for pid in servers():
            os.kill(pid, signal.SIGKILL)  # a fault, or IDLE seconds: the next command starts another
        deadline = time.monotonic() + 10
        while servers() and time.monotonic() < deadline:
            time.sleep(0.05)
        out, err, code = cri.exec_sync(enclave, ["sh", "-c", "echo in-enclave"])
        assert (out, code) == (b"in-enclave\n", 0), err
        again = servers()
        assert len(again) == 1, again
        deadline = time.monotonic() + 5  # imported between requests, after the one that started it
        while "_hashlib" not in maps(again[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "_hashlib" in maps(again[0]) and "libcrypto" in maps(again[0])
        cri.call("StopContainer", [(1, s(enclave)), (2, 10)])
        cri.call("RemoveContainer", [(1, s(enclave))])
    finally:
        cri.call("StopPodSandbox", [(1, s(pod))])
        cri.call("RemovePodSandbox", [(1, s(pod))])
