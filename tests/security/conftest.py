"""Attacks on the host from inside a container, run for real.

rune runs here from a throw-away copy of the interpreter and of its launcher, made for each test, so that an attack
that works overwrites only the copy: every test checks the copy's digest. The attacks are small static C programs
(payloads/, built with gcc -static) and Python scripts placed in a copy of the busybox root filesystem. Where runc is
installed, the same attacks run against a copy of runc as a reference that must hold too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import REPO, Rune, default_config

HERE = Path(__file__).resolve().parent


class HostCopy:
    """A copy of the host's interpreter and a rune launcher that runs on it: what a container attack would reach."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True)
        self.dir = d
        self.python = d / "python3"
        shutil.copy2(os.path.realpath(sys.executable), self.python)
        sys.path.insert(0, str(REPO / "src"))
        from inclavare.launcher import TEMPLATE

        self.rune = d / "rune"
        self.rune.write_text(TEMPLATE.format(python=self.python, path=str(REPO / "src"), module="inclavare.cli.rune"))
        self.rune.chmod(0o755)
        self.original = self.digest()

    def digest(self) -> str:
        return hashlib.sha256(self.python.read_bytes()).hexdigest()

    def intact(self) -> bool:
        return self.digest() == self.original


@pytest.fixture
def host_copy(tmp_path: Path) -> HostCopy:
    return HostCopy(tmp_path / "interp")


@pytest.fixture
def srune(host_copy: HostCopy, rune_bin: str, rootfs: Path, tmp_path: Path):
    """rune from the throw-away copy, with a private --root; leftovers are removed with the real launcher (the copy
    may be what an attack broke)."""
    root = tmp_path / "root"
    r = Rune(str(host_copy.rune), root, tmp_path, rootfs)
    yield r
    left = sorted(os.listdir(root)) if root.exists() else []
    for cid in left:
        subprocess.run([rune_bin, "--root", str(root), "delete", "--force", cid], capture_output=True)
    assert not left, f"containers left behind: {left}"


@pytest.fixture(scope="session")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("the attack payloads need a C compiler (gcc)")
    out = tmp_path_factory.mktemp("payloads")
    built = {}
    for src in sorted((HERE / "payloads").glob("*.c")):
        exe = out / src.stem
        p = subprocess.run([gcc, "-static", "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot build the static payload {src.name} (libc6-dev with libc.a?): {p.stderr[-300:]}")
        built[src.stem] = exe
    return built


# A script that the kernel runs with the interpreter of whoever execs it: "#!/proc/self/exe" is the exec'ing
# process's own executable. Run by a runtime's Python process, it is the host's interpreter, which then runs the
# rest as a Python script: it keeps the interpreter open and has a shell overwrite it once no process executes it.
EVIL = """#!/proc/self/exe
import os
fd = os.open("/proc/self/exe", os.O_RDONLY)
os.dup2(fd, 7)
with open("/out/evil.log", "a") as f:
    f.write("evil: running as " + os.readlink("/proc/self/exe") + "\\n")
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sh", ["sh", "-c", "i=0; while [ $i -lt 200 ]; do "
             "if (printf '#!/bin/sh\\\\necho PWNED\\\\n' > /proc/self/fd/7) 2>/dev/null; then "
             "echo OVERWROTE >> /out/evil.log; exit 0; fi; i=$((i+1)); sleep 0.05; done; "
             "echo still busy >> /out/evil.log"])
os._exit(0)
"""


def _special_files(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if not (os.path.islink(p := os.path.join(directory, n)) or os.path.isfile(p)
                                      or os.path.isdir(p))}


@pytest.fixture(scope="session")
def attack_rootfs(rootfs: Path, payloads: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs with the payloads in /bin, /bin/evil, and mount points for the host interpreter's
    runtime (an image built to attack a host whose interpreter it knows)."""
    root = tmp_path_factory.mktemp("attack") / "rootfs"
    # regular files, links and directories only: a device node left in the shared rootfs would be read as a file
    shutil.copytree(rootfs, root, symlinks=True, ignore=_special_files)
    root.chmod(0o755)
    for name, exe in payloads.items():
        shutil.copy2(exe, root / "bin" / name)
    (root / "bin" / "evil").write_text(EVIL)
    (root / "bin" / "evil").chmod(0o755)
    (root / "out").mkdir()
    return root


def interpreter_mounts() -> list[dict]:
    """Read-only binds of what the host's interpreter needs to start (its libraries and standard library): the
    attacker's image would carry copies; binds stand in for them."""
    srcs = {"/usr/lib": "/usr/lib", "/lib": os.path.realpath("/lib"), "/lib64": os.path.realpath("/lib64"),
            sys.base_prefix: sys.base_prefix}
    return [{"destination": d, "type": "bind", "source": s, "options": ["rbind", "ro"]} for d, s in srcs.items()
            if os.path.isdir(s)]


def attack_bundle(r, root: Path, out: Path, args: list[str], edit=None, name: str | None = None) -> Path:
    """A bundle on the attack rootfs whose /out is the host directory `out` (where payloads write what they saw)."""

    def e(c: dict) -> None:
        c["root"]["path"] = str(root)
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]})
        c["mounts"].extend(interpreter_mounts())
        if edit is not None:
            edit(c)

    return r.bundle(args, edit=e, name=name)


