"""Engine fixtures: containerd, dockerd and podman started privately for the session, each driven through one
small adapter (Engine) so that every case runs with the same words on every engine and runtime.

The daemons are started here and stopped by their PID at the end of the session (also at interpreter exit, when a
session is interrupted). Every case is parametrized over runtime in (rune, runc): a case that fails with rune and
passes with runc is a rune bug.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import REPO
from tests.engines import daemons as d
from tests.engines import shimd

ENGINES = ("containerd", "docker", "podman")
RUNTIMES = ("rune", "runc")
CGROUP = Path("/sys/fs/cgroup")


# ---- session: packages, image, daemons ---------------------------------------------------------------------------


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def engine_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the engine tests start containerd and dockerd: they need root")
    reason = d.ensure_packages()
    if reason:
        pytest.skip(reason)
    # SIGTERM ends the session as Ctrl-C does: pytest stops and tears the fixtures down, which stops the daemons
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    # short: unix socket paths must stay under 108 bytes
    return tmp_path_factory.mktemp("eng")


@pytest.fixture(scope="session")
def image(engine_base: Path) -> d.Image:
    return d.Image(engine_base / "image").build()


@pytest.fixture(scope="session")
def containerd(engine_base: Path, image: d.Image, rune_bin: str) -> Iterator[d.Containerd]:
    c = d.Containerd(engine_base / "containerd", {"rune": rune_bin})
    try:
        c.start()
        c.ctr("images", "import", str(image.oci_archive))
        c.ctr("images", "import", str(image.pause_archive))
        c.ctr("-n", "k8s.io", "images", "import", str(image.oci_archive))
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def shim_containerd(engine_base: Path, image: d.Image, rune_bin: str) -> Iterator[shimd.ShimContainerd]:
    """A containerd of its own whose io.containerd.rune.v2 runtime is this tree's containerd-shim-rune-v2."""
    c = shimd.ShimContainerd(engine_base / "shimd")
    try:
        c.start()
        c.ctr("images", "import", str(image.oci_archive))
        for archive in (image.oci_archive, image.pause_archive):
            c.ctr("-n", "k8s.io", "images", "import", str(archive))
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def dockerd(engine_base: Path, image: d.Image, containerd: d.Containerd, rune_bin: str) -> Iterator[d.Dockerd]:
    k = d.Dockerd(engine_base / "docker", containerd, {"rune": rune_bin})
    try:
        k.start()
        k.docker("load", "-i", str(image.docker_archive))
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def podman(engine_base: Path, image: d.Image) -> Iterator[d.Podman]:
    p = d.Podman(engine_base / "podman")
    try:
        p.podman("load", "-i", str(image.docker_archive))
        # the first container makes podman's own storage mounts, which stay: not a case's leftovers
        p.podman("--runtime", d.RUNC, "run", "--rm", "--network", "none", *d.PODMAN_ULIMITS, d.IMAGE, "true")
        yield p
    finally:
        p.stop()


# ---- one adapter per engine --------------------------------------------------------------------------------------


class Opts:
    """What a case asks of the engine, in engine-neutral words."""

    def __init__(self, env: dict[str, str] | None = None, user: str = "", workdir: str = "", read_only: bool = False,
                 memory: int = 0, pids: int = 0, cpus: str = "", seccomp: str = "", tty: bool = False) -> None:
        self.env = env or {}
        self.user = user
        self.workdir = workdir
        self.read_only = read_only
        self.memory = memory
        self.pids = pids
        self.cpus = cpus
        self.seccomp = seccomp  # "": what the engine does by default; "default" or "unconfined"
        self.tty = tty


