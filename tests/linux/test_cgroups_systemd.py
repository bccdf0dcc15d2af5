"""The systemd cgroup driver's pure parts: unit names from linux.cgroupsPath, linux.resources as unit properties
(runc's conversions), and the D-Bus connection errors. The driver against a real systemd: tests/runtime/
test_systemd_cgroup.py."""

from __future__ import annotations

import pytest

from inclavare.errors import RuneError
from inclavare.linux.cgroups import systemd
from inclavare.linux.cgroups.devices import runc_rules

U64 = (1 << 64) - 1


def props(resources: dict, v2: bool) -> dict:
    return dict(systemd.resource_props(resources, v2))


def test_unit_names_follow_runc() -> None:
    assert systemd.unit_of("id", "system.slice:cri-containerd:abc") == ("system.slice", "cri-containerd-abc.scope")
    assert systemd.unit_of("id", "kubepods-besteffort-pod1.slice:cri-containerd:abc") == (
        "kubepods-besteffort-pod1.slice", "cri-containerd-abc.scope")
    assert systemd.unit_of("id", ":docker:abc") == ("system.slice", "docker-abc.scope")
    assert systemd.unit_of("id", "-.slice:x:abc") == ("-.slice", "x-abc.scope")
    assert systemd.unit_of("id", "user.slice:x:my.slice") == ("user.slice", "my.slice")
    assert systemd.unit_of("id9", None) == ("system.slice", "runc-id9.scope")
    assert systemd.unit_of("id9", "") == ("system.slice", "runc-id9.scope")


@pytest.mark.parametrize("path, says", [
    ("/kubepods/abc", 'expected "slice:prefix:name"'),
    ("a:b", 'expected "slice:prefix:name"'),
    ("a.slice:b:c:d", 'expected "slice:prefix:name"'),
    ("system.slice:rune:", "the name of"),
    ("system.slice:ru/ne:x", "may not contain '/'"),
    ("system.slice:rune:x/y", "may not contain '/'"),
    ("system.scope:rune:x", "invalid slice name"),
    ("a--b.slice:rune:x", "invalid slice name"),
])
def test_malformed_cgroups_path_is_named(path: str, says: str) -> None:
    with pytest.raises(RuneError, match="^linux.cgroupsPath: ") as e:
        systemd.unit_of("id", path)
    assert says in str(e.value)