@contextlib.contextmanager
def detached(r, bundle: Path, name: str = "leak"):  # noqa: ANN001 - tests.conftest.Rune
    """A container of `bundle` started with `run --detach`, force-deleted at the end: its id."""
    from tests.conftest import new_id

    cid = new_id(name)
    p = r("run", "--detach", "--bundle", str(bundle), cid)
    assert p.returncode == 0, p.stderr
    try:
        yield cid
    finally:
        r("delete", "--force", cid)


def wait_for(pred, timeout: float = 10, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# a container with CAP_SYS_ADMIN mounts a tmpfs over its /proc and puts a script at every /proc/self/fd/N a rune
# process could exec by path; it touches /dev/shm/ready when done, and a hijacked exec writes /dev/shm/hijacked
PROC_OVER = ("mount -t tmpfs fake /proc && mkdir -p /proc/self/fd && n=3; while [ $n -le 64 ]; do "
             "printf '#!/bin/sh\\necho HIJACKED > /dev/shm/hijacked\\n' > /proc/self/fd/$n; "
             "chmod 755 /proc/self/fd/$n; n=$((n+1)); done; touch /dev/shm/ready; sleep 60")


def wait_proc_over(pid: int) -> None:
    """Until the container whose init is `pid` has mounted over its /proc (PROC_OVER)."""
    if not wait_for(lambda: os.path.exists(f"/proc/{pid}/root/dev/shm/ready"), timeout=5):
        pytest.fail("the container did not mount over its /proc")


class RuncCopy:
    """A copy of runc with a private --root: the same attacks as a reference."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True)
        self.binary = d / "runc"
        shutil.copy2(shutil.which("runc"), self.binary)
        self.root = d / "root"
        self.original = hashlib.sha256(self.binary.read_bytes()).hexdigest()

    def __call__(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        import tempfile

        with tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
            p = subprocess.run([str(self.binary), "--root", str(self.root), *args], stdout=o, stderr=e, text=True,
                               timeout=timeout, **kw)
            o.seek(0)
            e.seek(0)
            p.stdout, p.stderr = o.read(), e.read()
        return p

    def intact(self) -> bool:
        return hashlib.sha256(self.binary.read_bytes()).hexdigest() == self.original


@pytest.fixture
def runc_copy(tmp_path: Path):
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (the reference)")
    r = RuncCopy(tmp_path / "runc")
    yield r
    if r.root.exists():
        for cid in os.listdir(r.root):
            r("delete", "--force", cid)


def config_for(rootfs: Path, args: list[str]) -> dict:
    return default_config(rootfs, args)


from tests.enclave.conftest import pal_libs, signing_key, sim_dir  # noqa: E402,F401 - fixtures for the enclave attacks