class Engine:
    name = ""

    def engine_mounts(self) -> set[str]:
        """Mounts that belong to the engine itself, made and kept as it pleases."""
        return set()

    def __init__(self, runtime: str, binary: str, base: Path) -> None:
        self.runtime = runtime  # "rune" or "runc"
        self.binary = binary
        self.base = base  # everything of this engine is under base

    def run(self, cmd: list[str], o: Opts | None = None) -> subprocess.CompletedProcess:
        """Run to completion, removed afterwards; stdout, stderr and the exit status of the engine's client."""
        raise NotImplementedError

    def run_detached(self, cmd: list[str]) -> str:
        raise NotImplementedError

    def exec(self, cid: str, cmd: list[str], tty: bool = False, user: str = "") -> subprocess.CompletedProcess:
        raise NotImplementedError

    def stop(self, cid: str) -> int:
        """Stop with SIGTERM; the container's exit status."""
        raise NotImplementedError

    def remove(self, cid: str) -> None:
        raise NotImplementedError

    def force_remove(self, cid: str) -> None:
        """Kill and remove, whatever state the container is in (after a failed case)."""
        raise NotImplementedError

    def state_dirs(self) -> list[Path]:
        """Where the runtime keeps container state for this engine (its --root)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove whatever a failed case left (best effort)."""


def name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


