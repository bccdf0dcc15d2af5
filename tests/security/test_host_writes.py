"""Smaller host writes: directories rune makes in the rootfs, and paths it acts on after pivot_root, must never be
redirected to the host by a symlink in the image or in a volume that another container changes meanwhile
(CVE-2024-45310, CVE-2025-31133)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.conftest import default_config, new_id


def _copy_rootfs(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    dst.chmod(0o755)
    return dst


def test_cwd_is_made_through_fds_while_a_volume_is_swapped(srune, payloads, tmp_path):
    """A shared volume whose `a` is swapped, as fast as the kernel allows, with a symlink to a host directory while
    rune creates process.cwd /vol/a/x/y in it: nothing is ever made on the host (the old code's path-based mkdir
    lost 3 of 80 times)."""
    vol = tmp_path / "vol"
    (vol / "a").mkdir(parents=True)
    host = tmp_path / "host-dir"
    host.mkdir()
    (vol / "b").symlink_to(host)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": str(vol), "options": ["rbind"]})
        c["process"]["cwd"] = "/vol/a/x/y"

    b = srune.bundle(["true"], edit=edit)
    swapper = subprocess.Popen([str(payloads["swap"]), str(vol), "a", "b", "30"], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(80):
            srune("run", "--bundle", str(b), new_id("cwdrace"))
            assert list(host.iterdir()) == [], "rune made the container's cwd on the host"
    finally:
        swapper.kill()
        swapper.wait()
    assert list(host.iterdir()) == []


def test_dev_attestation_stays_in_the_rootfs(srune, rune_bin, signing_key, sim_dir, tmp_path):
    """A signed sim image whose /dev is a symlink to a host directory: /dev/attestation is made inside the rootfs,
    where the link resolves within it, not in the host directory."""
    host = tmp_path / "hostdev"
    host.mkdir()
    b = tmp_path / "simb"
    root = _copy_rootfs(srune.rootfs, b / "rootfs")
    shutil.rmtree(root / "dev")
    (root / "dev").symlink_to(host)
    c = default_config(root, ["sh", "-c", "ls /dev/attestation"])
    c["process"]["env"].append("ENCLAVE_TYPE=sim")
    (b / "config.json").write_text(json.dumps(c))
    p = subprocess.run([str(Path(rune_bin).with_name("sgx-tools")), "sign-bundle", "--key", str(signing_key), str(b)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = srune("run", "--bundle", str(b), new_id("attdev"))
    assert p.returncode == 0, p.stderr
    assert "quote" in p.stdout
    assert list(host.iterdir()) == [], "the enclave's /dev/attestation was made in a host directory"


def test_mask_source_must_be_the_null_device(srune, tmp_path):
    """/dev bound from a volume whose `null` is a link to a host procfs file: bound over a masked path by the old
    code, it gave the container that file, writable (CVE-2025-31133: core_pattern). rune refuses to mask with it."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").symlink_to("/proc/sys/kernel/core_pattern")

    def edit(c: dict) -> None:
        c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/dev")]
        c["mounts"].append({"destination": "/dev", "type": "bind", "source": str(dev), "options": ["rbind"]})
        c["linux"]["maskedPaths"] = ["/proc/version"]

    p = srune("run", "--bundle", str(srune.bundle(["cat", "/proc/version"], edit=edit)), new_id("mask"))
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert pattern not in p.stdout or pattern in Path("/proc/version").read_text(), p.stdout
    assert "linux.maskedPaths" in p.stderr and "null device" in p.stderr, p.stderr


def test_sysctl_write_is_not_redirected_by_a_mount(srune, tmp_path):
    """A file bound over the /proc/sys entry that a sysctl names redirects a path-based write to that file (the
    class of CVE-2025-52881, where the redirect led to /proc/sysrq-trigger): rune writes only to procfs, and
    refuses to cross the mount."""
    host = tmp_path / "host-file"
    host.write_text("untouched\n")

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/proc/sys/kernel/domainname", "type": "bind", "source": str(host),
                            "options": ["bind"]})
        c["linux"]["sysctl"] = {"kernel.domainname": "redirected"}

    p = srune("run", "--bundle", str(srune.bundle(["true"], edit=edit)), new_id("sysctl"))
    assert host.read_text() == "untouched\n"
    assert p.returncode == 1 and "linux.sysctl.kernel.domainname" in p.stderr, p.stderr
