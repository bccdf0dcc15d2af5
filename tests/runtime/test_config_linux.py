"""config.json linux and the rest, observed from inside real containers: hostname, domainname, every namespace new
and joined by path, user namespaces with mappings, time namespace offsets, devices, /dev links, masked and
read-only paths, sysctl, personality."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from tests.conftest import default_config, new_id
from tests.runtime.helpers import run_ok, sh

NS_FILES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
            "cgroup": "cgroup", "time": "time"}  # fmt: skip
MAPS = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]}  # fmt: skip


@pytest.fixture
def reachable(rootfs):
    """A bundle directory and rootfs that a user namespace's root can reach (pytest's tmp is 0700, and the mapped
    root, like runc's, must traverse the path to the bundle and the rootfs)."""
    base = Path(tempfile.mkdtemp(prefix="rune-userns-", dir="/tmp"))
    base.chmod(0o755)
    (base / "rootfs").mkdir()
    sh("mount", "--bind", "-o", "ro", str(rootfs), str(base / "rootfs"))
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base / "rootfs")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def userns_bundle(rune, base: Path, args: list[str], edit=None) -> Path:
    def full(c: dict) -> None:
        c["root"]["path"] = str(base / "rootfs")
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"].update(MAPS)
        if edit is not None:
            edit(c)

    b = base / new_id("bundle")
    b.mkdir()
    c = default_config(rune.rootfs, args)
    full(c)
    (b / "config.json").write_text(json.dumps(c))
    return b


def _ns_script(kinds) -> str:
    return "; ".join(f"echo {k}=$(readlink /proc/self/ns/{NS_FILES[k]})" for k in kinds)


def _parse_ns(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_hostname_and_domainname(rune):
    out = run_ok(rune, ["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"],
                 edit=lambda c: c.update(hostname="box.example", domainname="corp.example"))
    assert out == "box.example\ncorp.example\n"


def _run_in(rune, b: Path) -> str:
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_every_namespace_new(rune, reachable):
    kinds = list(NS_FILES)

    def edit(c: dict) -> None:
        c["linux"]["namespaces"] = [{"type": k} for k in kinds]
        c["linux"]["timeOffsets"] = {"monotonic": {"secs": 1}}

    inside = _parse_ns(_run_in(rune, userns_bundle(rune, reachable, ["sh", "-c", _ns_script(kinds)], edit)))
    for k in kinds:
        host = os.readlink(f"/proc/self/ns/{NS_FILES[k]}")
        assert inside[k].startswith(NS_FILES[k] + ":[") and inside[k] != host, k


def test_namespaces_absent_are_the_hosts(rune):
    def edit(c: dict) -> None:
        c["linux"]["namespaces"] = [{"type": "mount"}]
        c.pop("hostname")

    inside = _parse_ns(run_ok(rune, ["sh", "-c", _ns_script(["network", "ipc", "uts", "pid"])], edit=edit))
    for k in ("network", "ipc", "uts", "pid"):
        assert inside[k] == os.readlink(f"/proc/self/ns/{NS_FILES[k]}")


def test_join_another_containers_namespaces_by_path(rune):
    first = new_id()
    b = rune.bundle(["sleep", "60"], edit=lambda c: c.update(hostname="first"))
    assert rune("run", "-d", "--bundle", str(b), first).returncode == 0
    try:
        pid = rune.state(first)["pid"]
        kinds = ("network", "ipc", "uts", "pid")
        want = {k: os.readlink(f"/proc/{pid}/ns/{NS_FILES[k]}") for k in kinds}

        def edit(c: dict) -> None:
            c["linux"]["namespaces"] = [{"type": k, "path": f"/proc/{pid}/ns/{NS_FILES[k]}"} for k in kinds]
            c["linux"]["namespaces"].append({"type": "mount"})
            c.pop("hostname")

        out = run_ok(rune, ["sh", "-c", _ns_script(kinds) + "; hostname; cat /proc/1/cmdline | tr '\\0' ' '"], edit=edit)
    finally:
        assert rune("delete", "--force", first).returncode == 0
    got = _parse_ns(out)
    assert {k: got[k] for k in kinds} == want
    assert out.splitlines()[-2:] == ["first", "sleep 60 "]  # its hostname, and its pid 1


def test_join_user_and_network_namespace_of_another_container(rune, reachable):
    first = new_id()
    assert rune("run", "-d", "--bundle", str(userns_bundle(rune, reachable, ["sleep", "60"])), first).returncode == 0
    try:
        pid = rune.state(first)["pid"]
        want = {k: os.readlink(f"/proc/{pid}/ns/{NS_FILES[k]}") for k in ("user", "network")}

        def edit(c: dict) -> None:
            c["linux"]["namespaces"] = [{"type": "user", "path": f"/proc/{pid}/ns/user"},
                                        {"type": "network", "path": f"/proc/{pid}/ns/net"}, {"type": "mount"},
                                        {"type": "pid"}, {"type": "ipc"}]  # fmt: skip
            del c["linux"]["uidMappings"], c["linux"]["gidMappings"]
            c.pop("hostname")

        args = ["sh", "-c", _ns_script(["user", "network"]) + "; cat /proc/self/uid_map"]
        out = _run_in(rune, userns_bundle(rune, reachable, args, edit))
    finally:
        assert rune("delete", "--force", first).returncode == 0
    got = _parse_ns(out)
    assert {k: got[k] for k in want} == want
    assert out.splitlines()[-1].split() == ["0", "100000", "65536"]


def test_user_namespace_mappings(rune, reachable):
    shared = reachable / "files"
    shared.mkdir()
    (shared / "mine").write_text("x")
    os.chown(shared / "mine", 100000 + 1000, 200000 + 1000)
    os.chown(shared, 100000, 200000)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/tmp", "type": "bind", "source": str(shared), "options": ["rbind"]})

    args = ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c '%u:%g' /tmp/mine;"
            " touch /tmp/new; stat -c '%u:%g' /proc/1/status; stat -c '%u:%g' /bin/busybox"]  # fmt: skip
    lines = _run_in(rune, userns_bundle(rune, reachable, args, edit)).splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "200000", "65536"]
    assert lines[2] == "0"
    assert lines[3] == "1000:1000"  # host 101000:201000 seen through the mapping
    assert lines[4] == "0:0"
    assert lines[5] == "65534:65534"  # the rootfs, owned by the unmapped host root, is nobody's
    st = os.stat(shared / "new")
    assert (st.st_uid, st.st_gid) == (100000, 200000)  # created as container root: the mapped host ids


