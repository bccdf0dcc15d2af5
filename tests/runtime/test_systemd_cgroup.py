"""`rune --systemd-cgroup` against a real systemd: systemd (the host's /lib/systemd/systemd) runs as PID 1 of a rune
container with a cgroup namespace and its own cgroup subtree mounted read-write (on a v1/hybrid host the hybrid
layout: a tmpfs with every v1 hierarchy and cgroup2 at unified, as rune mounts "cgroup" with a cgroup namespace;
systemd 252 runs in hybrid mode there). Its root filesystem is the host's /usr read-only (/bin, /lib, /lib64, /sbin
as merged-usr symlinks), a small writable /etc, tmpfs /run and /tmp, container=rune in the environment; the checkout,
its Python and the busybox root filesystem are bound at their own paths. rune then runs *inside* it (`rune exec`
into the box) with --systemd-cgroup, directly, under containerd's runc shim and under containerd's CRI plugin (containerd
a transient service of the box's systemd), and the tests look at the scopes through systemctl and the cgroup files.

The errors without systemd as PID 1, with a bad linux.cgroupsPath and with no reachable bus run on the host or in a
second container without systemd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from tests.conftest import REPO, cgroup_leftovers, default_config, imported, new_id

SYSTEMD = "/lib/systemd/systemd"
INNER_ROOTFS = "/inner-rootfs"
RUNE = str(REPO / "bin" / "rune")
CAPS = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
        "NET_BIND_SERVICE NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_CHROOT SYS_PTRACE SYS_ADMIN SYS_BOOT SYS_NICE "
        "MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP SYSLOG").split()


def _host_v2() -> bool:
    return not os.path.isdir("/sys/fs/cgroup/memory") and os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def box_config(base: Path, args: list[str], shared: list[str]) -> dict:
    """A bundle config whose root is the host's /usr (read-only) and a writable /etc, /var: enough for systemd."""
    root = base / "rootfs"
    for d in ("usr", "etc", "proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/lib", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin"),
                         ("var/run", "../run")):
        if not (root / link).is_symlink() and os.path.lexists("/" + target.replace("../", "")):
            (root / link).symlink_to(target)
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    if os.path.exists("/usr/lib/os-release"):
        (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/nonexistent:/bin/false\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nmessagebus:x:101:\nnogroup:x:65534:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")  # what containerd's CRI copies into pods
    (root / "etc/resolv.conf").write_text("")
    c = default_config(root, args)
    c["root"] = {"path": str(root), "readonly": False}
    c["process"]["env"] += ["container=rune"]
    c["process"]["noNewPrivileges"] = False
    caps = ["CAP_" + x for x in CAPS]
    c["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    mounts = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]})
    mounts.append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
    for d in ("/run", "/tmp"):
        mounts.append({"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]})
    for d in shared:
        mounts.append({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]})
    c["mounts"] = mounts
    linux = c["linux"]
    linux.pop("maskedPaths", None)
    linux.pop("readonlyPaths", None)
    # every device, as a privileged container: the containers made inside may allow what an engine asks for
    linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    if not any(ns["type"] == "cgroup" for ns in linux["namespaces"]):
        linux["namespaces"].append({"type": "cgroup"})
    return c


def shared_paths(tmp_base: Path) -> list[str]:
    """What rune needs inside the box, bound at its own path: the checkout, the interpreter, the test files."""
    paths = []
    for p in (str(REPO), sys.base_prefix, sys.prefix, str(tmp_base)):
        p = os.path.realpath(p)
        if p.startswith("/usr/") or p == "/usr":
            continue  # in the box already
        if p not in paths and not any(p.startswith(q + "/") for q in paths):
            paths.append(p)
    return paths


class Box:
    """The systemd container, and rune inside it."""

    def __init__(self, rune_bin: str, root: Path, cid: str) -> None:
        self.rune_bin = rune_bin
        self.root = root
        self.id = cid
        self.inner_root = f"/run/rune-inner-{uuid.uuid4().hex[:8]}"
        self.exec_flags = ["--cgroup", "init.scope"] if _host_v2() else []  # cgroup2: no process in the root

    def sh(self, script: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Files, not pipes: a detached inner container keeps its stdio open, as with runc."""
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run([self.rune_bin, "--root", str(self.root), "exec", *self.exec_flags, *flags, self.id,
                                "/bin/sh", "-c", script], stdout=out, stderr=err, text=True, timeout=timeout)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        return p

    def rune(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.sh(" ".join(_quote(a) for a in [RUNE, "--root", self.inner_root, *args]), env=env)

    def show(self, unit: str, *names: str) -> dict:
        p = self.sh(f"systemctl show {' '.join('-p ' + n for n in names)} {unit}")
        assert p.returncode == 0, p.stderr
        return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)

    def read(self, path: str) -> str:
        p = self.sh(f"cat {_quote(path)}")
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def write(self, path: str, text: str) -> None:
        p = self.sh(f"mkdir -p {_quote(os.path.dirname(path))} && printf %s {_quote(text)} > {_quote(path)}")
        assert p.returncode == 0, p.stderr

    def exists(self, path: str) -> bool:
        return self.sh(f"test -e {_quote(path)}").returncode == 0


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.fixture(scope="module")
def box(rune_bin: str, rootfs: Path, tmp_path_factory: pytest.TempPathFactory):
    """systemd as PID 1 of a rune container, up (`systemctl is-system-running --wait`)."""
    if not os.access(SYSTEMD, os.X_OK):
        pytest.skip(f"{SYSTEMD} is not installed (the test runs the host's systemd in a container)")
    if not os.path.exists("/usr/bin/dbus-daemon"):
        pytest.skip("dbus-daemon is not installed (the box's system bus)")
    base = tmp_path_factory.mktemp("systemd-box")
    base.chmod(0o755)
    tmp_base = tmp_path_factory.getbasetemp()
    bundle = base / "bundle"
    bundle.mkdir()
    config = box_config(bundle, [SYSTEMD], shared_paths(tmp_base))
    # the busybox rootfs again where a user namespace's root can reach it (pytest's tmp is 0700)
    config["mounts"].append({"destination": INNER_ROOTFS, "type": "bind", "source": str(rootfs),
                             "options": ["rbind", "ro"]})
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    root = base / "root"
    cid = new_id("sd")
    with open(base / "console.log", "w") as out:
        p = subprocess.run([rune_bin, "--root", str(root), "run", "-d", "--bundle", str(bundle), cid], stdout=out,
                           stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, (base / "console.log").read_text()
    b = Box(rune_bin, root, cid)
    try:
        # "running" or "degraded" (a unit that needs more than this small /etc may fail): systemd is up
        deadline = time.monotonic() + 120
        while True:  # until systemd has made its private socket, systemctl cannot connect
            up = b.sh("systemctl is-system-running --wait", timeout=120)
            if "Failed to connect" not in up.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert up.stdout.strip() in ("running", "degraded"), (up.stdout, up.stderr,
                                                              (base / "console.log").read_text()[-3000:])
        yield b
    finally:
        b.sh(f"for c in $(ls {b.inner_root} 2>/dev/null); do {RUNE} --systemd-cgroup --root {b.inner_root} "
             f"delete --force $c; done")
        subprocess.run([rune_bin, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=60)
        assert not (root / cid).exists()


def inner_bundle(rootfs: Path, tmp: Path, cgroups_path: str, resources: dict | None = None,
                 args: tuple[str, ...] = ("sleep", "1000")) -> Path:
    b = tmp / f"inner-{uuid.uuid4().hex[:8]}"
    b.mkdir()
    b.chmod(0o755)
    c = default_config(rootfs, list(args))
    c["linux"]["cgroupsPath"] = cgroups_path
    if resources:
        c["linux"]["resources"] = resources
    (b / "config.json").write_text(json.dumps(c, indent=1))
    return b


def _pid(box: Box, cid: str) -> int:
    p = box.rune("state", cid)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["pid"]


def _cgroup_dir(box: Box, controller: str, rel: str) -> str:
    if box.exists("/sys/fs/cgroup/memory"):
        return f"/sys/fs/cgroup/{controller}{rel}"
    return f"/sys/fs/cgroup{rel}"


@pytest.mark.parametrize("bus", ["system bus", "private socket"])
def test_scope_with_limits_then_gone_after_delete(box: Box, rootfs: Path, tmp_path: Path, bus: str) -> None:
    tmp_path.chmod(0o755)
    cid = new_id("sc")
    env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"} if bus == "private socket" else None
    resources = {"memory": {"limit": 64 << 20}, "pids": {"limit": 33},
                 "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    b = inner_bundle(rootfs, tmp_path, f"system.slice:rune:{cid}", resources)
    # the flag where runc's callers (containerd's shim, kubelet's) put it: a global flag before the command
    p = box.rune("--systemd-cgroup", "run", "-d", "--bundle", str(b), cid, env=env)
    assert p.returncode == 0, p.stderr
    unit = f"rune-{cid}.scope"
    v1 = box.exists("/sys/fs/cgroup/memory")
    show = box.show(unit, "ActiveState", "Slice", "Delegate", "DefaultDependencies", "ControlGroup", "TasksMax",
                    "MemoryLimit" if v1 else "MemoryMax", "CPUShares" if v1 else "CPUWeight", "CPUQuotaPerSecUSec",
                    "DevicePolicy", "Description")
    assert show["ActiveState"] == "active"
    assert show["Slice"] == "system.slice" and show["Delegate"] == "yes" and show["DefaultDependencies"] == "no"
    assert show["ControlGroup"] == f"/system.slice/{unit}"
    assert show["Description"] == f"rune container {cid}"
    assert show["TasksMax"] == "33"
    assert show["MemoryLimit" if v1 else "MemoryMax"] == str(64 << 20)
    assert show["CPUShares" if v1 else "CPUWeight"] == ("512" if v1 else "20")
    assert show["CPUQuotaPerSecUSec"] == "500ms"
    assert show["DevicePolicy"] == "strict"
    # the container's process is in the scope, in every hierarchy
    pid = _pid(box, cid)
    cgroup = box.read(f"/proc/{pid}/cgroup").splitlines()
    assert cgroup and all(line.endswith(f"/system.slice/{unit}") for line in cgroup), cgroup
    # the limits in the cgroup files
    rel = f"/system.slice/{unit}"
    if v1:
        assert box.read(_cgroup_dir(box, "memory", rel) + "/memory.limit_in_bytes") == str(64 << 20)
        assert box.read(_cgroup_dir(box, "cpu", rel) + "/cpu.shares") == "512"
        assert box.read(_cgroup_dir(box, "cpu", rel) + "/cpu.cfs_quota_us") == "50000"
    else:
        assert box.read(_cgroup_dir(box, "memory", rel) + "/memory.max") == str(64 << 20)
    assert box.read(_cgroup_dir(box, "pids", rel) + "/pids.max") == "33"
    # systemd re-applying the unit (daemon-reload) keeps the container's device rules (DevicePolicy=strict)
    if v1:
        before = box.read(_cgroup_dir(box, "devices", rel) + "/devices.list")
        assert box.sh("systemctl daemon-reload").returncode == 0
        assert box.read(_cgroup_dir(box, "devices", rel) + "/devices.list") == before
        assert "a *:* rwm" not in before
    # rune update: the unit's properties and the files
    p = box.rune("--systemd-cgroup", "update", "--memory", str(128 << 20), "--pids-limit", "50", cid, env=env)
    assert p.returncode == 0, p.stderr
    show = box.show(unit, "TasksMax", "MemoryLimit" if v1 else "MemoryMax")
    assert show["TasksMax"] == "50" and show["MemoryLimit" if v1 else "MemoryMax"] == str(128 << 20)
    assert box.read(_cgroup_dir(box, "pids", rel) + "/pids.max") == "50"
    # delete: the unit is stopped and forgotten, its directories gone
    p = box.rune("--systemd-cgroup", "delete", "--force", cid, env=env)
    assert p.returncode == 0, p.stderr
    assert box.show(unit, "LoadState")["LoadState"] == "not-found"
    for ctrl in ("memory", "pids", "cpuset", "freezer") if v1 else ("memory",):
        assert not box.exists(_cgroup_dir(box, ctrl, rel)), ctrl


def test_nested_slice_and_create_start_delete(box: Box, rootfs: Path, tmp_path: Path) -> None:
    """The engines' sequence (create, start, kill, delete) in a slice of a slice; the slice made by systemd."""
    tmp_path.chmod(0o755)
    cid = new_id("ns")
    b = inner_bundle(rootfs, tmp_path, f"machine-rune.slice:cri-containerd:{cid}")
    for args in (("create", "--bundle", str(b), cid), ("start", cid)):
        p = box.rune("--systemd-cgroup", *args)
        assert p.returncode == 0, (args, p.stderr)
    unit = f"cri-containerd-{cid}.scope"
    show = box.show(unit, "ActiveState", "ControlGroup", "Slice")
    assert show == {"ActiveState": "active", "ControlGroup": f"/machine.slice/machine-rune.slice/{unit}",
                    "Slice": "machine-rune.slice"}
    pid = _pid(box, cid)
    assert f"/machine.slice/machine-rune.slice/{unit}" in box.read(f"/proc/{pid}/cgroup")
    # the commands that work from the cgroup paths in the state: ps, pause, resume, events --stats
    p = box.rune("ps", "--format", "json", cid)
    assert p.returncode == 0 and json.loads(p.stdout) == [pid], (p.stdout, p.stderr)
    assert box.rune("pause", cid).returncode == 0
    assert json.loads(box.rune("state", cid).stdout)["status"] == "paused"
    assert box.rune("resume", cid).returncode == 0
    p = box.rune("events", "--stats", cid)
    assert p.returncode == 0 and json.loads(p.stdout)["data"]["pids"]["current"] == 1, (p.stdout, p.stderr)
    assert box.rune("kill", cid, "9").returncode == 0
    for _ in range(200):
        if json.loads(box.rune("state", cid).stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    p = box.rune("--systemd-cgroup", "delete", cid)
    assert p.returncode == 0, p.stderr
    assert box.show(unit, "LoadState")["LoadState"] == "not-found"


@pytest.mark.parametrize("namespaces", [["user"], ["cgroup"], ["user", "cgroup"]])
def test_init_in_the_scope_before_its_namespaces(box: Box, namespaces: list) -> None:
    """The scope is made with the init's pid after the fork; the init enters its namespaces only once it is in it: a
    new cgroup namespace is rooted at the scope (the limit is the scope's), and through a user namespace's
    intermediate process too."""
    cid = new_id("ns")
    script = ("cat /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
              "cat /sys/fs/cgroup/memory.max")
    c = default_config(Path(INNER_ROOTFS), ["sh", "-c", script])
    c["linux"]["cgroupsPath"] = f"system.slice:rune:{cid}"
    c["linux"]["resources"] = {"memory": {"limit": 48 << 20}}
    c["linux"]["namespaces"] += [{"type": t} for t in namespaces]
    if "user" in namespaces:
        c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b = f"/run/bundle-{cid}"  # in the box, reachable by the mapped root
    box.write(f"{b}/config.json", json.dumps(c))
    p = box.rune("--systemd-cgroup", "run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    want = ":/" if "cgroup" in namespaces else f":/system.slice/rune-{cid}.scope"
    assert all(line.endswith(want) for line in lines[:-1]), p.stdout
    assert lines[-1] == str(48 << 20)
    assert box.show(f"rune-{cid}.scope", "LoadState")["LoadState"] == "not-found"  # run deletes it on exit


@pytest.mark.parametrize("v2", [False, True])
def test_every_property_is_taken_by_systemd(box: Box, v2: bool) -> None:
    """Every unit property rune sends, with its D-Bus signature, as systemd 252 takes it: a transient slice (which
    needs no process) gets the properties of a full linux.resources, for cgroup v1 and for cgroup v2 (systemd keeps
    the v2 ones on a hybrid host too), then is stopped."""
    unit = f"rune-props-{uuid.uuid4().hex[:8]}.slice"
    resources = {"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 1 << 20},
                 "cpu": {"shares": 512, "quota": 25000, "period": 50000, "cpus": "0", "mems": "0"},
                 "pids": {"limit": 40}, "blockIO": {"weight": 200},
                 "devices": [{"allow": False, "access": "rwm"},
                             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                             {"allow": True, "type": "c", "major": 136, "access": "rw"}]}
    if v2:
        resources["unified"] = {"memory.high": str(60 << 20)}
    script = (f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); from inclavare.linux.cgroups import systemd; "
              f"b = systemd.Bus(); b.start_transient_unit({unit!r}, [('Description', ('s', 'rune test')), "
              f"*systemd.resource_props({resources!r}, {v2!r})])")
    p = box.sh(f"{sys.executable} -I -c {_quote(script)}")
    assert p.returncode == 0, p.stderr
    try:
        names = ["TasksMax", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec", "AllowedCPUs", "AllowedMemoryNodes",
                 "DevicePolicy", "DeviceAllow"]
        names += ["MemoryMax", "MemoryLow", "MemorySwapMax", "MemoryHigh", "CPUWeight", "IOWeight"] if v2 else \
            ["MemoryLimit", "CPUShares", "BlockIOWeight"]
        show = box.show(unit, *names)
        want = {"TasksMax": "40", "CPUQuotaPerSecUSec": "500ms", "CPUQuotaPeriodUSec": "50ms", "AllowedCPUs": "0",
                "AllowedMemoryNodes": "0", "DevicePolicy": "strict"}
        if v2:
            want.update(MemoryMax=str(64 << 20), MemoryLow=str(1 << 20), MemorySwapMax=str(32 << 20),
                        MemoryHigh=str(60 << 20), CPUWeight="20", IOWeight="1920")
        else:
            want.update(MemoryLimit=str(64 << 20), CPUShares="512", BlockIOWeight="200")
        assert {k: show.get(k) for k in want} == want, show
        allow = box.sh(f"systemctl show -p DeviceAllow {unit}").stdout
        assert "DeviceAllow=/dev/char/1:3 rwm" in allow and "DeviceAllow=char-136 rw" in allow, allow
    finally:
        box.sh(f"systemctl stop {unit}")


def test_unit_of_the_same_name_refused_and_nothing_left(box: Box, rootfs: Path, tmp_path: Path) -> None:
    """A failure after the init exists (systemd refuses the unit): one sentence, exit 1, no state, no init, no
    cgroup; the container that has the unit keeps it."""
    tmp_path.chmod(0o755)
    first, second = new_id("u1"), new_id("u2")
    path = f"system.slice:rune:shared-{first}"
    b = inner_bundle(rootfs, tmp_path, path)
    assert box.rune("--systemd-cgroup", "run", "-d", "--bundle", str(b), first).returncode == 0
    try:
        log = f"/run/{second}.log.json"  # in the box (the test's files are bound read-only)
        p = box.rune("--systemd-cgroup", "--log", log, "--log-format", "json", "run", "-d", "--bundle", str(b),
                     second)
        assert p.returncode == 1
        msg = p.stderr.strip().splitlines()[-1]
        assert "cannot create the systemd unit rune-shared-" in msg and "exists already" in msg, p.stderr
        assert json.loads(box.read(log).splitlines()[-1])["msg"] in msg
        assert box.rune("state", second).returncode == 1
        assert not box.exists(f"{box.inner_root}/{second}")
        assert box.show(f"rune-shared-{first}.scope", "ActiveState")["ActiveState"] == "active"
        procs = box.sh(f"systemd-cgls --no-pager -u rune-shared-{first}.scope").stdout
        assert procs.count("sleep 1000") == 1, procs  # the refused container's init is gone
    finally:
        assert box.rune("--systemd-cgroup", "delete", "--force", first).returncode == 0


class BoxContainerd:
    """containerd inside the box, a transient service of its systemd, with every path under `state` (the box's
    /run); its CRI runtime handler "rune" is this checkout's rune with SystemdCgroup = true."""

    def __init__(self, box: Box, state: str, image) -> None:  # noqa: ANN001 - tests.engines.daemons.Image
        self.box, self.state, self.image = box, state, image
        self.sock = f"{state}/containerd.sock"
        self.service = f"{state[5:]}.service"
        self.ctr = f"ctr -a {self.sock}"

    def config(self) -> str:
        from tests.engines import daemons

        st = self.state
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return "\n".join([
            "version = 2", f'root = "{st}/root"', f'state = "{st}/state"',
            "[grpc]", f'  address = "{self.sock}"', "[ttrpc]", f'  address = "{self.sock}.ttrpc"',
            f"{cri}]", f'  sandbox_image = "{daemons.PAUSE_IMAGE}"', "  restrict_oom_score_adj = true",
            f"  {cri}.cni]", f'    bin_dir = "{st}/cni/bin"', f'    conf_dir = "{st}/cni/conf"',
            f"  {cri}.containerd]", '    snapshotter = "overlayfs"', '    default_runtime_name = "rune"',
            f"    {cri}.containerd.runtimes.rune]", '      runtime_type = "io.containerd.runc.v2"',
            f"      {cri}.containerd.runtimes.rune.options]", f'        BinaryName = "{RUNE}"',
            f'        Root = "{st}/cri-rune"', "        SystemdCgroup = true", ""])

    def start(self, conf: Path) -> None:
        conf.write_text(self.config())
        # this checkout's bin/ first: runtime type io.containerd.rune.v2 resolves to its containerd-shim-rune-v2
        path = f"{REPO}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        p = self.box.sh(f"systemd-run --unit={self.service} -p Delegate=yes --setenv=PATH={path} "
                        f"containerd --config {conf}")
        assert p.returncode == 0, p.stderr
        for _ in range(300):
            if self.box.sh(f"{self.ctr} version").returncode == 0:
                break
            time.sleep(0.1)
        for archive, ns in ((self.image.oci_archive, "default"), (self.image.oci_archive, "k8s.io"),
                            (self.image.pause_archive, "k8s.io")):
            p = self.box.sh(f"{self.ctr} -n {ns} images import {archive}")
            assert p.returncode == 0, p.stderr

    def stop(self) -> None:
        self.box.sh(f"systemctl stop {self.service}; systemctl reset-failed {self.service}; "
                    f"umount -R {self.state} 2>/dev/null; rm -rf {self.state}")


@pytest.fixture(scope="module")
def box_containerd(box: Box, tmp_path_factory: pytest.TempPathFactory):
    from tests.engines import daemons

    missing = [b for b in ("containerd", "ctr", "containerd-shim-runc-v2", "umoci", "skopeo") if not shutil.which(b)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    image = daemons.Image(tmp_path_factory.mktemp("sd-image")).build()
    conf = tmp_path_factory.mktemp("sd-ctd") / "config.toml"
    conf.parent.chmod(0o755)
    c = BoxContainerd(box, f"/run/ctd-{uuid.uuid4().hex[:8]}", image)
    try:
        c.start(conf)
        yield c
    finally:
        c.stop()


@pytest.mark.engines
def test_containerd_with_systemd_cgroup(box: Box, box_containerd: BoxContainerd) -> None:
    """containerd's runc shim with SystemdCgroup (ctr's --runc-systemd-cgroup sets the same runc option) calls
    `rune --root R --log L --log-format json --systemd-cgroup create ...`: the global flag before the command, and a
    cgroupsPath "slice:prefix:name"."""
    from tests.engines import daemons

    ctr = box_containerd.ctr
    cid = new_id("ctr")
    p = box.sh(f"{ctr} run --rm --runc-binary {RUNE} --runc-systemd-cgroup --cgroup system.slice:ctr:{cid} "
               f"{daemons.IMAGE} {cid} cat /proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines and all(line.endswith(f":/system.slice/ctr-{cid}.scope") for line in lines), p.stdout
    assert box.show(f"ctr-{cid}.scope", "LoadState")["LoadState"] == "not-found"  # removed with the task
    # detached, then killed and deleted through containerd
    cid = new_id("ctr")
    p = box.sh(f"{ctr} run -d --runc-binary {RUNE} --runc-systemd-cgroup --cgroup system.slice:ctr:{cid} "
               f"{daemons.IMAGE} {cid} sleep 1000")
    assert p.returncode == 0, p.stderr
    assert box.show(f"ctr-{cid}.scope", "ActiveState")["ActiveState"] == "active"
    assert box.sh(f"{ctr} task kill -s 9 {cid}").returncode == 0
    for _ in range(200):
        if "STOPPED" in box.sh(f"{ctr} task ls").stdout:
            break
        time.sleep(0.05)
    p = box.sh(f"{ctr} task delete {cid} && {ctr} container delete {cid}")
    assert p.returncode == 0, p.stderr
    assert box.show(f"ctr-{cid}.scope", "LoadState")["LoadState"] == "not-found"


@pytest.mark.engines
def test_rune_shim_with_systemd_cgroup_from_its_configuration(box: Box, box_containerd: BoxContainerd,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """containerd-shim-rune-v2 takes the driver from `[rune] systemd_cgroup = true` in its configuration: containerd
    sends runc's options (SystemdCgroup) only to io.containerd.runc.v2 handlers, so a CRI handler or ctr of runtime
    io.containerd.rune.v2 has no other way to ask for it. Its container is in the scope, which goes with it."""
    from tests.engines import daemons, shimd

    conf_dir = tmp_path_factory.mktemp("sd-shim")
    conf_dir.chmod(0o755)
    state = box_containerd.state
    conf = shimd.write_config(conf_dir / "shim.toml", Path(state), rune={"systemd_cgroup": True})
    conf.chmod(0o644)
    ctr = box_containerd.ctr
    flags = f"--runtime {shimd.RUNTIME} --runtime-config-path {conf}"
    cid = new_id("shim")
    p = box.sh(f"{ctr} run --rm {flags} --cgroup system.slice:shim:{cid} {daemons.IMAGE} {cid} cat /proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines and all(line.endswith(f":/system.slice/shim-{cid}.scope") for line in lines), p.stdout
    assert box.show(f"shim-{cid}.scope", "LoadState")["LoadState"] == "not-found"  # removed with the task
    # without the key, the same cgroupsPath is a cgroupfs path, as runc's cgroupfs driver takes it
    plain = shimd.write_config(conf_dir / "plain.toml", Path(state))
    plain.chmod(0o644)
    cid = new_id("shim")
    p = box.sh(f"{ctr} run --rm --runtime {shimd.RUNTIME} --runtime-config-path {plain} "
               f"--cgroup system.slice:shim:{cid} {daemons.IMAGE} {cid} cat /proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    assert f":/system.slice:shim:{cid}" in p.stdout, p.stdout


@pytest.mark.engines
def test_cri_pod_in_a_kubelet_slice(box: Box, box_containerd: BoxContainerd) -> None:
    """The CRI plugin with SystemdCgroup = true, as a kubelet with cgroupDriver systemd drives it: the pod's
    cgroup_parent is a slice, and the sandbox and its container each get a scope "cri-containerd-ID.scope" in it
    (cgroupsPath SLICE:cri-containerd:ID); stopping and removing them removes the scopes."""
    from tests.engines.test_cri import CRI, NODE, RUNNING, WAIT_FOR_TERM, _grpc, s

    pid = json.loads(subprocess.run([box.rune_bin, "--root", str(box.root), "state", box.id], capture_output=True,
                                    text=True, check=True).stdout)["pid"]
    cri = CRI(_grpc(), f"/proc/{pid}/root{box_containerd.sock}")  # the box's socket, reached from the host
    slice_ = f"kubepods-besteffort-pod{uuid.uuid4().hex[:12]}.slice"
    parent = "/kubepods.slice/kubepods-besteffort.slice/" + slice_
    meta = [(1, s("pod")), (2, s(uuid.uuid4().hex)), (3, s("rune-test"))]
    pod_config = [(1, meta), (8, [(1, s(slice_)), (2, [(1, [(1, NODE)])])])]  # linux: cgroup_parent, network NODE
    from inclavare.tee.sgx import protobuf as pb

    try:
        pod = pb.first(cri.call("RunPodSandbox", [(1, pod_config), (2, s("rune"))]), 1).decode()
        show = box.show(f"cri-containerd-{pod}.scope", "ActiveState", "ControlGroup", "Slice")
        assert show == {"ActiveState": "active", "ControlGroup": f"{parent}/cri-containerd-{pod}.scope",
                        "Slice": slice_}
        cid = cri.create(pod, pod_config, "c1", ["sh", "-c", WAIT_FOR_TERM])
        cri.call("StartContainer", [(1, s(cid))])
        assert cri.status(cid)[0] == RUNNING
        out, _, code = cri.exec_sync(cid, ["cat", "/proc/self/cgroup"])  # the pod shares one pid namespace
        lines = out.decode().split()
        assert code == 0 and lines, out
        assert all(line.endswith(f":{parent}/cri-containerd-{cid}.scope") for line in lines), out.decode()
        assert box.show(f"cri-containerd-{cid}.scope", "ActiveState")["ActiveState"] == "active"
        cri.call("StopContainer", [(1, s(cid)), (2, 10)])
        cri.call("RemoveContainer", [(1, s(cid))])
        assert box.show(f"cri-containerd-{cid}.scope", "LoadState")["LoadState"] == "not-found"
        cri.call("StopPodSandbox", [(1, s(pod))])
        cri.call("RemovePodSandbox", [(1, s(pod))])
        assert box.show(f"cri-containerd-{pod}.scope", "LoadState")["LoadState"] == "not-found"
    finally:
        cri.close()


def test_create_killed_after_the_unit_then_delete_force(box: Box, rootfs: Path, tmp_path: Path) -> None:
    """`rune create` SIGKILLed while a createRuntime hook runs (the scope exists, the init waits in it): the unit's
    name is in the state, and `delete --force` leaves no unit, state or process."""
    tmp_path.chmod(0o755)
    cid = new_id("kc")
    b = inner_bundle(rootfs, tmp_path, f"system.slice:rune:{cid}")
    c = json.loads((b / "config.json").read_text())
    c["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "997"]}]}
    (b / "config.json").write_text(json.dumps(c))
    unit = f"rune-{cid}.scope"
    p = box.sh(f"{RUNE} --systemd-cgroup --root {box.inner_root} create --bundle {b} {cid} >/dev/null 2>&1 & "
               "echo $!")
    creator = int(p.stdout.strip())
    for _ in range(400):
        if box.show(unit, "ActiveState")["ActiveState"] == "active" and "sleep 997" in box.sh("ps -eo args").stdout:
            break
        time.sleep(0.05)
    assert box.show(unit, "ActiveState")["ActiveState"] == "active"
    assert box.sh(f"kill -9 {creator}").returncode == 0
    assert box.exists(f"{box.inner_root}/{cid}/state.json")
    assert "systemd_unit" in box.read(f"{box.inner_root}/{cid}/state.json")
    p = box.rune("delete", "--force", cid)  # no flag: the unit comes from the state
    assert p.returncode == 0, p.stderr
    assert box.show(unit, "LoadState")["LoadState"] == "not-found"
    assert not box.exists(f"{box.inner_root}/{cid}")
    # the hook outlived its rune (as with runc): ended by its pid, found in the box's own pid namespace
    hook = box.sh("ps -eo pid=,args= | awk '$2 == \"sleep\" && $3 == \"997\" {print $1}'").stdout.split()
    for pid in hook:
        box.sh(f"kill -9 {pid}")


# --- without systemd ------------------------------------------------------------------------------------------------

def _no_leftovers(rune, cid: str) -> None:
    assert not (rune.root / cid).exists()
    assert not cgroup_leftovers(cid)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/system.slice/*{cid}*"))


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd is PID 1 on this host")
def test_no_systemd_as_pid1_is_one_sentence(rune, tmp_path: Path) -> None:
    cid = new_id()
    b = rune.bundle(["true"], edit=lambda c: c["linux"].update(cgroupsPath=f"system.slice:rune:{cid}"))
    log = tmp_path / "log"
    p = rune("--systemd-cgroup", "--log", str(log), "run", "--bundle", str(b), cid)
    assert p.returncode == 1
    want = ("--systemd-cgroup: systemd is not running as PID 1 (/run/systemd/system is missing); the systemd cgroup "
            "driver needs it (drop the flag to use cgroupfs)")
    assert p.stderr.strip() == want
    assert want in log.read_text()
    _no_leftovers(rune, cid)
    # the other commands take the flag (containerd's shim passes it to each) and need no systemd
    assert rune("--systemd-cgroup", "delete", "--force", cid).returncode == 0
    assert rune("--systemd-cgroup", "list").returncode == 0


@pytest.mark.parametrize("path", ["/kubepods/pod1/abc", "system.slice:abc", "system.scope:rune:abc",
                                  "system.slice:rune:", "system.slice:rune:pod.slice"])
def test_malformed_cgroups_path(rune, tmp_path: Path, path: str) -> None:
    cid = new_id()
    b = rune.bundle(["true"], edit=lambda c: c["linux"].update(cgroupsPath=path))
    log = tmp_path / "log"
    p = rune("--systemd-cgroup", "--log", str(log), "--log-format", "json", "create", "--bundle", str(b), cid)
    assert p.returncode == 1
    msg = p.stderr.strip()
    assert msg.startswith(f"{b}/config.json: linux.cgroupsPath: "), msg
    assert "slice" in msg and msg.count("\n") == 0
    assert json.loads(log.read_text())["msg"] == msg
    _no_leftovers(rune, cid)


def test_unreachable_bus(rune_bin: str, rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """systemd booted (/run/systemd/system exists) but neither its bus nor its private socket reachable: a second
    container, without systemd, in which rune runs with --systemd-cgroup. The failure comes after the init was
    forked: nothing may be left (state, init, cgroup)."""
    base = tmp_path_factory.mktemp("nobus")
    base.chmod(0o755)
    inner = inner_bundle(rootfs, base, "system.slice:rune:nobus")
    root = "/run/rune-nobus"
    script = (f"mkdir -p /run/systemd/system; {RUNE} --systemd-cgroup --root {root} --log /run/log run -d --bundle "
              f"{inner} nobus; echo rc=$?; echo state=$(ls -A {root}); "
              "echo cgroups=$(find /sys/fs/cgroup -name '*nobus*'); echo procs=$(pgrep -c sleep); cat /run/log")
    bundle = base / "bundle"
    bundle.mkdir()
    config = box_config(bundle, ["/bin/sh", "-c", script], shared_paths(tmp_path_factory.getbasetemp()))
    config["process"]["env"].append("DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/no-bus")
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    cid = new_id("nb")
    p = subprocess.run([rune_bin, "--root", str(base / "root"), "run", "--bundle", str(bundle), cid],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    want = ("--systemd-cgroup: cannot reach systemd over D-Bus: /run/no-bus (No such file or directory); "
            "/run/systemd/private (No such file or directory)")
    assert lines[:4] == ["rc=1", "state=", "cgroups=", "procs=0"], p.stdout + p.stderr
    assert p.stderr.strip() == want
    assert want in "\n".join(lines[4:])  # the --log file


def test_the_cgroupfs_hot_path_never_loads_the_driver(rune) -> None:
    b = rune.bundle(["true"])
    mods = imported(rune, "run", "--bundle", str(b), new_id())
    assert "inclavare.linux.cgroups" in mods
    assert not [m for m in mods if m.startswith("jeepney") or m == "inclavare.linux.cgroups.systemd"]
    # a container without a unit: delete needs no D-Bus either
    mods = imported(rune, "--systemd-cgroup", "delete", "--force", new_id())
    assert not [m for m in mods if m.startswith("jeepney")]
