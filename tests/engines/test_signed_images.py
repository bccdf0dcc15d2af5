"""One image signed once with `sgx-tools sign-image`, loaded as users load images (`docker load`, `podman load`,
`ctr images import`), and run as a sim enclave through Docker, Podman, ctr and CRI: with two hostnames, with and
without a terminal, with an extra allowed variable, an argument override, a volume and a tmpfs; each engine's
environment order and injected files (/.dockerenv, /etc/hostname, /etc/hosts, /etc/resolv.conf) are irrelevant.
A tampered copy, an unlisted entry point and an overridden measured default are refused through each engine with
rune's sentence. The daemons are conftest.py's; rune runs with the host's sim platform (/var/lib/inclavare/sim), as
under an engine it would.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines.conftest import SIGNED, TAMPERED, Podman, Signed, cgroups_under, run_in_pty

PODMAN_CGROUP = "/" + Podman.parent

pytestmark = pytest.mark.engines

PROBE = ("echo host=$(cat /proc/sys/kernel/hostname) greeting=$GREETING path=$PATH; "
         "cat /data/in; echo written > /data/out; echo t > /scratch/t && cat /scratch/t; "
         "test -t 0 && echo tty; echo x > /etc/x 2>/dev/null || echo root-read-only; env | sort | tr '\\n' ' '")


class Run:
    """`run --rm` of a signed image through one engine with rune, in engine-neutral words."""

    def __init__(self, engine: str, rune_bin: str, dockerd: d.Dockerd, podman: d.Podman, containerd: d.Containerd,
                 base: Path) -> None:
        self.engine, self.rune, self.dockerd, self.podman, self.containerd = engine, rune_bin, dockerd, podman, containerd
        self.base = base

    def __call__(self, args: list[str], *, image: str = SIGNED, hostname: str = "", tty: bool = False,
                 env: dict[str, str] | None = None, volume: Path | None = None, tmpfs: str = "",
                 memory: str = "", pids: int = 0) -> subprocess.CompletedProcess:
        env = env or {}
        if self.engine == "containerd":
            root = self.containerd.base / "runc-root-rune"
            f = ["--runc-binary", self.rune, "--runc-root", str(root)]
            for k, v in env.items():
                f += ["--env", f"{k}={v}"]
            if volume:
                f += ["--mount", f"type=bind,src={volume},dst=/data,options=rbind:rw"]
            if tmpfs:
                f += ["--mount", f"type=tmpfs,src=tmpfs,dst={tmpfs},options=nosuid:nodev"]
            if memory:
                f += ["--memory-limit", str(_bytes(memory))]
            cid = f"t{uuid.uuid4().hex[:12]}"
            if tty:
                return run_in_pty(["ctr", "-a", self.containerd.sock, "-n", self.containerd.namespace, "run", "--rm",
                                   "-t", *f, image, cid, *args])
            return self.containerd.ctr("run", "--rm", *f, image, cid, *args, check=False)
        f = ["--rm", "--network", "none"]
        if hostname:
            f += ["--hostname", hostname]
        for k, v in env.items():
            f += ["-e", f"{k}={v}"]
        if volume:
            f += ["-v", f"{volume}:/data"]
        if tmpfs:
            f += ["--tmpfs", tmpfs]
        if memory:
            f += ["--memory", memory]
        if pids:
            f += ["--pids-limit", str(pids)]
        if self.engine == "docker":
            cmd = ["docker", "-H", f"unix://{self.dockerd.sock}", "run", *f, "--runtime", "rune", "--cgroup-parent",
                   "/rune-test-docker"]
            penv = dict(__import__("os").environ, DOCKER_CONFIG=str(self.dockerd.base / "client"))
        else:
            b = self.podman.base
            cmd = ["podman", "--root", f"{b}/root", "--runroot", f"{b}/runroot", "--tmpdir", f"{b}/tmp",
                   "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", self.rune, "run", *f,
                   *d.PODMAN_ULIMITS, "--cgroup-parent", PODMAN_CGROUP]
            penv = self.podman.env
        if tty:
            return run_in_pty([*cmd, "-t", image, *args], env=penv)
        return d.run([*cmd, image, *args], check=False, env=penv)


def _bytes(size: str) -> int:
    return int(size[:-1]) << {"k": 10, "m": 20, "g": 30}[size[-1]]


ENGINES = ["docker", "podman", "containerd"]


@pytest.fixture(params=ENGINES)
def run(request: pytest.FixtureRequest, loaded: Signed, rune_bin: str, dockerd: d.Dockerd, podman: d.Podman,
        containerd: d.Containerd, tmp_path: Path) -> Iterator[Run]:
    r = Run(request.param, rune_bin, dockerd, podman, containerd, tmp_path)
    parents = ["rune-test-docker", PODMAN_CGROUP.strip("/"), containerd.namespace]
    before = cgroups_under(parents)
    yield r
    assert not cgroups_under(parents) - before or _settle(parents, before)


def _settle(parents: list[str], before: set[str]) -> bool:
    import time

    deadline = time.monotonic() + 15
    while cgroups_under(parents) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    left = cgroups_under(parents) - before
    assert not left, f"cgroups left behind: {left}"
    return True


def _volume(tmp_path: Path) -> Path:
    v = tmp_path / "vol"
    v.mkdir()
    (v / "in").write_text("from-the-volume\n")
    return v


def test_signed_image_runs_with_any_hostname_tty_env_args_volume_and_tmpfs(run: Run, tmp_path: Path) -> None:
    v = _volume(tmp_path)
    for i, hostname in enumerate(["enclave-a", "other-host-b"]):
        p = run(["sh", "-c", PROBE], hostname=hostname if run.engine != "containerd" else "", tty=bool(i),
                env={"GREETING": f"hello{i}"}, volume=v, tmpfs="/scratch")
        out = p.stdout.replace("\r", "")
        assert p.returncode == 0, (run.engine, p.returncode, p.stdout, p.stderr)
        lines = out.splitlines()
        assert lines[0].startswith("host=") and f"greeting=hello{i} path=/bin" in lines[0], out
        if run.engine != "containerd":  # ctr has no --hostname flag
            assert lines[0].startswith(f"host={hostname} "), out
        assert lines[1:3] == ["from-the-volume", "t"], out
        assert ("tty" in lines) == bool(i) and "root-read-only" in lines, out
        assert "ENCLAVE_" not in out, out  # rune's variables never reach the payload
        assert (v / "out").read_text() == "written\n"


def test_podman_ten_launches_all_accepted(loaded: Signed, rune_bin: str, dockerd, podman, containerd,
                                          tmp_path: Path) -> None:
    """Podman's environment order changes from run to run: irrelevant to the manifest's check."""
    r = Run("podman", rune_bin, dockerd, podman, containerd, tmp_path)
    results = [r(["sh", "-c", "echo ok $HOSTNAME"], hostname=f"h{i}") for i in range(10)]
    bad = [(p.returncode, p.stdout, p.stderr) for p in results if p.returncode != 0 or not p.stdout.startswith("ok")]
    assert not bad, bad


REFUSALS = {
    "tampered": ({"image": TAMPERED}, ["true"],
                 "does not match its signature: the file /etc/group|the (size|content) of the trusted file /etc/group "
                 "changed since signing"),
    "unlisted entry point": ({}, ["/bin/ls", "/"], "the program /bin/ls (process.args[0] '/bin/ls' in config.json) "
                                                   "is not an entry point of the signed enclave (entry points: "
                                                   "/bin/sh)"),
    "measured default overridden": ({"env": {"PATH": "/data"}}, ["true"],
                                    "the environment variable PATH (process.env in config.json) overrides the "
                                    "enclave's measured default PATH=/bin"),
    "variable not allowed": ({"env": {"LD_PRELOAD": "/data/x.so"}}, ["true"],
                             "the environment variable LD_PRELOAD (process.env in config.json) is not allowed"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_through_the_engine_with_runes_sentence(run: Run, case: str) -> None:
    import re

    opts, args, sentence = REFUSALS[case]
    p = run(["sh", "-c", "echo SHOULD-NOT-RUN"] if args == ["true"] and case != "tampered" else args, **opts)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "SHOULD-NOT-RUN" not in text, (p.returncode, text)
    pattern = sentence if case == "tampered" else re.escape(sentence)
    assert re.search(pattern, text), text


def test_exec_into_a_signed_enclave(loaded: Signed, dockerd: d.Dockerd) -> None:
    """docker exec: a measured program runs, with the measured environment; an unmeasured one is refused."""
    dk = dockerd.docker
    cid = dk("run", "-d", "--network", "none", "--runtime", "rune", "--tmpfs", "/scratch", SIGNED,
             "sh", "-c", "trap 'exit 7' TERM; cp /bin/busybox /scratch/bb; sleep 1000 & wait").stdout.strip()
    try:
        p = dk("exec", cid, "sh", "-c", "echo $PATH; exit 3", check=False)
        assert (p.returncode, p.stdout) == (3, "/bin\n"), (p.returncode, p.stdout, p.stderr)
        p = dk("exec", "-e", "LD_PRELOAD=/scratch/x.so", cid, "true", check=False)
        assert p.returncode != 0 and "LD_PRELOAD" in p.stdout + p.stderr, (p.returncode, p.stdout, p.stderr)
        p = dk("exec", cid, "/scratch/bb", "true", check=False)
        assert p.returncode != 0 and "is not a measured file of the signed enclave" in p.stdout + p.stderr, (
            p.returncode, p.stdout, p.stderr)
        dk("stop", cid)
        assert json.loads(dk("inspect", cid).stdout)[0]["State"]["ExitCode"] == 7
    finally:
        dk("rm", "-f", cid, check=False)


def test_signed_image_through_cri(loaded: Signed, containerd: d.Containerd, tmp_path: Path) -> None:
    """containerd's CRI plugin with the rune handler, as the kubelet calls it: two host-network pods (which share
    the node's hostname: CRI puts it in HOSTNAME), an allowed variable, an argument override and a volume; ExecSync
    through the agent; an unlisted entry point refused with rune's sentence."""
    from tests.engines.test_cri import CRI, EXITED, _grpc, s

    from inclavare.tee.sgx import protobuf as pb

    containerd.ctr("-n", "k8s.io", "images", "import", str(d.Image(Path(loaded.work).parent / "image").pause_archive))
    cri = CRI(_grpc(), containerd.sock)
    v = _volume(tmp_path)
    try:
        for host in ("pod-a", "pod-b"):
            config = CRI.sandbox_config(f"{host}-{uuid.uuid4().hex[:6]}")
            pod = pb.first(cri.call("RunPodSandbox", [(1, config), (2, s("rune"))]), 1).decode()
            try:
                script = (f"echo $HOSTNAME $GREETING > /data/{host}; cat /data/in >> /data/{host}; "
                          "trap 'exit 7' TERM; sleep 1000 & wait")
                ctr_config = [(1, [(1, s("enclave"))]), (2, [(1, s(SIGNED))]), (3, s("sh")), (4, s("-c")),
                              (4, s(script)), (6, [(1, s("GREETING")), (2, s(f"hi-{host}"))]),
                              (7, [(1, s("/data")), (2, s(str(v)))])]
                cid = pb.first(cri.call("CreateContainer", [(1, s(pod)), (2, ctr_config), (3, config)]), 1).decode()
                cri.call("StartContainer", [(1, s(cid))])
                out, err, code = cri.exec_sync(cid, ["sh", "-c", "echo $PATH; cat /data/" + host])
                assert code == 0 and out.decode().splitlines()[0] == "/bin", (out, err, code)
                assert out.decode().splitlines()[1].endswith(f"hi-{host}"), out
                assert (v / host).read_text().splitlines()[1] == "from-the-volume"
                cri.call("StopContainer", [(1, s(cid)), (2, 10)])
                assert cri.status(cid)[:2] == (EXITED, 7)
                cri.call("RemoveContainer", [(1, s(cid))])
                bad = [(1, [(1, s("bad"))]), (2, [(1, s(SIGNED))]), (3, s("/bin/ls"))]
                cid = pb.first(cri.call("CreateContainer", [(1, s(pod)), (2, bad), (3, config)]), 1).decode()
                with pytest.raises(cri.grpc.RpcError) as e:
                    cri.call("StartContainer", [(1, s(cid))])
                assert "the program /bin/ls (process.args[0] '/bin/ls' in config.json) is not an entry point" in (
                    e.value.details()), e.value.details()
                cri.call("RemoveContainer", [(1, s(cid))])
            finally:
                cri.call("StopPodSandbox", [(1, s(pod))])
                cri.call("RemovePodSandbox", [(1, s(pod))])
    finally:
        cri.close()


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_signed_enclave_payload_forks_three_children_under_pids_limit_7(loaded: Signed, rune_bin: str, dockerd,
                                                                         podman, containerd, tmp_path: Path,
                                                                         engine: str) -> None:
    """The runelet costs the container's pids limit three tasks (its loop and the two threads that serve
    /dev/attestation), so the payload has its three children at once under --pids-limit 7 (those three, sh and three
    sleeps)."""
    r = Run(engine, rune_bin, dockerd, podman, containerd, tmp_path)
    p = r(["sh", "-c", "sleep 1 & sleep 1 & sleep 1 & wait && echo three-children"], pids=7)
    assert (p.returncode, p.stdout.strip()) == (0, "three-children"), (p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize("memory", ["32m", "16m"])
def test_signed_enclave_starts_under_a_memory_limit(loaded: Signed, rune_bin: str, dockerd, podman, containerd,
                                                    tmp_path: Path, memory: str) -> None:
    r = Run("docker", rune_bin, dockerd, podman, containerd, tmp_path)
    p = r(["sh", "-c", "echo started; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"], memory=memory)
    assert p.returncode == 0 and p.stdout.startswith("started"), (p.returncode, p.stdout, p.stderr)


def test_a_new_container_of_the_image_reads_no_trusted_file_again(run: Run, tmp_path: Path) -> None:
    """Each container is an overlay mount of its own over the image's layers, with a device number of its own while
    it is mounted: the measurement cache keys an overlay's files by the layers' device (measure_cache.overlay_device)
    while its upper layer holds directories only, so a second container started while the first still runs finds
    every trusted file as the first left it and hashes none (the image's cache file is not written again); keyed by
    the overlay's st_dev, it would hash the whole image and add its files to the cache. Podman writes files into a
    container's upper layer before it starts (/etc/hosts, /etc/mtab, /run/.containerenv): its containers keep their
    own keys, and the second one hashes again."""
    import threading
    import time

    caches = Path("/var/lib/inclavare/sim/measurements")

    def state() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in caches.glob("*.json")}

    v = _volume(tmp_path)
    first: list[subprocess.CompletedProcess] = []
    # the first container runs until the test has started the second (at most 60 s)
    hold = "echo up > /data/up; i=0; while [ ! -e /data/done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
    t = threading.Thread(target=lambda: first.append(run(["sh", "-c", hold], volume=v)))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not (v / "up").exists() and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (v / "up").exists(), first
        before = state()
        assert before, "no measurement cache was written"
        p = run(["sh", "-c", "true"])
        assert p.returncode == 0, (run.engine, p.stdout, p.stderr)
        assert (v / "up").exists() and t.is_alive(), "the first container ended before the second started"
        if run.engine == "podman":
            assert state() != before, "podman: a container whose upper layer holds files shared the layers' keys"
        else:
            assert state() == before, f"{run.engine}: the second container's launch hashed trusted files again"
    finally:
        (v / "done").write_text("")
        t.join(60)
    assert first and first[0].returncode == 0, first
