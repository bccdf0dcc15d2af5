"""linux.resources -> cgroup v2 file writes, translated the way runc does (cpu.weight from shares, io.weight from
the blkio weight, memory.swap.max from swap - limit)."""

from __future__ import annotations

from inclavare.errors import RuneError

from . import v1
from .files import Item
from .values import PREFIX, array, device_number, integer, mapping, string, unsigned

# Which cgroup2 controllers each resources section needs.
CONTROLLERS = {
    "memory": ("memory",),
    "cpu": ("cpu", "cpuset"),
    "pids": ("pids",),
    "blockIO": ("io",),
    "hugepageLimits": ("hugetlb",),
    "rdma": ("rdma",),
}


def cpu_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], runc's linear map; 0 means unset."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(blkio_weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000]; 0 means unset."""
    if blkio_weight == 0:
        return 0
    return 1 + ((blkio_weight - 10) * 9999) // 990


def swap_max(swap: int, limit: int) -> int:
    """OCI memory.swap (memory + swap, as v1's memsw) -> memory.swap.max (swap alone); -1 unlimited, 0 unset."""
    if limit == -1 and swap == 0:
        return -1  # unlimited memory and swap not given: both unlimited, as v1 would be
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise RuneError(f"{PREFIX}memory.swap: cannot be set without a memory limit on cgroup v2 "
                        f"(memory.swap.max = swap - limit)")
    if swap < limit:
        raise RuneError(f"{PREFIX}memory.swap: must be at least linux.resources.memory.limit ({limit}), got {swap}")
    return swap - limit


def _max(value: int) -> str:
    return "max" if value == -1 else str(value)


def memory(res: object, out: list[Item]) -> None:
    f = PREFIX + "memory"
    res = mapping(res, f)
    limit = integer(res["limit"], f + ".limit") if res.get("limit") is not None else 0
    swap = integer(res["swap"], f + ".swap") if res.get("swap") is not None else 0
    if limit:
        out.append(Item("memory", "memory.max", _max(limit), f + ".limit"))
    swap_value = swap_max(swap, limit)
    if swap_value or swap > 0:  # swap == limit gives 0: no swap at all, as runc writes it
        out.append(Item("memory", "memory.swap.max", _max(swap_value), f + ".swap"))
    if res.get("reservation") is not None and (value := integer(res["reservation"], f + ".reservation")):
        out.append(Item("memory", "memory.low", _max(value), f + ".reservation"))
    # kernel, kernelTCP, swappiness, disableOOMKiller, useHierarchy have no cgroup v2 file; like runc, ignored
    # (after checking their types, so a typo still fails the same way everywhere).
    scratch: list[Item] = []
    v1.memory({k: res[k] for k in ("kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
                                    "checkBeforeUpdate") if k in res}, scratch)


def cpu(res: object, out: list[Item]) -> None:
    f = PREFIX + "cpu"
    res = mapping(res, f)
    if res.get("shares") is not None and (shares := unsigned(res["shares"], f + ".shares")):
        out.append(Item("cpu", "cpu.weight", str(cpu_weight(shares)), f + ".shares"))
    quota = integer(res["quota"], f + ".quota") if res.get("quota") is not None else 0
    period = unsigned(res["period"], f + ".period") if res.get("period") is not None else 0
    if quota or period:
        value = str(quota) if quota > 0 else "max"
        if period:
            value += f" {period}"
        out.append(Item("cpu", "cpu.max", value, f + (".quota" if quota else ".period")))
    if res.get("burst") is not None:
        out.append(Item("cpu", "cpu.max.burst", str(unsigned(res["burst"], f + ".burst")), f + ".burst"))
    if res.get("idle") is not None:
        out.append(Item("cpu", "cpu.idle", str(integer(res["idle"], f + ".idle")), f + ".idle"))
    for key in ("realtimePeriod", "realtimeRuntime"):
        if res.get(key) is not None and integer(res[key], f"{f}.{key}"):
            raise RuneError(f"{f}.{key}: real-time CPU scheduling limits do not exist on cgroup v2; remove the field")
    for key, file in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if res.get(key) is not None and (value := string(res[key], f"{f}.{key}")):
            out.append(Item("cpuset", file, value, f"{f}.{key}"))


def pids(res: object, out: list[Item]) -> None:
    v1.pids(res, out)


def block_io(res: object, out: list[Item]) -> None:
    f = PREFIX + "blockIO"
    res = mapping(res, f)
    if res.get("weight") is not None and (value := unsigned(res["weight"], f + ".weight")):
        plain = Item("io", "io.weight", str(io_weight(value)), f + ".weight")
        out.append(Item("io", "io.bfq.weight", str(value), f + ".weight", fallback=plain))
    if res.get("leafWeight") is not None:
        unsigned(res["leafWeight"], f + ".leafWeight")  # no v2 equivalent; ignored as runc does
    for i, entry in enumerate(array(res.get("weightDevice") or [], f + ".weightDevice")):
        field = f"{f}.weightDevice[{i}]"
        entry = mapping(entry, field)
        dev = device_number(entry, field)
        if entry.get("weight") is not None:
            weight = unsigned(entry["weight"], field + ".weight")
            plain = Item("io", "io.weight", f"{dev} {io_weight(weight)}", field + ".weight")
            out.append(Item("io", "io.bfq.weight", f"{dev} {weight}", field + ".weight", fallback=plain))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for i, entry in enumerate(array(res.get(key) or [], f"{f}.{key}")):
            field = f"{f}.{key}[{i}]"
            entry = mapping(entry, field)
            rate = unsigned(entry.get("rate"), field + ".rate")
            out.append(Item("io", "io.max", f"{device_number(entry, field)} {name}={rate or 'max'}", field))


def hugepage_limits(res: object, out: list[Item]) -> None:
    f = PREFIX + "hugepageLimits"
    for i, entry in enumerate(array(res, f)):
        field = f"{f}[{i}]"
        entry = mapping(entry, field)
        size = v1.page_size(entry, field)
        limit = str(unsigned(entry.get("limit"), field + ".limit"))
        out.append(Item("hugetlb", f"hugetlb.{size}.max", limit, field + ".limit"))
        out.append(Item("hugetlb", f"hugetlb.{size}.rsvd.max", limit, field + ".limit", optional=True))


def rdma(res: object, out: list[Item]) -> None:
    v1.rdma(res, out)


def network(res: object, out: list[Item]) -> None:
    v1.network(res, [])  # checked, then ignored: cgroup v2 has no net_cls / net_prio (runc ignores them too)


RUNTIME_FILES = frozenset(("cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.subtree_control", "cgroup.type",
                           "cgroup.freeze"))


def unified(res: object, out: list[Item]) -> None:
    f = PREFIX + "unified"
    for key, value in mapping(res, f).items():
        field = f"{f}.{key}"
        if "/" in key or key.startswith(".") or "." not in key:
            raise RuneError(f"{field}: not a cgroup v2 file name (expected \"<controller>.<name>\" such as "
                            f"\"memory.high\")")
        if key in RUNTIME_FILES:
            # a pid written there would move a host process into the container's cgroup (and `delete` kills what
            # the cgroup holds)
            raise RuneError(f"{field}: {key} is the runtime's to manage, not a resource")
        out.append(Item(key.partition(".")[0], key, string(value, field), field))


PLANNERS = {
    "memory": memory,
    "cpu": cpu,
    "pids": pids,
    "blockIO": block_io,
    "hugepageLimits": hugepage_limits,
    "network": network,
    "rdma": rdma,
    "unified": unified,
}
