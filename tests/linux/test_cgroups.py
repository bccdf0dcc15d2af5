"""inclavare.linux.cgroups against the real kernel, as root: every test makes its own uniquely named cgroups, puts real
processes in them, observes the effect from outside, and removes the cgroups again (also when it fails).

cgroup v2 behaviour is exercised on a cgroup2 mount (the unified one on a hybrid host) through a Manager given a
Host that has only that mount; what a hybrid host cannot show for real on v2 (memory, cpu, io translations) is
covered by the planner's unit tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from inclavare.errors import RuneError
from inclavare.linux import cgroups
from inclavare.linux.cgroups import Manager, devices, host_mode, v2
from inclavare.linux.cgroups.files import Item
from inclavare.linux.cgroups.host import Host, clean, expand_slice, parse_mountinfo, systemd_path

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
ROOT = os.geteuid() == 0
HOST = cgroups.host.host() if os.path.exists("/proc/self/mountinfo") else None

needs_root = pytest.mark.skipif(not ROOT, reason="cgroups need root")


def v1_has(*controllers: str) -> pytest.MarkDecorator:
    ok = HOST is not None and host_mode() != "v2" and all(c in HOST.v1 for c in controllers)
    return pytest.mark.skipif(not (ROOT and ok), reason=f"needs root and cgroup v1 {'/'.join(controllers)}")


needs_cgroup2 = pytest.mark.skipif(not (ROOT and HOST is not None and HOST.unified),
                                   reason="needs root and a cgroup2 mount")


# --- fixtures ---------------------------------------------------------------------------------------------------------

class Lab:
    """Makes uniquely named managers and child processes, and cleans both up."""

    def __init__(self, name: str) -> None:
        self.name = name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
        self.managers: list[Manager] = []
        self.children: list[subprocess.Popen] = []
        self.count = 0

    def cid(self) -> str:
        self.count += 1
        return f"rune-test-{os.getpid()}-{self.name}-{self.count}"

    def manager(self, cgroups_path: str | None = None, *, v2_only: bool = False, cid: str | None = None) -> Manager:
        host = Host({}, HOST.unified) if v2_only else None
        m = Manager(cid or self.cid(), cgroups_path, host=host)
        self.managers.append(m)
        return m

    def child(self, code: str) -> subprocess.Popen:
        """A Python child that waits for a line on stdin before running `code` (so it can be joined first)."""
        script = "import sys\nsys.stdin.readline()\n" + code
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.children.append(proc)
        return proc

    def go(self, proc: subprocess.Popen) -> None:
        proc.stdin.write("go\n")
        proc.stdin.flush()

    def cleanup(self) -> list[str]:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        left = []
        for m in self.managers:
            if m.freezer_state() == "FROZEN":
                m.thaw()
            m.destroy()
            left += [p for p in m.paths.values() if os.path.exists(p)]
        return left


@pytest.fixture
def lab(request):
    lab = Lab(request.node.name)
    try:
        yield lab
    finally:
        left = lab.cleanup()
        assert not left, f"cgroups left behind: {left}"


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- host detection and paths (pure) ----------------------------------------------------------------------------------

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


def test_mountinfo_hybrid_v1_v2() -> None:
    h = parse_mountinfo(HYBRID_MOUNTINFO)
    assert h.mode == "hybrid"
    assert h.v1["cpu"] == h.v1["cpuacct"] == ("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert h.v1["name=systemd"][0] == "/sys/fs/cgroup/systemd"
    assert "xattr" not in h.v1 and "rw" not in h.v1
    assert h.unified == "/sys/fs/cgroup/unified"
    v1_only = parse_mountinfo("\n".join(HYBRID_MOUNTINFO.splitlines()[:4]))
    assert v1_only.mode == "v1" and v1_only.unified is None
    pure = parse_mountinfo("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert pure.mode == "v2" and pure.unified == "/sys/fs/cgroup" and pure.v1 == {}
    escaped = parse_mountinfo(r"30 23 0:26 / /mnt/my\040cg rw - cgroup2 cgroup2 rw" + "\n")
    assert escaped.unified == "/mnt/my cg"


def test_host_mode_matches_this_host() -> None:
    mode = host_mode()
    with open("/proc/self/mountinfo") as f:
        types = {line.split(" - ")[1].split()[0] for line in f if " - cgroup" in line}
    expected = {frozenset({"cgroup2"}): "v2", frozenset({"cgroup"}): "v1",
                frozenset({"cgroup", "cgroup2"}): "hybrid"}[frozenset(types)]
    assert mode == expected


def test_paths_default_absolute_relative() -> None:
    h = parse_mountinfo(HYBRID_MOUNTINFO)
    m = Manager("abc", None, host=h)
    assert m.paths == {"cpu": "/sys/fs/cgroup/cpu,cpuacct/abc", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/abc",
                       "memory": "/sys/fs/cgroup/memory/abc", "name=systemd": "/sys/fs/cgroup/systemd/abc",
                       "": "/sys/fs/cgroup/unified/abc"}
    assert Manager("abc", "/default/x/../abc", host=h).paths["memory"] == "/sys/fs/cgroup/memory/default/abc"
    # Relative: under our own cgroup (cgroup2: its parent), as runc's fs drivers do.
    own = cgroups.host.own_cgroups()
    rel = Manager("abc", "pod/abc", host=h).paths
    assert rel["memory"] == "/sys/fs/cgroup/memory" + own.get("memory", "/").rstrip("/") + "/pod/abc"
    assert rel[""] == "/sys/fs/cgroup/unified" + os.path.dirname(own[""]).rstrip("/") + "/pod/abc"
    assert clean("../../etc") == "etc" and clean("/a/../../b") == "/b"
    with pytest.raises(RuneError, match="linux.cgroupsPath"):
        Manager("abc", "/", host=h)


def test_systemd_path_mapping() -> None:
    assert systemd_path("id1", "system.slice:docker:abc") == "/system.slice/docker-abc.scope"
    assert systemd_path("id1", "machine-pod.slice:crio:abc") == "/machine.slice/machine-pod.slice/crio-abc.scope"
    assert systemd_path("id1", "-.slice:runc:abc") == "/runc-abc.scope"
    assert systemd_path("id1", ":runc:abc") == "/system.slice/runc-abc.scope"
    assert systemd_path("id1", None) == "/system.slice/runc-id1.scope"
    assert systemd_path("id1", "user.slice:x:my.slice") == "/user.slice/my.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    for bad in ("a--b.slice", "-a.slice", "a.scope", "a/b.slice", ".slice"):
        with pytest.raises(RuneError, match="linux.cgroupsPath: invalid slice name"):
            expand_slice(bad)
    with pytest.raises(RuneError, match='expected "slice:prefix:name"'):
        systemd_path("id1", "/not/systemd")
    m = Manager("abc", "system.slice:docker:abc", systemd=True, host=parse_mountinfo(HYBRID_MOUNTINFO))
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/system.slice/docker-abc.scope"


# --- v1 -> v2 translations (pure) --------------------------------------------------------------------------------------

def test_cpu_shares_to_weight() -> None:
    assert v2.cpu_weight(0) == 0
    assert v2.cpu_weight(2) == 1
    assert v2.cpu_weight(1024) == 39
    assert v2.cpu_weight(262144) == 10000


def test_blkio_weight_to_io_weight() -> None:
    assert v2.io_weight(0) == 0
    assert v2.io_weight(10) == 1
    assert v2.io_weight(500) == 4950
    assert v2.io_weight(1000) == 10000


def test_swap_to_swap_max() -> None:
    assert v2.swap_max(0, -1) == -1
    assert v2.swap_max(-1, 100) == -1
    assert v2.swap_max(0, 100) == 0
    assert v2.swap_max(300, 100) == 200
    with pytest.raises(RuneError, match="linux.resources.memory.swap: must be at least"):
        v2.swap_max(50, 100)
    with pytest.raises(RuneError, match="linux.resources.memory.swap: cannot be set without a memory limit"):
        v2.swap_max(300, 0)


def plan_v2(section: str, value: object) -> dict[str, list[str]]:
    out: list[Item] = []
    v2.PLANNERS[section](value, out)
    files: dict[str, list[str]] = {}
    for item in out:
        files.setdefault(item.file, []).append(item.value)
        if item.fallback:
            files.setdefault("fallback:" + item.fallback.file, []).append(item.fallback.value)
    return files


def test_v2_plans_translate_like_runc() -> None:
    assert plan_v2("memory", {"limit": 1 << 20, "swap": 3 << 20, "reservation": 1 << 19, "swappiness": 10,
                              "kernel": 5, "disableOOMKiller": True}) == {
        "memory.max": [str(1 << 20)], "memory.swap.max": [str(2 << 20)], "memory.low": [str(1 << 19)]}
    assert plan_v2("memory", {"limit": -1}) == {"memory.max": ["max"], "memory.swap.max": ["max"]}
    assert plan_v2("cpu", {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0-1",
                           "mems": "0", "idle": 1}) == {
        "cpu.weight": ["39"], "cpu.max": ["50000 100000"], "cpu.max.burst": ["1000"], "cpu.idle": ["1"],
        "cpuset.cpus": ["0-1"], "cpuset.mems": ["0"]}
    assert plan_v2("cpu", {"quota": -1, "period": 100000}) == {"cpu.max": ["max 100000"]}
    assert plan_v2("pids", {"limit": -1}) == {"pids.max": ["max"]}
    assert plan_v2("pids", {"limit": 10}) == {"pids.max": ["10"]}
    assert plan_v2("blockIO", {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
                               "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                               "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}]}) == {
        "io.bfq.weight": ["500", "8:0 100"], "fallback:io.weight": ["4950", f"8:0 {v2.io_weight(100)}"],
        "io.max": ["8:0 rbps=1000", "8:16 wiops=max"]}
    assert plan_v2("hugepageLimits", [{"pageSize": "2MB", "limit": 4 << 20}]) == {
        "hugetlb.2MB.max": [str(4 << 20)], "hugetlb.2MB.rsvd.max": [str(4 << 20)]}
    assert plan_v2("unified", {"memory.high": "1M"}) == {"memory.high": ["1M"]}
    with pytest.raises(RuneError, match="linux.resources.cpu.realtimeRuntime: real-time"):
        plan_v2("cpu", {"realtimeRuntime": 1000})
    with pytest.raises(RuneError, match="linux.resources.unified.../x: not a cgroup v2 file name"):
        plan_v2("unified", {"../x": "1"})


def test_device_rules_v1_lines_and_program_shape() -> None:
    rules = devices.parse([{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                               "access": "wr"}, {"allow": True, "type": "b",
                                                                                 "major": 8, "access": "m"}])
    assert [r.line() for r in rules] == ["a", "c 1:3 rw", "b 8:* m"]
    # v1: deny everything first (a new cgroup inherits its parent's list), then the rules in order
    assert [i.file for i in devices.v1_items(rules)] == ["devices.deny", "devices.deny", "devices.allow",
                                                         "devices.allow"]
    assert devices.v1_items(devices.parse([{"allow": True, "type": "c", "major": 1, "minor": 3}]))[0].value == "a"
    # prologue 6, rule "b 8:* m": type + 3 access + major + mov/exit = 7, "c 1:3 rw": 1+3+1+1+2 = 8,
    # "a": unconditional mov/exit = 2 (and nothing after it).
    assert len(devices.program(rules)) == 8 * (6 + 7 + 8 + 2)
    assert len(devices.program([])) == 8 * (6 + 2)
    with pytest.raises(RuneError, match=r"linux.resources.devices\[0\].access: must be a combination"):
        devices.parse([{"allow": True, "access": "rwx"}])
    with pytest.raises(RuneError, match=r"linux.resources.devices\[0\].allow: is required \(true or false\)"):
        devices.parse([{"access": "rwm"}])
    defaults = devices.runc_rules([{"allow": False, "access": "rwm"}], [{"type": "c", "major": 10, "minor": 200}])
    assert defaults[0] == {"allow": False, "access": "rwm"} and defaults[1]["major"] == 10
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in defaults


# --- real cgroups: v1 / hybrid ----------------------------------------------------------------------------------------

@v1_has("memory")
def test_memory_limit_written_and_updated(lab: Lab) -> None:
    m = lab.manager()
    m.create({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10, "kernelTCP": 16 << 20}})
    mem = m.paths["memory"]
    assert read(mem + "/memory.limit_in_bytes") == str(64 << 20)
    assert read(mem + "/memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(mem + "/memory.swappiness") == "10"
    assert read(mem + "/memory.kmem.tcp.limit_in_bytes") == str(16 << 20)
    # Raising above the current memsw limit needs memsw first; the Manager finds the order that works.
    if os.path.exists(mem + "/memory.memsw.limit_in_bytes"):
        m.update({"memory": {"limit": 48 << 20, "swap": 48 << 20}})
        m.update({"memory": {"limit": 128 << 20, "swap": 128 << 20}})
        assert read(mem + "/memory.memsw.limit_in_bytes") == str(128 << 20)
    else:
        m.update({"memory": {"limit": 128 << 20}})
    assert read(mem + "/memory.limit_in_bytes") == str(128 << 20)


@v1_has("memory")
def test_memory_limit_oom_kills_allocator(lab: Lab) -> None:
    m = lab.manager()
    limit = 48 << 20
    res = {"memory": {"limit": limit}}
    if os.path.exists(f"{HOST.v1['memory'][0]}/memory.memsw.limit_in_bytes"):
        res["memory"]["swap"] = limit  # no swapping out of the limit
    m.create(res)
    proc = lab.child("data = b'x' * (256 << 20)\nprint('survived', len(data))")
    m.join(proc.pid)
    lab.go(proc)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -9, (proc.returncode, out)
    assert "survived" not in out
    stats = m.stats()
    assert stats["memory"]["usage"]["limit"] == limit
    oom = dict(line.split() for line in read(m.paths["memory"] + "/memory.oom_control").splitlines())
    assert int(oom.get("oom_kill", "1")) >= 1


@v1_has("pids")
def test_pids_limit_makes_fork_fail(lab: Lab) -> None:
    m = lab.manager()
    m.create({"pids": {"limit": 5}})
    code = """
