"""The packages (packaging/build.py): `make deb`, then `dpkg -i` on this machine, the installed commands, a plain and
a sim enclave container through containerd with the installed containerd-shim-rune-v2, verdictd started as its
systemd unit starts it (in a network namespace of its own, this machine having no systemd) and asked by the
installed verdict, then `dpkg -r` and `dpkg --purge` leaving nothing; `make rpm`, its contents read with `rpm -qlp`.

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
COMMANDS = ("rune", "sgx-tools", "containerd-shim-rune-v2", "rune-signing-server", "rune-device-plugin", "verdictd",
            "verdict", "epm")
UNITS = ("/lib/systemd/system/rune-device-plugin.service", "/lib/systemd/system/verdictd.service",
         "/lib/systemd/system/epm.service")
CONFFILES = ("/etc/inclavare-containers/config.toml", "/etc/verdictd/verdictd.toml", "/etc/epm/config.toml")
# kept by dpkg -r, as a package's data is, until purge
DATA = ("/var/lib/verdictd", "/var/log/verdictd", "/var/lib/epm")
PLACES = ("/usr/lib/inclavare-containers", "/etc/inclavare-containers", "/var/lib/inclavare-containers",
          "/etc/verdictd", "/run/verdictd", "/etc/epm", "/run/epm", *DATA, *UNITS,
          *(f"/usr/bin/{c}" for c in COMMANDS))


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
    theirs = [p for p in PLACES if os.path.exists(p)]
    if theirs:
        pytest.skip(f"{theirs} exist on this machine already: not ours to remove")
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
        assert set(CONFFILES) <= set(files) and set(UNITS) <= set(files)
        conffiles = d.run(["dpkg-query", "-W", "-f", "${Conffiles}", NAME]).stdout
        assert all(c in conffiles for c in CONFFILES), conffiles
        assert os.path.exists("/etc/inclavare-containers/enclave-signing-key.pem")  # made by postinst
        assert d.run(["/usr/bin/rune", "--version"]).stdout.startswith("rune version ")
        assert "usage: rune-device-plugin" in d.run(["/usr/bin/rune-device-plugin", "--help"]).stdout
        # the private environment has what the commands import, whatever the machine's Python has
        d.run(["/usr/lib/inclavare-containers/venv/bin/python3.11", "-I", "-c",
               "import grpc, google.protobuf, tomlkit, yaml, jeepney, cryptography, inclavare.k8s.deviceplugin.server"])
        _containers_through_the_installed_shim(tmp_path_factory.mktemp("pkg"))
        _verdictd_as_its_unit_starts_it()
        _epm_as_its_unit_starts_it()
    finally:
        d.run(["dpkg", "-r", NAME], timeout=300, check=False)
    left = [p for p in PLACES if os.path.exists(p) and not p.startswith("/etc/") and p not in DATA]
    assert not left, f"dpkg -r left {left}"
    assert os.path.exists("/etc/inclavare-containers/config.toml")  # a conffile stays until purge, as dpkg does
    d.run(["dpkg", "--purge", NAME], timeout=300)
    left = [p for p in PLACES if os.path.exists(p)]
    assert not left and not installed(), f"dpkg --purge left {left}"


def _unit(path: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)


def _verdictd_as_its_unit_starts_it() -> None:
    """The unit's ExecStart with the installed configuration, in a network namespace of its own (its listeners
    127.0.0.1:8080 and :1234 apart from the machine's); the installed verdict reaches it on the default admin
    socket, it made its key (0600), records and audit log; stopped by its PID. systemd would make /run/verdictd
    and remove it at the stop (RuntimeDirectory): the test does both."""
    import shlex
    import uuid

    unit = _unit("/lib/systemd/system/verdictd.service")
    assert (unit["RuntimeDirectory"], unit["StateDirectory"], unit["LogsDirectory"]) == ("verdictd",) * 3, unit
    cmd = shlex.split(unit["ExecStart"])
    assert cmd == ["/usr/bin/verdictd", "--config", "/etc/verdictd/verdictd.toml"], cmd
    netns = f"rune-pkg-{uuid.uuid4().hex[:8]}"
    d.run(["ip", "netns", "add", netns])
    os.makedirs("/run/verdictd", mode=0o755)
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", "--", "sh", "-c", "ip link set lo up && exec \"$@\"",
                             "sh", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        d.wait_for(lambda: proc.poll() is None and subprocess.run(["/usr/bin/verdict", "status"],
                                                                  capture_output=True).returncode == 0, 60,
                   "the installed verdictd")
        status = d.run(["/usr/bin/verdict", "status"]).stdout
        assert "unix:/run/verdictd/verdictd.sock" in status and "tls_spki_sha256" in status, status
        d.run(["/usr/bin/verdict", "set-secret", "app/db/password", "--value", "x"])
        assert "app/db/password" in d.run(["/usr/bin/verdict", "list-secrets"]).stdout
        assert oct(os.stat("/etc/verdictd/secrets.key").st_mode & 0o777) == "0o600"
        assert d.run([*cmd, "--check"]).returncode == 0  # the installed configuration, with the key it made
        audit = Path("/var/log/verdictd/audit.log").read_text()
        assert '"event": "start"' in audit and '"op": "set_secret"' in audit, audit
    finally:
        d.stop_pid(proc.pid)
        shutil.rmtree("/run/verdictd", ignore_errors=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def _epm_as_its_unit_starts_it() -> None:
    """The unit's ExecStart with the installed configuration; the directories it names are the unit's
    RuntimeDirectory and StateDirectory, which the test makes as systemd would (0700) and removes /run/epm at the
    stop as systemd does. It answers Healthz on the default socket, which rune uses; stopped by its PID."""
    import json
    import shlex
    import socket

    unit = _unit("/lib/systemd/system/epm.service")
    cmd = shlex.split(unit["ExecStart"])
    assert cmd == ["/usr/bin/epm", "--config", "/etc/epm/config.toml"], cmd
    for place in (f"/run/{unit['RuntimeDirectory']}", f"/var/lib/{unit['StateDirectory']}"):
        os.makedirs(place, mode=0o700, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        d.wait_for(lambda: proc.poll() is not None or os.path.exists("/run/epm/epm.sock"), 60, "the installed epm")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("/run/epm/epm.sock")
            s.sendall(b'{"op":"Healthz"}\n')
            assert json.loads(s.makefile().readline())["ok"] is True
    finally:
        d.stop_pid(proc.pid)
        shutil.rmtree("/run/epm", ignore_errors=True)
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


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
    assert set(CONFFILES) <= set(files) and set(UNITS) <= set(files)
    assert any(f.endswith("/site-packages/inclavare/k8s/deviceplugin/api_pb2.py") for f in files)
    assert any("/site-packages/grpc/" in f for f in files) and any("/site-packages/tomlkit/" in f for f in files)
    config = d.run(["rpm", "-qcp", str(rpm)]).stdout.split()
    assert sorted(config) == sorted(CONFFILES)
    requires = d.run(["rpm", "-qRp", str(rpm)]).stdout
    assert "/usr/bin/python3.11" in requires
    scripts = d.run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    assert "sgx-tools gen-key" in scripts and "rm -rf /usr/lib/inclavare-containers" in scripts