def test_v1_properties_as_runc() -> None:
    res = {"memory": {"limit": 64 << 20}, "cpu": {"shares": 512, "quota": 50000, "period": 100000},
           "pids": {"limit": 33}, "blockIO": {"weight": 300}}
    p = props(res, v2=False)
    assert p["MemoryLimit"] == ("t", 64 << 20)
    assert p["CPUShares"] == ("t", 512)
    assert p["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert p["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert p["TasksMax"] == ("t", 33)
    assert p["BlockIOWeight"] == ("t", 300)
    assert "MemoryMax" not in p and "CPUWeight" not in p


def test_v2_properties_as_runc() -> None:
    res = {"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 1 << 20}, "cpu": {"shares": 1024},
           "pids": {"limit": -1}, "blockIO": {"weight": 10}}
    p = props(res, v2=True)
    assert p["MemoryMax"] == ("t", 64 << 20)
    assert p["MemorySwapMax"] == ("t", 32 << 20)  # swap - limit
    assert p["MemoryLow"] == ("t", 1 << 20)
    assert p["CPUWeight"] == ("t", 39)  # runc's shares -> weight map
    assert p["TasksMax"] == ("t", U64)  # -1: unlimited
    assert p["IOWeight"] == ("t", 1)
    assert "MemoryLimit" not in p and "CPUShares" not in p


def test_unset_values_give_no_property() -> None:
    assert props({"memory": {"limit": 0}, "pids": {"limit": 0}, "cpu": {"shares": 0}}, v2=False) == {}
    assert props({}, v2=True) == {}


def test_cpu_quota_rounds_up_to_whole_percent() -> None:
    assert dict(systemd.cpu_quota(12345, 100000))["CPUQuotaPerSecUSec"] == ("t", 130000)
    assert dict(systemd.cpu_quota(50000, 0))["CPUQuotaPerSecUSec"] == ("t", 500000)  # the default period
    assert dict(systemd.cpu_quota(-1, 100000))["CPUQuotaPerSecUSec"] == ("t", U64)
    assert systemd.cpu_quota(0, 0) == []


def test_cpuset_bitmask() -> None:
    assert systemd.range_to_bits("0-3,7", "f") == bytes([0b10001111])
    assert systemd.range_to_bits("9", "f") == bytes([0, 0b10])
    p = props({"cpu": {"cpus": "0-1", "mems": "0"}}, v2=False)
    assert p["AllowedCPUs"] == ("ay", b"\x03") and p["AllowedMemoryNodes"] == ("ay", b"\x01")
    for bad in ("a-b", "3-1", "1-"):
        with pytest.raises(RuneError, match="linux.resources.cpu.cpus"):
            systemd.range_to_bits(bad, "linux.resources.cpu.cpus")


def test_unified_keys_as_properties() -> None:
    p = props({"unified": {"memory.high": "1048576", "pids.max": "max", "cpu.max": "20000 100000",
                           "io.weight": "50"}}, v2=True)
    assert p["MemoryHigh"] == ("t", 1048576)
    assert p["TasksMax"] == ("t", U64)
    assert p["CPUQuotaPerSecUSec"] == ("t", 200000)
    assert "io.weight" not in str(p)  # no property: written to the file only


def test_device_rules_become_a_strict_allow_list() -> None:
    rules = runc_rules([{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rw"}])
    p = props({"devices": rules}, v2=False)
    assert p["DevicePolicy"] == ("s", "strict")
    allow = dict(p["DeviceAllow"][1])
    assert allow["/dev/char/10:200"] == "rw"
    assert allow["/dev/char/1:3"] == "rwm"  # /dev/null, one of runc's defaults
    assert allow["char-136"] == "rwm"  # /dev/pts/*: a wildcard minor
    assert allow["char-*"] == "m" and allow["block-*"] == "m"


def test_device_rules_deny_after_allow_and_allow_all() -> None:
    rules = [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]
    assert dict(props({"devices": rules}, v2=False)["DeviceAllow"][1]) == {"/dev/char/1:3": "rm"}
    everything = props({"devices": [{"allow": True, "access": "rwm"}]}, v2=True)
    assert everything["DevicePolicy"] == ("s", "auto") and everything["DeviceAllow"] == ("a(ss)", [])
    # allow-all then a deny: systemd has no deny list; strict and empty, the cgroup files get the real rules
    blacklist = props({"devices": [{"allow": True, "access": "rwm"},
                                   {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}, v2=False)
    assert blacklist["DevicePolicy"] == ("s", "strict") and blacklist["DeviceAllow"] == ("a(ss)", [])


def test_not_booted_with_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(systemd, "BOOTED", str(tmp_path / "missing"))
    with pytest.raises(RuneError, match=r"systemd is not running as PID 1 \(.*missing is missing\)"):
        systemd.Manager("id", "system.slice:rune:id")


def test_unreachable_bus_names_every_socket_tried(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(systemd, "BOOTED", str(tmp_path))
    monkeypatch.setattr(systemd, "PRIVATE", f"unix:path={tmp_path}/private")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/bus")
    with pytest.raises(RuneError) as e:
        systemd.Bus()
    msg = str(e.value)
    assert msg.startswith("--systemd-cgroup: cannot reach systemd over D-Bus: ")
    assert f"{tmp_path}/bus (No such file or directory)" in msg
    assert f"{tmp_path}/private (No such file or directory)" in msg or "private" not in msg  # root only