import os, time
kids = []
try:
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    print("forked", len(kids))
except BlockingIOError:
    print("EAGAIN after", len(kids))
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
"""
    proc = lab.child(code)
    m.join(proc.pid)
    lab.go(proc)
    out, err = proc.communicate(timeout=30)
    assert out.strip() == "EAGAIN after 4", (out, err)
    assert m.stats()["pids"]["limit"] == 5


COUNTER = """
import os
fd = os.open(sys.argv[1] if len(sys.argv) > 1 else PATH, os.O_WRONLY | os.O_CREAT, 0o600)
n = 0
while True:
    n += 1
    if n % 1000 == 0:
        os.pwrite(fd, str(n).encode().ljust(20), 0)
"""


def counter(lab: Lab, path: str) -> subprocess.Popen:
    return lab.child(f"PATH = {path!r}\n" + COUNTER)


def progress(path: str, seconds: float = 0.3) -> int:
    before = int(read(path) or 0)
    time.sleep(seconds)
    return int(read(path) or 0) - before


def check_freeze(lab: Lab, m: Manager, tmp_path) -> None:
    path = str(tmp_path / "count")
    proc = counter(lab, path)
    m.join(proc.pid)
    lab.go(proc)
    deadline = time.monotonic() + 10
    while not os.path.exists(path) or not read(path):
        assert time.monotonic() < deadline, "the counter never started"
        time.sleep(0.01)
    assert progress(path) > 0
    assert m.freezer_state() == "THAWED"
    m.freeze()
    assert m.freezer_state() == "FROZEN"
    assert progress(path) == 0
    m.thaw()
    assert m.freezer_state() == "THAWED"
    assert progress(path) > 0


@v1_has("freezer")
def test_freeze_v1_stops_progress(lab: Lab, tmp_path) -> None:
    m = lab.manager()
    m.create(None)
    check_freeze(lab, m, tmp_path)


@v1_has("cpuacct", "memory", "pids")
def test_stats_report_numbers(lab: Lab) -> None:
    m = lab.manager()
    m.create({"memory": {"limit": 256 << 20}, "pids": {"limit": 50}})
    proc = lab.child("data = b'y' * (20 << 20)\nimport time\nt = time.time()\nwhile time.time() - t < 0.3: pass\n"
                     "print('ready', flush=True)\nsys.stdin.readline()")
    m.join(proc.pid)
    lab.go(proc)
    assert proc.stdout.readline().strip() == "ready"
    s = m.stats()
    assert s["cpu"]["usage"]["total"] > 100_000_000  # ns: at least 0.1 s of the busy loop
    assert len(s["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert s["cpu"]["usage"]["user"] + s["cpu"]["usage"]["kernel"] > 0
    assert s["memory"]["usage"]["usage"] >= 20 << 20
    assert s["memory"]["usage"]["limit"] == 256 << 20
    assert s["memory"]["raw"]["rss"] >= 20 << 20 or s["memory"]["raw"].get("anon", 0) >= 20 << 20
    assert s["pids"] == {"current": 1, "limit": 50}
    assert set(s) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
    assert m.pids() == [proc.pid]
    lab.go(proc)
    proc.wait(timeout=10)


@v1_has("devices")
def test_v1_devices_deny_null(lab: Lab) -> None:
    m = lab.manager()
    m.create({"devices": [{"allow": True, "access": "rwm"},
                          {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    assert "c 1:3" not in read(m.paths["devices"] + "/devices.list")
    assert open_devices(lab, m) == "null:EPERM zero:ok"


def open_devices(lab: Lab, m: Manager) -> str:
    proc = lab.child("""
