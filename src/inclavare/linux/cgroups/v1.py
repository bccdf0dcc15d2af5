"""linux.resources -> cgroup v1 file writes, one planner per resources section."""

from __future__ import annotations

from .files import Item
from .values import PREFIX, array, boolean, device_number, integer, mapping, out_of_range, string, unsigned

# Which v1 controllers each resources section needs.
CONTROLLERS = {
    "memory": ("memory",),
    "cpu": ("cpu", "cpuset"),
    "pids": ("pids",),
    "blockIO": ("blkio",),
    "hugepageLimits": ("hugetlb",),
    "network": ("net_cls", "net_prio"),
    "rdma": ("rdma",),
    "devices": ("devices",),
}


def memory(res: object, out: list[Item]) -> None:
    f = PREFIX + "memory"
    res = mapping(res, f)
    for key, file in (("limit", "memory.limit_in_bytes"), ("swap", "memory.memsw.limit_in_bytes"),
                      ("reservation", "memory.soft_limit_in_bytes"), ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        if res.get(key) is not None and (value := integer(res[key], f"{f}.{key}")) != 0:
            out.append(Item("memory", file, str(value), f"{f}.{key}"))
    if res.get("kernel") is not None and (value := integer(res["kernel"], f + ".kernel")) != 0:
        # Deprecated by the kernel (5.4) and gone from newer ones: skipped where the file no longer exists.
        out.append(Item("memory", "memory.kmem.limit_in_bytes", str(value), f + ".kernel", optional=True))
    if res.get("swappiness") is not None:
        value = integer(res["swappiness"], f + ".swappiness")
        if value != -1:  # Docker's "unset"
            if not 0 <= value <= 100:
                raise out_of_range(f + ".swappiness", value, "0 to 100")
            out.append(Item("memory", "memory.swappiness", str(value), f + ".swappiness"))
    if res.get("disableOOMKiller") is not None and boolean(res["disableOOMKiller"], f + ".disableOOMKiller"):
        out.append(Item("memory", "memory.oom_control", "1", f + ".disableOOMKiller"))
    if res.get("useHierarchy") is not None:
        value = boolean(res["useHierarchy"], f + ".useHierarchy")
        out.append(Item("memory", "memory.use_hierarchy", "1" if value else "0", f + ".useHierarchy"))
    if res.get("checkBeforeUpdate") is not None:
        boolean(res["checkBeforeUpdate"], f + ".checkBeforeUpdate")


def cpu(res: object, out: list[Item]) -> None:
    f = PREFIX + "cpu"
    res = mapping(res, f)
    if res.get("shares") is not None and (value := unsigned(res["shares"], f + ".shares")) != 0:
        out.append(Item("cpu", "cpu.shares", str(value), f + ".shares"))
    # The period first: files.apply retries it after the quota when the kernel wants the other order.
    if res.get("period") is not None and (value := unsigned(res["period"], f + ".period")) != 0:
        out.append(Item("cpu", "cpu.cfs_period_us", str(value), f + ".period"))
    if res.get("quota") is not None and (value := integer(res["quota"], f + ".quota")) != 0:
        out.append(Item("cpu", "cpu.cfs_quota_us", str(value), f + ".quota"))
    if res.get("burst") is not None:
        out.append(Item("cpu", "cpu.cfs_burst_us", str(unsigned(res["burst"], f + ".burst")), f + ".burst"))
    if res.get("realtimePeriod") is not None and (value := unsigned(res["realtimePeriod"], f + ".realtimePeriod")):
        out.append(Item("cpu", "cpu.rt_period_us", str(value), f + ".realtimePeriod"))
    if res.get("realtimeRuntime") is not None and (value := integer(res["realtimeRuntime"], f + ".realtimeRuntime")):
        out.append(Item("cpu", "cpu.rt_runtime_us", str(value), f + ".realtimeRuntime"))
    if res.get("idle") is not None:
        out.append(Item("cpu", "cpu.idle", str(integer(res["idle"], f + ".idle")), f + ".idle"))
    for key, file in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if res.get(key) is not None and (value := string(res[key], f"{f}.{key}")):
            out.append(Item("cpuset", file, value, f"{f}.{key}"))


def pids(res: object, out: list[Item]) -> None:
    f = PREFIX + "pids"
    res = mapping(res, f)
    if res.get("limit") is not None and (limit := integer(res["limit"], f + ".limit")) != 0:
        out.append(Item("pids", "pids.max", str(limit) if limit > 0 else "max", f + ".limit"))


def block_io(res: object, out: list[Item]) -> None:
    f = PREFIX + "blockIO"
    res = mapping(res, f)
    if res.get("weight") is not None and (value := unsigned(res["weight"], f + ".weight")) != 0:
        plain = Item("blkio", "blkio.weight", str(value), f + ".weight")
        out.append(Item("blkio", "blkio.bfq.weight", str(value), f + ".weight", fallback=plain))
    if res.get("leafWeight") is not None and (value := unsigned(res["leafWeight"], f + ".leafWeight")) != 0:
        out.append(Item("blkio", "blkio.leaf_weight", str(value), f + ".leafWeight"))
    for i, entry in enumerate(array(res.get("weightDevice") or [], f + ".weightDevice")):
        field = f"{f}.weightDevice[{i}]"
        entry = mapping(entry, field)
        dev = device_number(entry, field)
        if entry.get("weight") is not None:
            value = f"{dev} {unsigned(entry['weight'], field + '.weight')}"
            plain = Item("blkio", "blkio.weight_device", value, field + ".weight")
            out.append(Item("blkio", "blkio.bfq.weight_device", value, field + ".weight", fallback=plain))
        if entry.get("leafWeight") is not None:
            value = f"{dev} {unsigned(entry['leafWeight'], field + '.leafWeight')}"
            out.append(Item("blkio", "blkio.leaf_weight_device", value, field + ".leafWeight"))
    for key, file in THROTTLES:
        for i, entry in enumerate(array(res.get(key) or [], f"{f}.{key}")):
            field = f"{f}.{key}[{i}]"
            entry = mapping(entry, field)
            value = f"{device_number(entry, field)} {unsigned(entry.get('rate'), field + '.rate')}"
            out.append(Item("blkio", "blkio." + file, value, field))


THROTTLES = (
    ("throttleReadBpsDevice", "throttle.read_bps_device"),
    ("throttleWriteBpsDevice", "throttle.write_bps_device"),
    ("throttleReadIOPSDevice", "throttle.read_iops_device"),
    ("throttleWriteIOPSDevice", "throttle.write_iops_device"),
)


def hugepage_limits(res: object, out: list[Item]) -> None:
    f = PREFIX + "hugepageLimits"
    for i, entry in enumerate(array(res, f)):
        field = f"{f}[{i}]"
        entry = mapping(entry, field)
        size = page_size(entry, field)
        limit = unsigned(entry.get("limit"), field + ".limit")
        out.append(Item("hugetlb", f"hugetlb.{size}.limit_in_bytes", str(limit), field + ".limit"))


def page_size(entry: dict, field: str) -> str:
    size = string(entry.get("pageSize"), field + ".pageSize")
    if not size or "/" in size or "." in size:
        raise out_of_range(field + ".pageSize", size, 'a size such as "2MB" or "1GB"')
    return size


def network(res: object, out: list[Item]) -> None:
    f = PREFIX + "network"
    res = mapping(res, f)
    # Like runc, skipped when net_cls / net_prio is not mounted.
    if res.get("classID") is not None:
        value = str(unsigned(res["classID"], f + ".classID"))
        out.append(Item("net_cls", "net_cls.classid", value, f + ".classID", optional=True))
    for i, entry in enumerate(array(res.get("priorities") or [], f + ".priorities")):
        field = f"{f}.priorities[{i}]"
        entry = mapping(entry, field)
        name = string(entry.get("name"), field + ".name")
        value = f"{name} {unsigned(entry.get('priority'), field + '.priority')}"
        out.append(Item("net_prio", "net_prio.ifpriomap", value, field, optional=True))


def rdma(res: object, out: list[Item], ctrl: str = "rdma") -> None:
    f = PREFIX + "rdma"
    for device, limits in mapping(res, f).items():
        field = f"{f}.{device}"
        limits = mapping(limits, field)
        parts = [device]
        if limits.get("hcaHandles") is not None:
            parts.append(f"hca_handle={unsigned(limits['hcaHandles'], field + '.hcaHandles')}")
        if limits.get("hcaObjects") is not None:
            parts.append(f"hca_object={unsigned(limits['hcaObjects'], field + '.hcaObjects')}")
        if len(parts) > 1:
            out.append(Item(ctrl, "rdma.max", " ".join(parts), field, optional=True))


PLANNERS = {
    "memory": memory,
    "cpu": cpu,
    "pids": pids,
    "blockIO": block_io,
    "hugepageLimits": hugepage_limits,
    "network": network,
    "rdma": rdma,
}