def test_time_namespace_offsets(rune):
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    day = 86400 * 1000

    def edit(c: dict) -> None:
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": day, "nanosecs": 0}, "monotonic": {"secs": day}}

    out = run_ok(rune, ["sh", "-c", "cat /proc/self/timens_offsets; cat /proc/uptime"], edit=edit)
    lines = out.splitlines()
    offsets = {line.split()[0]: line.split()[1:] for line in lines[:2]}
    assert offsets == {"monotonic": [str(day), "0"], "boottime": [str(day), "0"]}
    assert float(lines[2].split()[0]) >= host_uptime + day


def test_default_devices_and_links(rune):
    out = run_ok(rune, ["sh", "-c", "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d;"
                        " done; for l in fd stdin stdout stderr ptmx; do echo /dev/$l=$(readlink /dev/$l); done;"
                        " echo hi | cat /dev/stdin; ls /dev/fd/ | head -1; test -d /dev/pts &&"
                        " test -d /dev/shm && echo dirs; head -c 4 /dev/zero | wc -c; echo x > /dev/full || true"])  # fmt: skip
    lines = out.splitlines()
    want = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}
    for line, (name, numbers) in zip(lines[:6], want.items(), strict=True):
        assert line == f"/dev/{name} character special file {numbers} 666"
    links = dict(line.split("=", 1) for line in lines[6:11])
    assert links == {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                     "/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx"}  # fmt: skip
    assert lines[11:] == ["hi", "0", "dirs", "4"]


def test_linux_devices_custom_node(rune):
    def edit(c: dict) -> None:
        c["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640,
                                  "uid": 1000, "gid": 1000},
                                 {"path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5}]  # fmt: skip
        c["process"]["user"] = {"uid": 1000, "gid": 1000}  # root has no CAP_DAC_OVERRIDE here: use the owner

    out = run_ok(rune, ["sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/mynull /dev/sub/myzero; echo x > /dev/mynull"
                        " && echo wrote; head -c 3 /dev/sub/myzero | wc -c"], edit=edit)  # fmt: skip
    assert out.splitlines() == ["character special file 1:3 640 1000:1000", "character special file 1:5 666 0:0",
                                "wrote", "3"]  # fmt: skip


def test_masked_paths(rune):
    def edit(c: dict) -> None:
        c["linux"]["maskedPaths"] += ["/proc/cpuinfo", "/etc", "/does/not/exist"]

    out = run_ok(rune, ["sh", "-c", "cat /proc/kcore | wc -c; cat /proc/cpuinfo | wc -c; ls /etc | wc -l;"
                        " ls /proc/acpi | wc -l; ls /sys/firmware | wc -l; touch /etc/x 2>&1 | grep -c Read-only"],
                 edit=edit)  # fmt: skip
    assert out.split() == ["0", "0", "0", "0", "0", "1"]


def test_readonly_paths(rune):
    def edit(c: dict) -> None:
        c["linux"]["readonlyPaths"] += ["/tmp", "/does/not/exist"]
        c["root"]["readonly"] = False

    out = run_ok(rune, ["sh", "-c", "(echo 1 > /proc/sys/kernel/shm_rmid_forced) 2>&1; echo rc=$?; touch /tmp/x 2>&1;"
                        " echo rc=$?; cat /proc/sys/kernel/ostype"], edit=edit)  # fmt: skip
    assert out.count("Read-only file system") == 2 and out.count("rc=1") == 2
    assert out.endswith("Linux\n")  # still readable


def test_sysctl(rune):
    def edit(c: dict) -> None:
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}

    out = run_ok(rune, ["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shm_rmid_forced"], edit=edit)
    assert out == "1\n1\n"


def test_sysctl_that_would_change_the_host_is_refused(rune):
    b = rune.bundle(["true"], edit=lambda c: c["linux"].update(sysctl={"vm.swappiness": "10"}))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1
    assert p.stderr == f"{b}/config.json: linux.sysctl.vm.swappiness: is not namespaced: a container may not change it\n"


@pytest.mark.parametrize(("domain", "machine"), [("LINUX32", "i686"), ("LINUX", os.uname().machine)])
def test_personality(rune, domain, machine):
    if os.uname().machine != "x86_64" and domain == "LINUX32":
        pytest.skip("LINUX32 shows as i686 on x86_64 only")
    out = run_ok(rune, ["uname", "-m"], edit=lambda c: c["linux"].update(personality={"domain": domain}))
    assert out == machine + "\n"