res = []
for name in ("null", "zero"):
    try:
        open("/dev/" + name, "rb").close()
        res.append(name + ":ok")
    except PermissionError:
        res.append(name + ":EPERM")
print(" ".join(res))
""")
    m.join(proc.pid)
    lab.go(proc)
    out, err = proc.communicate(timeout=10)
    return out.strip() or err


@v1_has("cpuset", "cpu")
def test_cpu_values_and_nested_path_cleanup(lab: Lab) -> None:
    cid = lab.cid()
    m = lab.manager(f"/rune-test-parent-{cid}/{cid}", cid=cid)
    m.create({"cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"}})
    assert read(m.paths["cpu"] + "/cpu.shares") == "512"
    assert read(m.paths["cpu"] + "/cpu.cfs_quota_us") == "20000"
    assert read(m.paths["cpuset"] + "/cpuset.cpus") == "0"
    proc = lab.child("print(open('/proc/self/status').read().split('Cpus_allowed_list:')[1].split()[0])")
    m.join(proc.pid)  # a new v1 cpuset (and its new parent) got cpus/mems, or this would fail with ENOSPC
    lab.go(proc)
    assert proc.communicate(timeout=10)[0].strip() == "0"
    # A sub-cgroup made inside (as systemd in a container would) does not stop destroy().
    os.mkdir(m.paths["memory"] + "/inner")
    parent = os.path.dirname(m.paths["memory"])
    m.destroy()
    assert not os.path.exists(parent), "the parent create() made is removed too"


def a_block_device() -> tuple[int, int] | None:
    for name in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        if name.startswith(("vd", "sd", "nvme", "xvd")):
            major, minor = read(f"/sys/block/{name}/dev").split(":")
            return int(major), int(minor)
    return None


@v1_has("blkio")
def test_blkio_throttle_written(lab: Lab) -> None:
    dev = a_block_device()
    if dev is None:
        pytest.skip("no disk to throttle")
    major, minor = dev
    m = lab.manager()
    m.create({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
                          "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]}})
    assert read(m.paths["blkio"] + "/blkio.throttle.read_bps_device") == f"{major}:{minor} 1048576"
    assert read(m.paths["blkio"] + "/blkio.throttle.write_iops_device") == f"{major}:{minor} 100"


@v1_has("memory")
def test_check_before_update_refuses_limit_below_usage(lab: Lab) -> None:
    m = lab.manager()
    m.create({"memory": {"limit": 256 << 20}})
    proc = lab.child("data = b'z' * (30 << 20)\nprint('ready', flush=True)\nsys.stdin.readline()")
    m.join(proc.pid)
    lab.go(proc)
    assert proc.stdout.readline().strip() == "ready"
    with pytest.raises(RuneError, match=r"^linux.resources.memory.limit: 8388608 is below the current memory usage "):
        m.update({"memory": {"limit": 8 << 20, "checkBeforeUpdate": True}})
    assert read(m.paths["memory"] + "/memory.limit_in_bytes") == str(256 << 20)
    assert proc.poll() is None


@needs_root
def test_bad_values_name_the_field(lab: Lab) -> None:
    m = lab.manager()
    with pytest.raises(RuneError) as err:
        m.create({"memory": {"limit": "abc"}})
    assert str(err.value) == "linux.resources.memory.limit: must be an integer, got 'abc'"
    assert not m.exists(), "a bad value fails before anything is made"
    with pytest.raises(RuneError, match=r"^linux.resources.pids.limit: must be an integer, got true$"):
        m.create({"pids": {"limit": True}})
    with pytest.raises(RuneError, match=r"^linux.resources.memory.swappiness: must be 0 to 100, got 200$"):
        m.create({"memory": {"swappiness": 200}})
    with pytest.raises(RuneError, match=r"^linux.resources.blockIO.throttleReadBpsDevice\[0\].rate: must be a "):
        m.create({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": -5}]}})
    with pytest.raises(RuneError, match=r"^linux.resources: must be an object"):
        m.create([1])  # type: ignore[arg-type]


@v1_has("cpuset")
def test_kernel_refusal_names_field_file_and_errno(lab: Lab) -> None:
    m = lab.manager()
    with pytest.raises(RuneError) as err:
        m.create({"cpu": {"cpus": "99-200"}})
    msg = str(err.value)
    assert msg.startswith("linux.resources.cpu.cpus: the kernel refused '99-200' in ")
    assert m.paths["cpuset"] + "/cpuset.cpus" in msg
    assert msg.endswith(f"({os.strerror(34)})") or msg.endswith(f"({os.strerror(22)})"), msg
    m.destroy()
    assert not m.exists()


@needs_root
def test_unified_on_v1_only_host_is_refused(lab: Lab) -> None:
    v1_only = Host({k: v for k, v in HOST.v1.items()}, None)
    if v1_only.mode != "v1":
        pytest.skip("no v1 controllers here")
    m = Manager(lab.cid(), None, host=v1_only)
    lab.managers.append(m)
    with pytest.raises(RuneError, match="^linux.resources.unified: this host has no cgroup v2 hierarchy"):
        m.create({"unified": {"memory.high": "1M"}})


@pytest.mark.skipif(not (ROOT and HOST is not None and HOST.mode == "hybrid"), reason="needs a hybrid host")
def test_hybrid_unified_keys_and_hugetlb_go_to_the_cgroup2_dir(lab: Lab) -> None:
    m = lab.manager()
    if "hugetlb" in HOST.v1 or "hugetlb" not in HOST.unified_controllers():
        pytest.skip("hugetlb is not a cgroup2-only controller here")
    m.create({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
              "unified": {"hugetlb.1GB.max": str(1 << 30)}})
    assert read(m.unified + "/hugetlb.2MB.max") == str(4 << 20)
    assert read(m.unified + "/hugetlb.1GB.max") == str(1 << 30)
    with pytest.raises(RuneError, match=r"^linux.resources.unified.memory.high: .*memory.high does not exist"):
        m.update({"unified": {"memory.high": "1M"}})


@needs_root
def test_from_paths_rebuilds_the_manager(lab: Lab) -> None:
    m = lab.manager()
    m.create(None)
    proc = lab.child("")
    m.join(proc.pid)
    again = Manager.from_paths(m.id, dict(m.paths))
    assert again.mode == m.mode and again.paths == m.paths
    assert again.pids() == [proc.pid]
    lab.go(proc)
    proc.wait(timeout=10)
    again.destroy()
    assert not m.exists()
    m.destroy()  # missing directories are fine


# --- real cgroups: v2 (on the cgroup2 mount) --------------------------------------------------------------------------

@needs_cgroup2
def test_v2_device_program_denies_dev_null(lab: Lab) -> None:
    m = lab.manager(v2_only=True)
    assert m.mode == "v2" and list(m.paths) == [""]
    assert m.paths[""].startswith(HOST.unified + "/")
    m.create({"devices": [{"allow": True, "access": "rwm"},
                          {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    assert open_devices(lab, m) == "null:EPERM zero:ok"
    # update replaces the program (no stacking): allowing everything lets /dev/null open again.
    m.update({"devices": [{"allow": True, "access": "rwm"}]})
    assert open_devices(lab, m) == "null:ok zero:ok"
    from inclavare.linux.cgroups import bpf
    fd = os.open(m.unified, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(bpf.query_device_progs(fd)) == 1
    finally:
        os.close(fd)
    # Read-only access: reading /dev/null is allowed, writing is not.
    m.update({"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                              "access": "r"}, {"allow": True, "type": "c",
                                                                               "major": 1, "minor": 5}]})
    proc = lab.child("""
