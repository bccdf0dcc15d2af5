"""Container engines started privately for the engine tests and bench/engines.py.

Everything lives under one directory of our own: containerd's and dockerd's sockets, roots and state, podman's
--root/--runroot, and the busybox image built locally (no registry is reachable). The daemons are started here and
stopped here by their PID (with the shims and conmons that carry our socket or root in their command line); nothing
that was not started here is ever signalled.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from inclavare.oci.busybox import build_rootfs  # noqa: E402

PACKAGES = ("containerd", "docker.io", "podman", "skopeo", "umoci", "busybox-static", "runc")
IMAGE = "docker.io/library/rune-busybox:latest"
PAUSE_IMAGE = "docker.io/library/rune-pause:latest"
# podman asks for nofile/nproc 1048576 by default; without CAP_SYS_RESOURCE a hard limit cannot be raised
PODMAN_ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
RUNC = shutil.which("runc") or "/usr/sbin/runc"


def ensure_packages(packages: Iterable[str] = PACKAGES) -> str | None:
    """Install the Debian packages that are missing; None when all are there, else why not."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"the engine tests need root to install {' '.join(missing)}"
    if not shutil.which("apt-get"):
        return f"{' '.join(missing)} missing and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]  # with the recommends, as tested
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {(p.stderr or p.stdout).strip()[-400:]}"
    return None


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with its output captured through files (a detached container may keep a pipe open). The wait
    blocks in waitpid, with a timer to kill a command that outlives `timeout`: subprocess's own timed wait polls
    with sleeps of up to 50 ms, which added up to 50 ms to every command (and to bench/engines.py's timings)."""
    import tempfile
    import threading

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, stdin=subprocess.DEVNULL, **kw)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        if expired.is_set():
            raise subprocess.TimeoutExpired(cmd, timeout)
        p = subprocess.CompletedProcess(cmd, proc.returncode)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


# ---- processes and mounts of our own -------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_naming(marker: str) -> list[int]:
    """Processes whose command line contains marker (our private socket or directory)."""
    me = os.getpid()
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != me and marker in _cmdline(int(d))]