class Ctr(Engine):
    name = "containerd"

    def __init__(self, runtime: str, binary: str, c: d.Containerd) -> None:
        super().__init__(runtime, binary, c.base)
        self.c = c
        self.root = c.base / f"runc-root-{runtime}"

    def _flags(self, o: Opts) -> list[str]:
        f = ["--runc-binary", self.binary, "--runc-root", str(self.root)]
        for k, v in o.env.items():
            f += ["--env", f"{k}={v}"]
        if o.user:
            raise NotImplementedError("ctr run has no --user flag")
        if o.workdir:
            f += ["--cwd", o.workdir]
        if o.read_only:
            f.append("--read-only")
        if o.memory:
            f += ["--memory-limit", str(o.memory)]
        if o.pids:
            raise NotImplementedError("ctr run has no pids limit flag")
        if o.cpus:
            f += ["--cpus", o.cpus]
        if o.memory or o.cpus:
            # ctr's spec mounts no cgroupfs: show the host's, where the container finds its own by /proc/self/cgroup
            f += ["--mount", "type=bind,src=/sys/fs/cgroup,dst=/sys/fs/cgroup,options=rbind:ro"]
        if o.seccomp == "default":
            f.append("--seccomp")  # ctr runs unconfined unless asked
        return f

    def run(self, cmd: list[str], o: Opts | None = None) -> subprocess.CompletedProcess:
        o = o or Opts()
        if o.tty:  # ctr -t wants a terminal on its own stdin
            return run_in_pty(["ctr", "-a", self.c.sock, "-n", self.c.namespace, "run", "--rm", "-t", *self._flags(o),
                               d.IMAGE, name(), *cmd])
        return self.c.ctr("run", "--rm", *self._flags(o), d.IMAGE, name(), *cmd, check=False)

    def run_detached(self, cmd: list[str]) -> str:
        cid = name()
        self.c.ctr("run", "-d", "--null-io", *self._flags(Opts()), d.IMAGE, cid, *cmd)
        return cid

    def exec(self, cid: str, cmd: list[str], tty: bool = False, user: str = "") -> subprocess.CompletedProcess:
        args = ["ctr", "-a", self.c.sock, "-n", self.c.namespace, "task", "exec", "--exec-id", name()]
        if user:
            args += ["--user", user]
        if tty:  # ctr -t wants a terminal on its own stdin
            return run_in_pty([*args, "-t", cid, *cmd])
        return d.run([*args, cid, *cmd], check=False)

    def stop(self, cid: str) -> int:
        self.c.ctr("task", "kill", "-s", "SIGTERM", cid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.c.ctr("task", "ls").stdout
            line = [ln for ln in out.splitlines() if ln.startswith(cid + " ")]
            if line and "STOPPED" in line[0]:
                break
            time.sleep(0.05)
        p = self.c.ctr("task", "delete", cid, check=False)
        # ctr prints "task ID exit with non-zero exit code N" (or nothing for 0)
        text = p.stdout + p.stderr
        if "exit code" in text:
            return int(text.rsplit("exit code", 1)[1].split()[0].strip('"'))
        assert p.returncode == 0, text
        return 0

    def remove(self, cid: str) -> None:
        self.c.ctr("containers", "delete", cid)

    def force_remove(self, cid: str) -> None:
        self.c.ctr("task", "delete", "--force", cid, check=False)
        self.c.ctr("containers", "delete", cid, check=False)

    def state_dirs(self) -> list[Path]:
        return [self.root / self.c.namespace]

    def cgroup_parents(self) -> list[str]:
        return [self.c.namespace]

    def cleanup(self) -> None:
        for line in self.c.ctr("task", "ls", "-q", check=False).stdout.split():
            self.c.ctr("task", "delete", "--force", line, check=False)
        for line in self.c.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.c.ctr("containers", "delete", line, check=False)


class Docker(Engine):
    name = "docker"
    parent = "rune-test-docker"

    def __init__(self, runtime: str, binary: str, k: d.Dockerd) -> None:
        super().__init__(runtime, binary, k.base)
        self.k = k

    def _flags(self, o: Opts) -> list[str]:
        f = ["--network", "none", "--runtime", self.runtime, "--cgroup-parent", "/" + self.parent]
        return f + cli_flags(o)

    def run(self, cmd: list[str], o: Opts | None = None) -> subprocess.CompletedProcess:
        return self.k.docker("run", "--rm", *self._flags(o or Opts()), d.IMAGE, *cmd, check=False)

    def run_detached(self, cmd: list[str]) -> str:
        return self.k.docker("run", "-d", *self._flags(Opts()), d.IMAGE, *cmd).stdout.strip()

    def run_detached_with(self, flags: list[str], cmd: list[str]) -> str:
        return self.k.docker("run", "-d", *self._flags(Opts()), *flags, d.IMAGE, *cmd).stdout.strip()

    def flags(self) -> list[str]:
        """The flags every case's `docker run` has (network, runtime, cgroup parent)."""
        return self._flags(Opts())

    def exec(self, cid: str, cmd: list[str], tty: bool = False, user: str = "") -> subprocess.CompletedProcess:
        return self.k.docker("exec", *(["-t"] if tty else []), *(["-u", user] if user else []), cid, *cmd, check=False)

    def stop(self, cid: str) -> int:
        self.k.docker("stop", cid)
        return int(self.k.docker("inspect", "-f", "{{.State.ExitCode}}", cid).stdout)

    def remove(self, cid: str) -> None:
        self.k.docker("rm", cid)

    def force_remove(self, cid: str) -> None:
        self.k.docker("rm", "--force", cid, check=False)

    def state_dirs(self) -> list[Path]:
        # dockerd gives every runtime the same --root, <exec-root>/runtime-runc/<containerd namespace>
        return [p for p in (self.base / "exec").glob("runtime-*/*") if p.is_dir()]

    def cgroup_parents(self) -> list[str]:
        return [self.parent]

    def cleanup(self) -> None:
        ids = self.k.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.k.docker("rm", "-f", *ids, check=False)


class Podman(Engine):
    name = "podman"
    parent = "rune-test-podman"

    def __init__(self, runtime: str, binary: str, p: d.Podman) -> None:
        super().__init__(runtime, binary, p.base)
        self.p = p

    def pm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.p.podman("--runtime", self.binary, *args, check=check)

    def _flags(self, o: Opts) -> list[str]:
        f = ["--network", "none", *d.PODMAN_ULIMITS, "--cgroup-parent", "/" + self.parent]
        return f + cli_flags(o)

    def run(self, cmd: list[str], o: Opts | None = None) -> subprocess.CompletedProcess:
        return self.pm("run", "--rm", *self._flags(o or Opts()), d.IMAGE, *cmd, check=False)

    def run_detached(self, cmd: list[str]) -> str:
        return self.pm("run", "-d", *self._flags(Opts()), d.IMAGE, *cmd).stdout.strip()

    def exec(self, cid: str, cmd: list[str], tty: bool = False, user: str = "") -> subprocess.CompletedProcess:
        return self.pm("exec", *(["-t"] if tty else []), *(["-u", user] if user else []), cid, *cmd, check=False)

    def stop(self, cid: str) -> int:
        self.pm("stop", cid)
        return int(self.pm("inspect", "-f", "{{.State.ExitCode}}", cid).stdout)

    def remove(self, cid: str) -> None:
        self.pm("rm", cid)

    def force_remove(self, cid: str) -> None:
        self.pm("rm", "--force", "--time", "0", cid, check=False)

    def engine_mounts(self) -> set[str]:
        return {str(self.base / "root" / "overlay")}  # the overlay driver's home, bind-mounted on first use

    def state_dirs(self) -> list[Path]:
        # conmon calls the runtime without --root (and podman's exit command does not pass --runtime-flag on):
        # the runtime's default root, where only the entries that appear during a case count
        return [Path("/run/rune" if self.runtime == "rune" else "/run/runc")]

    def cgroup_parents(self) -> list[str]:
        return [self.parent]

    def cleanup(self) -> None:
        self.pm("rm", "--all", "--force", "--time", "0", check=False)


def run_in_pty(cmd: list[str], timeout: float = 60, env: dict[str, str] | None = None,
               size: tuple[int, int] | None = None) -> subprocess.CompletedProcess:
    """Run cmd with a pseudo-terminal as its stdin, stdout and stderr (for clients that insist on a terminal);
    size: the terminal's (rows, columns)."""
    import pty
    import select

    master, slave = pty.openpty()
    if size:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every slave end closed
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    try:
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    text = out.decode(errors="replace").replace("\r\n", "\n")
    return subprocess.CompletedProcess(cmd, rc, text, "")


# ---- per case: the engine under a runtime, and nothing left behind ---------------------------------------------


def cgroups_under(parents: list[str]) -> set[str]:
    """Container cgroups (children of our parents) in every hierarchy; podman's conmon cgroup is the engine's."""
    out = set()
    for ctrl in CGROUP.iterdir():
        for parent in parents:
            base = ctrl / parent
            if base.is_dir():
                out.update(str(p) for p in base.iterdir() if p.is_dir() and p.name != "conmon")
    return out


def snapshot(e: Engine) -> dict[str, set[str]]:
    return {"state": {str(p / n) for p in e.state_dirs() if p.is_dir() for n in os.listdir(p)},
            "mounts": set(d.mounts_under(e.base)) - e.engine_mounts(), "cgroups": cgroups_under(e.cgroup_parents())}


def leftovers(e: Engine, before: dict[str, set[str]]) -> dict[str, list[str]]:
    now = snapshot(e)
    return {k: sorted(v - before[k]) for k, v in now.items() if v - before[k]}


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, rune_bin: str) -> tuple[str, str]:
    return request.param, (rune_bin if request.param == "rune" else d.RUNC)


