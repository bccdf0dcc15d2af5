"""Shared fixtures: the rune launcher, a busybox-static root filesystem, bundles, and a private runtime root.

Tests run real containers and need root (CI runs as root); they skip when not root or when busybox is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines: starts containerd/dockerd/podman")


@pytest.fixture(scope="session")
def rune_bin() -> str:
    launcher = REPO / "bin" / "rune"
    if not launcher.exists():
        subprocess.run([sys.executable, "-m", "inclavare.launcher", str(REPO / "bin")], check=True, cwd=REPO)
    return str(launcher)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static rootfs shared by the tests (mounted read-only by the default bundle)."""
    if os.geteuid() != 0:
        pytest.skip("containers need root")
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("busybox-static is not installed")
    root = tmp_path_factory.mktemp("rootfs")
    root.chmod(0o755)  # pytest makes it 0700: users other than root in a container must reach /tmp
    build_rootfs(root, busybox)
    return root


def build_rootfs(root: Path, busybox: str = "/bin/busybox") -> None:
    sys.path.insert(0, str(REPO / "src"))
    from inclavare.oci.busybox import build_rootfs as build

    build(str(root), busybox)


def default_config(rootfs: Path, args: list[str]) -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from inclavare.oci import spec

    c = spec.default(args)
    c["process"]["terminal"] = False
    c["root"]["path"] = str(rootfs)
    return c


class Rune:
    """Runs the rune launcher against a private --root."""

    def __init__(self, binary: str, root: Path, tmp: Path, rootfs: Path) -> None:
        self.binary = binary
        self.root = root
        self.tmp = tmp
        self.rootfs = rootfs

    def __call__(self, *args: str, check: bool = False, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run rune; stdout and stderr go through files, not pipes, because a created or detached container
        keeps rune's stdio open (as with runc) and a pipe would not reach EOF until it exits."""
        if "stdout" in kw or "capture_output" in kw:
            kw.setdefault("text", True)
            p = subprocess.run([self.binary, "--root", str(self.root), *args], timeout=timeout, **kw)
        else:
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                p = subprocess.run([self.binary, "--root", str(self.root), *args], timeout=timeout, stdout=out,
                                   stderr=err, text=True, **kw)
                out.seek(0)
                err.seek(0)
                p.stdout, p.stderr = out.read(), err.read()
        if check and p.returncode != 0:
            raise AssertionError(f"rune {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def bundle(self, args: list[str] | None = None, edit=None, name: str | None = None) -> Path:
        """A bundle directory whose config.json runs args in the shared rootfs; edit(config) may change it."""
        b = self.tmp / (name or f"bundle-{uuid.uuid4().hex[:8]}")
        b.mkdir()
        c = default_config(self.rootfs, args or ["true"])
        if edit is not None:
            edit(c)
        (b / "config.json").write_text(json.dumps(c, indent=1))
        return b

    def state(self, cid: str) -> dict:
        p = self("state", cid, check=True)
        return json.loads(p.stdout)


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rune(rune_bin: str, rootfs: Path, tmp_path: Path):
    root = tmp_path / "root"
    r = Rune(rune_bin, root, tmp_path, rootfs)
    yield r
    # nothing may be left behind: force-delete what a failed test left, then fail if anything remained
    left = sorted(os.listdir(root)) if root.exists() else []
    for cid in left:
        subprocess.run([rune_bin, "--root", str(root), "delete", "--force", cid], capture_output=True)
    assert not left, f"containers left behind: {left}"


def cgroup_leftovers(cid: str) -> list[str]:
    out = []
    base = Path("/sys/fs/cgroup")
    for ctrl in base.iterdir():
        if (ctrl / cid).exists():
            out.append(str(ctrl / cid))
    return out


def imported(rune, *args: str) -> set[str]:
    """The modules a rune command imports (-X importtime, the launcher's -I -S)."""
    # files, not pipes: a created container keeps rune's stdio open
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S", rune.binary, "--root", str(rune.root),
                            *args], stdout=subprocess.DEVNULL, stderr=err, text=True, timeout=60)
        err.seek(0)
        text = err.read()
    assert p.returncode == 0, text[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in text.splitlines() if line.startswith("import time:")}
