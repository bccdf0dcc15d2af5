"""`rune install containerd --config PATH`: the CRI runtime handler added to containerd's TOML in place (comments,
order and other keys kept), idempotently, for each config version; bad files refused in one sentence; containerd
itself loading the result and running a pod sandbox through the handler (crictl); and --restart asking systemd over
D-Bus (a private dbus-daemon with a stand-in for systemd's Manager object: systemd is not PID 1 here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from tests.engines import daemons as d

tomlkit = pytest.importorskip("tomlkit")

REPO = Path(__file__).resolve().parents[2]
RUNE = str(REPO / "bin" / "rune")

DEBIAN_LIKE = '''# containerd's configuration, with the operator's comments
version = 2
root = "/var/lib/containerd"   # where images live
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"   # Debian's
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
'''


def install(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([RUNE, "install", "containerd", *args], capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def runtime(path: Path, version: int = 2, name: str = "rune") -> dict:
    doc = tomlkit.parse(path.read_text()).unwrap()
    plugin = {1: ("plugins", "cri"), 2: ("plugins", "io.containerd.grpc.v1.cri"),
              3: ("plugins", "io.containerd.cri.v1.runtime")}[version]
    t = doc
    for k in (*plugin, "containerd"):
        t = t[k]
    return t if name == "" else t["runtimes"][name]


def test_adds_the_shim_handler_keeping_comments_and_keys(tmp_path: Path, rune_bin: str) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(DEBIAN_LIKE)
    conf.chmod(0o640)
    p = install("--config", str(conf), "--shim", "rune")
    assert p.stdout == f"added runtime 'rune' (io.containerd.rune.v2) to {conf}\n"
    text = conf.read_text()
    assert text.startswith(DEBIAN_LIKE.rstrip("\n"))  # everything that was there, as it was
    rt = runtime(conf)
    assert rt == {"runtime_type": "io.containerd.rune.v2", "pod_annotations": ["enclave.*"],
                  "options": {"ConfigPath": "/etc/inclavare-containers/config.toml"}}
    assert runtime(conf, name="")["default_runtime_name"] == "runc"
    assert conf.stat().st_mode & 0o777 == 0o640
    # idempotent: the second run writes nothing (same inode, same bytes) and says so
    inode = conf.stat().st_ino
    p = install("--config", str(conf), "--shim", "rune")
    assert p.stdout.startswith("already has runtime 'rune'") and conf.stat().st_ino == inode
    assert conf.read_text() == text


def test_runc_shim_form_default_and_switching_back(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(DEBIAN_LIKE)
    install("--config", str(conf), "--shim", "runc", "--rune", "/opt/inclavare/bin/rune", "--default")
    rt = runtime(conf)
    assert (rt["runtime_type"], rt["options"]) == ("io.containerd.runc.v2", {"BinaryName": "/opt/inclavare/bin/rune"})
    assert runtime(conf, name="")["default_runtime_name"] == "rune"
    # the shim form replaces the runc form: no BinaryName left for the shim to misread
    install("--config", str(conf), "--shim", "rune")
    assert runtime(conf)["options"] == {"ConfigPath": "/etc/inclavare-containers/config.toml"}
    p = install("--config", str(conf), "--remove")
    assert p.stdout == f"removed runtime 'rune' from {conf}\n"
    assert "rune" not in runtime(conf, name="")["runtimes"] and "default_runtime_name" not in runtime(conf, name="")
    assert install("--config", str(conf), "--remove").stdout.startswith("no runtime 'rune' in")


def test_auto_takes_the_shim_beside_rune(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("rune", "containerd-shim-rune-v2"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    conf = tmp_path / "config.toml"
    install("--config", str(conf), "--rune", str(bindir / "rune"))
    assert runtime(conf)["runtime_type"] == "io.containerd.rune.v2"
    (bindir / "containerd-shim-rune-v2").unlink()
    conf2 = tmp_path / "config2.toml"
    # neither beside rune nor on PATH (an installed shim on the machine's PATH would be taken, rightly)
    install("--config", str(conf2), "--rune", str(bindir / "rune"), env={**os.environ, "PATH": str(bindir)})
    assert runtime(conf2)["options"] == {"BinaryName": str(bindir / "rune")}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_each_config_version_and_a_new_file(tmp_path: Path, version: int) -> None:
    conf = tmp_path / "config.toml"
    if version != 1:
        conf.write_text(f"version = {version}\n")
    else:
        conf.write_text('root = "/var/lib/containerd"\n')  # no version: containerd 1.x reads it as version 1
    install("--config", str(conf), "--shim", "rune")
    assert runtime(conf, version)["runtime_type"] == "io.containerd.rune.v2"
    fresh = tmp_path / "etc" / "containerd" / "config.toml"
    install("--config", str(fresh), "--shim", "rune")
    assert tomlkit.parse(fresh.read_text())["version"] == 2 and runtime(fresh)["runtime_type"]


@pytest.mark.parametrize("text, sentence", [
    ("version = 2\n[plugins\n", "is not valid TOML"),
    ("version = 7\n", "version = 7 is not one this command knows (1, 2 or 3)"),
    ('version = 2\nplugins = "x"\n', ".plugins is not a table"),
])
def test_bad_files_are_refused_in_one_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    p = install("--config", str(conf), "--shim", "rune", check=False)
    assert p.returncode == 1 and sentence in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert conf.read_text() == text and os.listdir(tmp_path) == ["config.toml"]  # untouched, no temp file left


def test_bad_arguments(tmp_path: Path) -> None:
    p = subprocess.run([RUNE, "install", "docker"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("rune install: argument engine: invalid choice: 'docker'")


@pytest.mark.engines
def test_containerd_runs_a_sandbox_through_the_installed_handler(tmp_path_factory, rune_bin: str) -> None:
    """The edited file is what containerd 1.6 loads: a pod sandbox through the handler, then nothing left."""
    from tests.k8s import cluster as k

    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    reason = d.ensure_packages(("containerd", "skopeo", "umoci", "busybox-static"))
    if reason:
        pytest.skip(reason)
    tools, why = k.ensure_tools()
    if tools is None:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("inst")
    image = d.Image(base / "image").build()
    c = d.Containerd(base / "c")
    conf = base / "c" / "config.toml"
    c.base.mkdir(parents=True)
    conf.write_text(c.config())
    root = base / "rune-root"
    install("--config", str(conf), "--shim", "runc", "--rune", rune_bin)
    doc = tomlkit.parse(conf.read_text())
    doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["rune"]["options"]["Root"] = str(root)
    conf.write_text(tomlkit.dumps(doc))
    c.config = lambda: conf.read_text()  # start with the file as rune install left it
    try:
        c.start()
        c.ctr("-n", "k8s.io", "images", "import", str(image.pause_archive))
        dump = d.run(["containerd", "--config", str(conf), "config", "dump"]).stdout
        assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]' in dump
        ep = f"unix://{c.sock}"
        crictl = [str(tools.crictl), "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"]
        pod = base / "pod.json"
        pod.write_text(json.dumps({"metadata": {"name": "installed", "namespace": "default", "uid": uuid.uuid4().hex},
                                   "linux": {"security_context": {"namespace_options": {"network": 2}}}}))
        sandbox = d.run([*crictl, "runp", "--runtime", "rune", str(pod)]).stdout.strip()
        assert (root / "k8s.io" / sandbox / "state.json").exists()  # rune ran it
        d.run([*crictl, "stopp", sandbox])
        d.run([*crictl, "rmp", sandbox])
        assert not (root / "k8s.io" / sandbox).exists()
    finally:
        c.stop()


class StandInSystemd:
    """A private dbus-daemon and, on it, an object answering as org.freedesktop.systemd1's Manager."""

    def __init__(self, base: Path) -> None:
        self.sock = base / "bus.sock"
        conf = base / "bus.conf"
        conf.write_text(f'''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={self.sock}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*"/><allow receive_sender="*"/><allow own="*"/></policy></busconfig>''')
        self.daemon = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork", "--nopidfile"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d.wait_for(self.sock.exists, 10, "dbus-daemon")
        self.address = f"unix:path={self.sock}"
        self.calls: list[tuple] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def serve(self) -> None:
        from jeepney import HeaderFields, MessageType, new_method_return
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(self.address)
        conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.systemd1"))
        self.ready.set()
        while True:
            msg = conn.receive()
            h = msg.header
            if h.message_type == MessageType.method_call and h.fields.get(HeaderFields.member) == "RestartUnit":
                self.calls.append((h.fields[HeaderFields.path], h.fields[HeaderFields.interface], *msg.body))
                conn.send(new_method_return(msg, "o", ("/org/freedesktop/systemd1/job/42",)))
                return

    def stop(self) -> None:
        d.stop_pid(self.daemon.pid)


