"""The rootfs is set up without leaving it: /dev work and mount points stay inside the container's root even when
the image's /dev is a symlink to a host path, or a path component is swapped for a symlink after it was resolved
(a volume shared with another container: CVE-2021-30465)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, new_id


def _tree(d: Path) -> dict[str, str]:
    """Every entry under d: its kind and, for files, its content."""
    out = {}
    for p in sorted(d.rglob("*")):
        out[str(p.relative_to(d))] = "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_text()
    return out


def test_dev_symlink_to_a_host_dir_stays_in_the_rootfs(rune, tmp_path):
    """An image whose /dev is `dev -> /<host dir>`: devices and /dev links are made inside the rootfs (where the link
    resolves within it), and the host directory of that name is left as it was."""
    host = tmp_path / "hostdev"
    host.mkdir()
    (host / "ptmx").write_text("host ptmx\n")
    (host / "null").write_text("host null\n")
    before = _tree(host)
    root = tmp_path / "rootfs"
    shutil.copytree(rune.rootfs, root, symlinks=True)
    root.chmod(0o755)
    if (root / "dev").is_dir() and not (root / "dev").is_symlink():
        shutil.rmtree(root / "dev")
    else:
        (root / "dev").unlink(missing_ok=True)
    (root / "dev").symlink_to(host)
    # and a mount whose destination goes through an absolute symlink to another host directory
    hostdata = tmp_path / "hostdata"
    hostdata.mkdir()
    (root / "data").symlink_to(hostdata)

    def edit(c: dict) -> None:
        c["root"]["path"] = str(root)
        c["mounts"].append({"destination": "/data/vol", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})

    script = "echo x > /dev/null && echo y > /data/vol/f && readlink /dev/stdout && readlink /dev/ptmx && ls /dev/"
    p = rune("run", "--bundle", str(rune.bundle(["sh", "-c", script], edit=edit)), new_id())
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines[:2] == ["/proc/self/fd/1", "pts/ptmx"], p.stdout
    assert {"null", "zero", "fd", "stdin", "stdout", "stderr", "ptmx", "pts"} <= set(lines[2:]), p.stdout
    assert _tree(host) == before  # nothing deleted, made or replaced on the host
    assert _tree(hostdata) == {}
    # the mount points were made where the links resolve inside the rootfs
    assert (root / str(host).lstrip("/")).is_dir() and (root / str(hostdata).lstrip("/") / "vol").is_dir()


RACE = r"""
import json, os, sys
from inclavare.linux import syscalls as s
from inclavare.runtime import rootfs as rfs

root, host, what = sys.argv[1:4]
s.unshare(0x00020000)  # a mount namespace of our own, private, so that no mount reaches the host's
s.mount(None, "/", None, s.MS_PRIVATE | s.MS_REC)
join = rfs.secure_join


def racing_join(r, unsafe):
    out = join(r, unsafe)
    if unsafe.startswith("/vol/"):
        # between the join and its use, another container that shares the volume swaps a directory for a symlink
        os.rename(root + "/vol/sub", root + "/vol/sub.old")
        os.symlink(host, root + "/vol/sub")
    return out


rfs.secure_join = racing_join
try:
    if what == "mount":
        rfs.mount_all({"mounts": [{"destination": "/vol/sub/target", "type": "tmpfs", "source": "tmpfs"}]}, root,
                      root, None, False)
    else:
        rfs.make_devices({"linux": {"devices": [{"path": "/vol/sub/null", "type": "c", "major": 1, "minor": 3}]}},
                         root, False)
    error = ""
except Exception as e:
    error = str(e)
print(json.dumps({"error": error, "host_mounted": os.path.ismount(host + "/target")}))
"""


def _race(tmp_path: Path, what: str) -> tuple[dict, Path, dict]:
    root = tmp_path / "racefs"  # (tmp_path / "root" is the runtime root of the rune fixture)
    (root / "vol" / "sub").mkdir(parents=True)
    (root / "dev").mkdir()
    host = tmp_path / "host"
    (host / "target").mkdir(parents=True)
    (host / "null").write_text("host file\n")
    before = _tree(host)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, "-c", RACE, str(root), str(host), what], capture_output=True, text=True,
                       env=env, timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), host, before


def test_mount_point_swapped_for_a_symlink_is_refused(rune, tmp_path):
    """A mount point reached through a directory swapped for a symlink to the host after secure_join: the mount is
    refused, not made on the host."""
    out, host, before = _race(tmp_path, "mount")
    assert not out["host_mounted"]
    assert out["error"] == ("config.json mounts[0]: cannot mount tmpfs on /vol/sub/target: "
                            f"{tmp_path}/racefs/vol/sub became a symbolic link after it was resolved: refusing to follow it")
    assert _tree(host) == before


def test_device_path_swapped_for_a_symlink_is_refused(rune, tmp_path):
    """A device whose directory is swapped for a symlink to the host after secure_join: no host file is unlinked
    or replaced by a node."""
    out, host, before = _race(tmp_path, "devices")
    assert out["error"] == ("config.json linux.devices[0]: cannot create /vol/sub/null: "
                            f"{tmp_path}/racefs/vol/sub became a symbolic link after it was resolved: refusing to follow it")
    assert _tree(host) == before