def stop_pid(pid: int, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after timeout; reap it if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z":
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def mounts_under(path: Path | str) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == prefix[:-1]:
                out.append(mp)
    return out


def unmount_under(path: Path | str) -> None:
    for mp in reversed(mounts_under(path)):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def wait_for(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tail}")
        time.sleep(0.05)


# ---- the image -------------------------------------------------------------------------------------------------


class Image:
    """The busybox-static rootfs as an OCI layout, plus archives for `ctr images import` and `docker load`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.rootfs = work / "rootfs"
        self.layout = work / "oci"
        self.oci_archive = work / "busybox-oci.tar"
        self.docker_archive = work / "busybox-docker.tar"
        self.pause_archive = work / "pause-oci.tar"

    def build(self) -> Image:
        self.work.mkdir(parents=True, exist_ok=True)
        build_rootfs(str(self.rootfs))
        (self.rootfs / "etc" / "hostname").write_text("busybox\n")
        for applet in ("unshare", "nsenter"):  # for the seccomp cases
            if not (self.rootfs / "bin" / applet).is_symlink():
                (self.rootfs / "bin" / applet).symlink_to("busybox")
        lay = str(self.layout)
        run(["umoci", "init", "--layout", lay])
        for tag, cmd in (("busybox", ["/bin/sh"]), ("pause", ["/bin/sleep", "1000000000"])):
            run(["umoci", "new", "--image", f"{lay}:{tag}"])
            run(["umoci", "insert", "--image", f"{lay}:{tag}", str(self.rootfs), "/"])
            run(["umoci", "config", "--image", f"{lay}:{tag}", *(x for a in cmd for x in ("--config.cmd", a)),
                 "--config.env", "PATH=/bin", "--config.workingdir", "/", "--architecture", "amd64", "--os", "linux"])
        run(["skopeo", "copy", "-q", f"oci:{lay}:busybox", f"oci-archive:{self.oci_archive}:{IMAGE}"])
        run(["skopeo", "copy", "-q", f"oci:{lay}:busybox", f"docker-archive:{self.docker_archive}:{IMAGE}"])
        run(["skopeo", "copy", "-q", f"oci:{lay}:pause", f"oci-archive:{self.pause_archive}:{PAUSE_IMAGE}"])
        return self


# ---- containerd ------------------------------------------------------------------------------------------------


class Containerd:
    """containerd with root, state, sockets and CRI runtimes private to `base`."""

    def __init__(self, base: Path, runtimes: dict[str, str] | None = None, shims: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base = base
        self.sock = str(base / "containerd.sock")
        self.log = base / "containerd.log"
        self.runtimes = runtimes or {}  # CRI runtime handler -> BinaryName
        self.shims = shims or {}  # CRI runtime handler of type io.containerd.rune.v2 -> its options.ConfigPath
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.namespace = "rune-test"
        self.wrap: list[str] = []  # a command that containerd runs under (nsenter into a network namespace)

    def config(self) -> str:
        b = self.base
        lines = [
            "version = 2",
            f'root = "{b}/root"',
            f'state = "{b}/state"',
            "[grpc]",
            f'  address = "{self.sock}"',
            "[ttrpc]",
            f'  address = "{self.sock}.ttrpc"',
            "[debug]",
            f'  address = "{b}/debug.sock"',
            '[plugins."io.containerd.grpc.v1.cri"]',
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            "  restrict_oom_score_adj = true",
            "  enable_selinux = false",
            '  [plugins."io.containerd.grpc.v1.cri".cni]',
            f'    bin_dir = "{b}/cni/bin"',
            f'    conf_dir = "{b}/cni/conf"',
            '  [plugins."io.containerd.grpc.v1.cri".containerd]',
            '    snapshotter = "overlayfs"',
            '    default_runtime_name = "runc"',
        ]
        for name, binary in {"runc": RUNC, **self.runtimes}.items():
            p = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]'
            lines += [f"    {p}", '      runtime_type = "io.containerd.runc.v2"',
                      f'      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]',
                      f'        BinaryName = "{binary}"',
                      f'        Root = "{b}/cri-{name}"']
        for name, config_path in self.shims.items():
            p = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]'
            lines += [f"    {p}", '      runtime_type = "io.containerd.rune.v2"',
                      '      pod_annotations = ["enclave.*"]', '      container_annotations = ["enclave.*"]',
                      f"      [{p[1:-1]}.options]", f'        ConfigPath = "{config_path}"']
        return "\n".join(lines) + "\n"

    def start(self) -> Containerd:
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "config.toml"
        conf.write_text(self.config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.wrap, "containerd", "--config", str(conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=self.env)
        atexit.register(self.stop)
        wait_for(lambda: self.ctr("version", check=False).returncode == 0 or self._died(), 30, "containerd", self.log)
        if self._died():
            raise RuntimeError(f"containerd exited: {self.log.read_text()[-2000:]}")
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["ctr", "-a", self.sock, "-n", self.namespace, *args], check=check, timeout=timeout)

    def restart(self) -> None:
        """Stop containerd alone (its shims and containers keep running) and start it again."""
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid)
        self.proc = None
        for pid in pids_naming(self.sock):  # shims of containers still there
            stop_pid(pid, timeout=5)
        unmount_under(self.base)


# ---- dockerd ---------------------------------------------------------------------------------------------------


class Dockerd:
    """dockerd on a private socket, data-root and exec-root, using our containerd; extra runtimes by name."""

    def __init__(self, base: Path, containerd: Containerd, runtimes: dict[str, str],
                 config: dict | None = None) -> None:
        self.base = base
        self.config = config or {}  # daemon.json
        self.sock = str(base / "docker.sock")
        self.log = base / "dockerd.log"
        self.containerd = containerd
        self.runtimes = runtimes
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dockerd:
        self.base.mkdir(parents=True, exist_ok=True)
        b = self.base
        cmd = ["dockerd", "-H", f"unix://{self.sock}", "--data-root", f"{b}/root", "--exec-root", f"{b}/exec",
               "--pidfile", f"{b}/docker.pid", "--containerd", self.containerd.sock, "--containerd-namespace",
               "rune-test-moby", "--containerd-plugins-namespace", "rune-test-moby-plugins",
               "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
               "--storage-driver=overlay2", "--config-file", f"{b}/daemon.json"]
        (b / "daemon.json").write_text(json.dumps(self.config))
        for name, binary in self.runtimes.items():
            cmd += ["--add-runtime", f"{name}={binary}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=dict(os.environ, DOCKER_CONFIG=str(b / "client")))
        atexit.register(self.stop)
        wait_for(lambda: self.docker("version", check=False).returncode == 0 or self.proc.poll() is not None, 60,
                 "dockerd", self.log)
        if self.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited: {self.log.read_text()[-2000:]}")
        return self

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_CONFIG=str(self.base / "client"))
        return run(["docker", "-H", f"unix://{self.sock}", *args], check=check, timeout=timeout, env=env)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, timeout=20)
        self.proc = None
        unmount_under(self.base)


# ---- podman ----------------------------------------------------------------------------------------------------


class Podman:
    """podman without a daemon, with private --root, --runroot and tmpdir."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        conf = base / "containers.conf"
        conf.write_text(f'[engine]\ntmp_dir = "{base}/tmp"\nevents_logger = "file"\n'
                        f'events_logfile_path = "{base}/events.log"\ncgroup_manager = "cgroupfs"\n'
                        '[containers]\nnetns = "none"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))

    def podman(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        b = self.base
        return run(["podman", "--root", f"{b}/root", "--runroot", f"{b}/runroot", "--tmpdir", f"{b}/tmp",
                    "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args],
                   check=check, timeout=timeout, env=self.env)

    def stop(self) -> None:
        """Stop what a failed test left running (conmons naming our root) and unmount the storage."""
        self.podman("rm", "--all", "--force", "--time", "0", check=False)
        for pid in pids_naming(str(self.base)):
            stop_pid(pid, timeout=5)
        unmount_under(self.base)