def _engine(request: pytest.FixtureRequest, name: str, runtime: tuple[str, str]) -> Iterator[Engine]:
    rt, binary = runtime
    if name == "containerd":
        e: Engine = Ctr(rt, binary, request.getfixturevalue("containerd"))
    elif name == "docker":
        e = Docker(rt, binary, request.getfixturevalue("dockerd"))
    else:
        e = Podman(rt, binary, request.getfixturevalue("podman"))
    before = snapshot(e)
    yield e
    # the engines remove asynchronously (shim exit, docker's --rm): give them a moment, then demand a clean host
    deadline = time.monotonic() + 15
    left = leftovers(e, before)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers(e, before)
    if left:
        e.cleanup()
    assert not left, f"{e.name}/{rt} left behind: {left}"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, runtime: tuple[str, str]) -> Iterator[Engine]:
    yield from _engine(request, request.param, runtime)


@pytest.fixture
def docker(request: pytest.FixtureRequest, runtime: tuple[str, str]) -> Iterator[Engine]:
    yield from _engine(request, "docker", runtime)


@pytest.fixture(scope="session", autouse=True)
def _remove_cgroup_parents() -> Iterator[None]:
    yield
    for ctrl in CGROUP.iterdir() if CGROUP.is_dir() else ():
        for parent in ("rune-test", Docker.parent, Podman.parent):
            p = ctrl / parent
            if p.is_dir():
                for child in sorted(p.rglob("*"), reverse=True):
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
                try:
                    p.rmdir()
                except OSError:
                    pass


