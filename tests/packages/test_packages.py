"""The packages (packaging/build.py): `make deb`, then `dpkg -i` on this machine, the installed commands, a plain and
a sim enclave container through containerd with the installed containerd-shim-rune-v2, then `dpkg -r` and
`dpkg --purge` leaving nothing; `make rpm`, its contents read with `rpm -qlp`.

The deb case installs on this host (/usr/bin, /usr/lib/inclavare-containers, /etc/inclavare-containers) and removes
it again; it skips when a package of that name is already installed, which would not be ours to remove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines import shimd

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "packages"
NAME = "inclavare-containers"
COMMANDS = ("rune", "sgx-tools", "containerd-shim-rune-v2", "rune-signing-server", "rune-device-plugin")
PLACES = ("/usr/lib/inclavare-containers", "/etc/inclavare-containers", "/var/lib/inclavare-containers",
          "/lib/systemd/system/rune-device-plugin.service", *(f"/usr/bin/{c}" for c in COMMANDS))


def make(target: str) -> Path:
    p = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    return Path(p.stdout.strip().splitlines()[-1])


def installed() -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", NAME], capture_output=True, text=True)
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


@pytest.fixture(scope="module")
def deb() -> Path:
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root")
    if installed():
        pytest.skip(f"a package {NAME} is already installed on this machine")
    return make("deb")


def test_deb_install_run_remove_purge(deb: Path, tmp_path_factory) -> None:
    info = d.run(["dpkg-deb", "-f", str(deb), "Package", "Depends"]).stdout
    assert f"Package: {NAME}" in info and "python3.11" in info
    d.run(["dpkg", "-i", str(deb)], timeout=300)
    try:
        files = d.run(["dpkg", "-L", NAME]).stdout.split()
        for c in COMMANDS:
            assert f"/usr/bin/{c}" in files
            assert open(f"/usr/bin/{c}").readline() == "#!/usr/lib/inclavare-containers/venv/bin/python3.11 -IS\n"
        assert "/etc/inclavare-containers/config.toml" in files
        assert os.path.exists("/etc/inclavare-containers/enclave-signing-key.pem")  # made by postinst
        assert d.run(["/usr/bin/rune", "--version"]).stdout.startswith("rune version ")
        assert "usage: rune-device-plugin" in d.run(["/usr/bin/rune-device-plugin", "--help"]).stdout
        # the private environment has what the commands import, whatever the machine's Python has
        d.run(["/usr/lib/inclavare-containers/venv/bin/python3.11", "-I", "-c",
               "import grpc, google.protobuf, tomlkit, yaml, jeepney, cryptography, inclavare.k8s.deviceplugin.server"])
        _containers_through_the_installed_shim(tmp_path_factory.mktemp("pkg"))
    finally:
        d.run(["dpkg", "-r", NAME], timeout=300, check=False)
    left = [p for p in PLACES if os.path.exists(p) and not p.startswith("/etc/")]
    assert not left, f"dpkg -r left {left}"
    assert os.path.exists("/etc/inclavare-containers/config.toml")  # a conffile stays until purge, as dpkg does
    d.run(["dpkg", "--purge", NAME], timeout=300)
    left = [p for p in PLACES if os.path.exists(p)]
    assert not left and not installed(), f"dpkg --purge left {left}"


def _containers_through_the_installed_shim(base: Path) -> None:
    """containerd with the system PATH (no checkout's bin/): io.containerd.rune.v2 is /usr/bin's shim, which runs
    /usr/bin/rune beside it. The shim's configuration keeps its state under base."""
    reason = d.ensure_packages(("containerd", "skopeo", "umoci", "busybox-static"))
    if reason:
        pytest.skip(reason)
    image = d.Image(base / "image").build()
    config = base / "shim.toml"
    shimd.owner_key(base / "owner.pem")
    shimd.write_config(config, base)
    env = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    c = d.Containerd(base / "c", env=env)
    try:
        c.start()
        c.ctr("images", "import", str(image.oci_archive))
        flags = ["--runtime", shimd.RUNTIME, "--runtime-config-path", str(config)]
        p = c.ctr("run", "--rm", *flags, d.IMAGE, shimd.name(), "sh", "-c", "echo plain")
        assert p.stdout == "plain\n"
        p = c.ctr("run", "--rm", *flags, "--env", "ENCLAVE_TYPE=sim", d.IMAGE, shimd.name(), "sh", "-c",
                  "tr '\\0' ' ' < /proc/1/cmdline; echo")
        assert p.stdout.startswith("init-runelet"), p.stdout
        cid = shimd.name()
        c.ctr("run", "-d", "--null-io", *flags, d.IMAGE, cid, "sleep", "1000")
        shims = [d._cmdline(pid) for pid in d.pids_naming(c.sock) if "containerd-shim-rune-v2" in d._cmdline(pid)]
        assert shims and all("/usr/bin/containerd-shim-rune-v2 " in s for s in shims), shims
        c.ctr("task", "kill", "-s", "SIGKILL", cid)
        d.wait_for(lambda: "STOPPED" in c.ctr("task", "ls").stdout, 30, "the task's exit")
        c.ctr("task", "delete", cid)
        c.ctr("containers", "delete", cid)
    finally:
        c.stop()
    assert not list((base / "rune-root").rglob("state.json"))


def test_rpm_contents() -> None:
    if not shutil.which("rpmbuild") and os.geteuid() != 0:
        pytest.skip("rpmbuild is missing (Debian's rpm package) and installing it needs root")
    rpm = make("rpm")
    files = d.run(["rpm", "-qlp", str(rpm)]).stdout.split()
    for c in COMMANDS:
        assert f"/usr/bin/{c}" in files
    assert "/etc/inclavare-containers/config.toml" in files
    assert "/lib/systemd/system/rune-device-plugin.service" in files
    assert any(f.endswith("/site-packages/inclavare/k8s/deviceplugin/api_pb2.py") for f in files)
    assert any("/site-packages/grpc/" in f for f in files) and any("/site-packages/tomlkit/" in f for f in files)
    config = d.run(["rpm", "-qcp", str(rpm)]).stdout.split()
    assert config == ["/etc/inclavare-containers/config.toml"]
    requires = d.run(["rpm", "-qRp", str(rpm)]).stdout
    assert "/usr/bin/python3.11" in requires
    scripts = d.run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    assert "sgx-tools gen-key" in scripts and "rm -rf /usr/lib/inclavare-containers" in scripts