def test_restart_asks_systemd_over_dbus_only_when_the_file_changed(tmp_path: Path) -> None:
    pytest.importorskip("jeepney")
    if not shutil.which("dbus-daemon"):
        pytest.skip("dbus-daemon is not installed")
    systemd = StandInSystemd(tmp_path)
    conf = tmp_path / "config.toml"
    conf.write_text(DEBIAN_LIKE)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=systemd.address)
    try:
        p = subprocess.run([RUNE, "install", "containerd", "--config", str(conf), "--shim", "rune", "--restart"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[1] == "restarting containerd.service (/org/freedesktop/systemd1/job/42)"
        systemd.thread.join(10)
        assert systemd.calls == [("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                  "containerd.service", "replace")]
        # unchanged file: no restart asked (the stand-in answers no more: a call would fail)
        p = subprocess.run([RUNE, "install", "containerd", "--config", str(conf), "--shim", "rune", "--restart"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith("already has") and len(p.stdout.splitlines()) == 1, p
    finally:
        systemd.stop()
    # no bus at all: one sentence, exit 1
    p = subprocess.run([RUNE, "install", "containerd", "--config", str(tmp_path / "other.toml"), "--shim", "rune",
                        "--restart"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/none"))
    assert p.returncode == 1 and "systemd's D-Bus API is not reachable to restart containerd.service" in p.stderr


def test_a_node_with_systemd_cgroups(tmp_path: Path) -> None:
    """A kubeadm-style node (the runc handler with SystemdCgroup = true, the kubelet's cgroupDriver systemd): runc's
    shim calling rune gets SystemdCgroup too, or rune would make cgroupfs directories named SLICE:cri-containerd:ID
    outside systemd's tree; the rune shim, whose options are only ConfigPath, is pointed at its configuration."""
    conf = tmp_path / "config.toml"
    conf.write_text(DEBIAN_LIKE + '        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                                  "          SystemdCgroup = true\n")
    install("--config", str(conf), "--shim", "runc", "--rune", "/opt/inclavare/bin/rune")
    assert runtime(conf)["options"] == {"BinaryName": "/opt/inclavare/bin/rune", "SystemdCgroup": True}
    assert install("--config", str(conf), "--shim", "runc", "--rune", "/opt/inclavare/bin/rune").stdout.startswith(
        "already has runtime 'rune'")
    p = install("--config", str(conf), "--shim", "rune")
    assert runtime(conf)["options"] == {"ConfigPath": "/etc/inclavare-containers/config.toml"}
    assert p.stdout.splitlines()[1] == ("containerd's runc handler has SystemdCgroup = true: set systemd_cgroup = true "
                                        "under [rune] in /etc/inclavare-containers/config.toml for the shim to use "
                                        "the systemd cgroup driver too"), p.stdout
    # a node with cgroupfs: neither
    conf.write_text(DEBIAN_LIKE)
    p = install("--config", str(conf), "--shim", "runc", "--rune", "/opt/inclavare/bin/rune")
    assert runtime(conf)["options"] == {"BinaryName": "/opt/inclavare/bin/rune"} and len(p.stdout.splitlines()) == 1