open('/dev/null', 'rb').close()
try:
    open('/dev/null', 'wb')
    print('write ok')
except PermissionError:
    print('write EPERM')
""")
    m.join(proc.pid)
    lab.go(proc)
    out, err = proc.communicate(timeout=10)
    assert out.strip() == "write EPERM", err


@needs_cgroup2
def test_freeze_v2_stops_progress(lab: Lab, tmp_path) -> None:
    m = lab.manager(v2_only=True)
    m.create(None)
    check_freeze(lab, m, tmp_path)


@needs_cgroup2
def test_v2_missing_controller_names_field_and_file(lab: Lab) -> None:
    m = lab.manager(v2_only=True)
    if "pids" in HOST.unified_controllers():
        pytest.skip("pids is available on cgroup2 here")
    with pytest.raises(RuneError) as err:
        m.create({"pids": {"limit": 10}})
    assert str(err.value) == (f"linux.resources.pids.limit: {m.unified}/pids.max does not exist (the pids controller "
                              f"or this feature is not available in this cgroup)")
    m.destroy()


@needs_cgroup2
def test_v2_pids_recursive_and_stats(lab: Lab) -> None:
    m = lab.manager(v2_only=True)
    m.create(None)
    os.mkdir(m.unified + "/sub")
    a = lab.child("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\nprint('ready', flush=True)\n"
                  "sys.stdin.readline()")
    b = lab.child("")
    m.join(a.pid)
    with open(m.unified + "/sub/cgroup.procs", "w") as f:
        f.write(str(b.pid))
    assert sorted(m.pids()) == sorted([a.pid, b.pid])
    lab.go(a)
    assert a.stdout.readline().strip() == "ready"
    s = m.stats()
    assert s["cpu"]["usage"]["total"] >= 100_000_000  # ns
    assert s["cpu"]["usage"]["user"] > 0
    for p in (a, b):
        lab.go(p)
        p.wait(timeout=10)


# --- cost ----------------------------------------------------------------------------------------------------------

def test_import_is_cheap() -> None:
    out = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c",
                          f"import sys; sys.path.insert(0, {os.path.abspath(SRC)!r}); import inclavare.linux.cgroups"],
                         capture_output=True, text=True, check=True).stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in out.splitlines() if "|" in line}
    forbidden = {"re", "json", "enum", "dataclasses", "signal", "subprocess", "typing", "pathlib", "logging",
                 "argparse", "ctypes", "struct"}
    assert not loaded & forbidden, loaded & forbidden


@needs_root
def test_create_join_destroy_is_fast(lab: Lab) -> None:
    """A runc-like default: deny-all devices plus runc's default allowed ones; the process exits before destroy."""
    rules = devices.runc_rules([{"allow": False, "access": "rwm"}])
    times = []
    for _ in range(15):
        proc = lab.child("")
        m = lab.manager()
        t0 = time.perf_counter()
        m.create({"devices": rules})
        m.join(proc.pid)
        t1 = time.perf_counter()
        lab.go(proc)
        proc.wait(timeout=10)
        t2 = time.perf_counter()
        m.destroy()
        t3 = time.perf_counter()
        assert not m.exists()
        times.append((t1 - t0) + (t3 - t2))
    times.sort()
    median = times[len(times) // 2]
    print(f"create+join+destroy on a {host_mode()} host: median {median * 1000:.2f} ms, "
          f"min {times[0] * 1000:.2f} ms, max {times[-1] * 1000:.2f} ms")
    assert median < 0.02


def test_v1_devices_refuse_a_deny_inside_a_wildcard_allow() -> None:
    """The v1 controller cannot punch a hole in `c *:* rwm`: refused (as runc does) rather than applied wrongly."""
    rules = devices.parse([{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "c", "access": "rwm"},
                           {"allow": False, "type": "c", "major": 10, "minor": 200, "access": "rwm"}])
    with pytest.raises(RuneError, match=r"devices\[2\]: the cgroup v1 devices controller cannot deny 'c 10:200 rwm'"):
        devices.v1_items(rules)


def test_v1_devices_without_a_deny_all_rule_start_from_deny_all(lab: Lab) -> None:
    m = lab.manager()
    m.create({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"}]})
    assert read(m.paths["devices"] + "/devices.list").split("\n") == ["c 1:5 rwm"]
    assert open_devices(lab, m) == "null:EPERM zero:ok"


def test_v2_device_program_partial_deny_blocks_a_combined_request() -> None:
    """allow c 1:3 rwm, then deny c 1:3 w: an open for read+write is denied, a read-only open allowed."""
    prog = devices.program(devices.parse([{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                                          {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]))
    # interpret the few opcodes the generator emits, on a context (access << 16 | type, major, minor)
    def run(access: int) -> int:
        ctx = [(access << 16) | 2, 1, 3]
        regs = [0] * 11
        pc = 0
        while True:
            code, regbyte = prog[pc * 8], prog[pc * 8 + 1]
            dst, src = regbyte & 0xF, regbyte >> 4
            off = int.from_bytes(prog[pc * 8 + 2 : pc * 8 + 4], "little", signed=True)
            imm = int.from_bytes(prog[pc * 8 + 4 : pc * 8 + 8], "little", signed=True) & 0xFFFFFFFF
            pc += 1
            if code == 0x61:
                regs[dst] = ctx[off // 4]
            elif code == 0x54:
                regs[dst] &= imm
            elif code == 0x74:
                regs[dst] >>= imm
            elif code == 0xBC:
                regs[dst] = regs[src]
            elif code == 0xB7:
                regs[dst] = imm
            elif code == 0x56 and regs[dst] != imm or code == 0x5E and regs[dst] != regs[src]:
                pc += off
            elif code == 0x16 and regs[dst] == imm:
                pc += off
            elif code == 0x95:
                return regs[0]

    assert run(2 | 4) == 0  # read + write: the deny of w applies
    assert run(2) == 1  # read only: allowed


def test_v2_swap_equal_to_the_limit_means_no_swap() -> None:
    """docker --memory X --memory-swap X: memory.swap.max is 0, not left at max."""
    from inclavare.linux.cgroups import v2

    out: list = []
    v2.memory({"limit": 104857600, "swap": 104857600}, out)
    assert [(i.file, i.value) for i in out] == [("memory.max", "104857600"), ("memory.swap.max", "0")]