def need(e: Engine, what: str) -> None:
    """Skip a case an engine's client cannot express."""
    reasons = {("containerd", "user"): "ctr run has no --user flag (the user is tested through ctr task exec --user)",
               ("containerd", "pids"): "ctr run has no pids limit flag"}
    if (e.name, what) in reasons:
        pytest.skip(reasons[(e.name, what)])


def cli_flags(o: Opts) -> list[str]:
    """The docker/podman run flags (the two CLIs agree) for the options a case asks for."""
    f: list[str] = []
    for k, v in o.env.items():
        f += ["-e", f"{k}={v}"]
    if o.user:
        f += ["-u", o.user]
    if o.workdir:
        f += ["-w", o.workdir]
    if o.read_only:
        f.append("--read-only")
    if o.memory:
        f += ["--memory", str(o.memory)]
    if o.pids:
        f += ["--pids-limit", str(o.pids)]
    if o.cpus:
        f += ["--cpus", o.cpus]
    if o.seccomp == "unconfined":
        f += ["--security-opt", "seccomp=unconfined"]
    if o.tty:
        f.append("-t")
    return f


# ---- a signed enclave image (sgx-tools sign-image), shared by the signed-image and terminal cases ----------------

SIGNED = "docker.io/library/rune-enclave:latest"
TAMPERED = "docker.io/library/rune-enclave-tampered:latest"


class Signed:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.docker_archive = work / "signed-docker.tar"
        self.oci_archive = work / "signed-oci.tar"
        self.tampered_docker = work / "tampered-docker.tar"
        self.tampered_oci = work / "tampered-oci.tar"


@pytest.fixture(scope="session")
def signed(engine_base: Path, image: d.Image, rune_bin: str) -> Signed:
    """The session's busybox image signed once (Cmd /bin/sh, GREETING an allowed variable), in both archive formats,
    and a copy with one more layer that changes a trusted file."""
    from inclavare.oci import image as oci_image

    s = Signed(engine_base / "signed")
    s.work.mkdir()
    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    key = s.work / "owner.pem"
    d.run([sgx_tools, "gen-key", str(key)])
    d.run([sgx_tools, "sign-image", "--key", str(key), "--untrusted-env", "GREETING",
           f"docker-archive:{image.docker_archive}", f"docker-archive:{s.docker_archive}:{SIGNED}"])
    d.run(["skopeo", "copy", "-q", f"docker-archive:{s.docker_archive}", f"oci-archive:{s.oci_archive}:{SIGNED}"])
    img, _ = oci_image.read(str(s.docker_archive), s.work)
    oci_image.add_layer(img, oci_image.layer_of({"etc/group": (b"root:x:0:\nevil:x:0:\n", 0o644)}), s.work, "tamper")
    oci_image.write(img, "docker-archive", str(s.tampered_docker), TAMPERED)
    oci_image.write(img, "oci-archive", str(s.tampered_oci), TAMPERED)
    return s


@pytest.fixture(scope="session")
def loaded(signed: Signed, dockerd: d.Dockerd, podman: d.Podman, containerd: d.Containerd) -> Signed:
    dockerd.docker("load", "-i", str(signed.docker_archive))
    dockerd.docker("load", "-i", str(signed.tampered_docker))
    podman.podman("load", "-i", str(signed.docker_archive))
    podman.podman("load", "-i", str(signed.tampered_oci))
    for ns in ([], ["-n", "k8s.io"]):
        containerd.ctr(*ns, "images", "import", str(signed.oci_archive))
        containerd.ctr(*ns, "images", "import", str(signed.tampered_oci))
    return signed


@pytest.fixture(scope="session")
def pal_libs() -> dict[int, str]:
    libs = {v: REPO / "build" / "pal" / f"liberpal-skeleton-v{v}.so" for v in (1, 2, 3)}
    if not all(p.exists() for p in libs.values()):
        p = subprocess.run(["make", "-s", "pal"], cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"make pal failed (the reference PAL is built with the C compiler): {p.stderr.strip()[-300:]}")
    return {v: str(p) for v, p in libs.items()}
