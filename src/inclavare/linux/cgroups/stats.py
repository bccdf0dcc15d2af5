"""`runc events --stats` data (runc's types.Stats as JSON: omitempty fields left out when zero) from cgroupfs."""

from __future__ import annotations

import os

from .files import read_or

MAX_U64 = (1 << 64) - 1
_CLOCK_TICKS = 100  # USER_HZ, the unit of cpuacct.stat


def _int(text: str) -> int:
    text = text.strip()
    if text == "max":
        return MAX_U64
    try:
        value = int(text)
    except ValueError:
        return 0
    return value if value >= 0 else MAX_U64


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            out[key] = _int(value)
    return out


def _omit(d: dict, *keys: str) -> dict:
    for key in keys:
        if not d.get(key):
            d.pop(key, None)
    return d


def _entry(limit: int, usage: int, max_: int, failcnt: int) -> dict:
    return _omit({"limit": limit, "usage": usage, "max": max_, "failcnt": failcnt}, "usage", "max")


def _throttling(cpu_stat: dict[str, int], time_key: str, scale: int) -> dict:
    return _omit({"periods": cpu_stat.get("nr_periods", 0), "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                  "throttledTime": cpu_stat.get(time_key, 0) * scale}, "periods", "throttledPeriods", "throttledTime")


def _page_sizes() -> list[str]:
    sizes = []
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return sizes
    for name in names:  # hugepages-2048kB -> 2MB
        kb = int(name[len("hugepages-"):-2])
        for unit in ("KB", "MB", "GB", "TB"):
            if kb < 1024 or kb % 1024:
                sizes.append(f"{kb}{unit}")
                break
            kb //= 1024
    return sorted(sizes)


def _cpuset(directory: str) -> dict:
    out = {}
    for key, file in (("cpus", "cpuset.effective_cpus"), ("mems", "cpuset.effective_mems")):
        values: list[int] = []
        for part in read_or(f"{directory}/{file}").split(","):
            low, _, high = part.partition("-")
            if low.isdigit():
                values.extend(range(int(low), int(high or low) + 1))
        if values:
            out[key] = values
    return out


def _blkio_entries(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            entries.append(_omit({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])},
                                 "major", "minor", "op", "value"))
    return entries


def _empty() -> dict:
    return {"cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}}, "cpuset": {},
            "memory": {"usage": {"limit": 0, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                       "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0}},
            "pids": {}, "blkio": {}, "hugetlb": {}, "intel_rdt": {}, "network_interfaces": None}


def v1(paths: dict[str, str], unified: str | None = None) -> dict:
    """Stats from v1 controller directories; hugetlb from the cgroup2 directory when only it has that controller."""
    out = _empty()
    if cpuacct := paths.get("cpuacct"):
        usage = out["cpu"]["usage"]
        usage["total"] = _int(read_or(cpuacct + "/cpuacct.usage"))
        usage["percpu"] = [_int(v) for v in read_or(cpuacct + "/cpuacct.usage_percpu").split()]
        kernel, user = [], []
        for line in read_or(cpuacct + "/cpuacct.usage_all").splitlines()[1:]:  # "cpu user system"
            parts = line.split()
            if len(parts) == 3:
                user.append(_int(parts[1]))
                kernel.append(_int(parts[2]))
        usage["percpu_kernel"], usage["percpu_user"] = kernel, user
        ticks = _keyed(read_or(cpuacct + "/cpuacct.stat"))
        usage["kernel"] = ticks.get("system", 0) * (1_000_000_000 // _CLOCK_TICKS)
        usage["user"] = ticks.get("user", 0) * (1_000_000_000 // _CLOCK_TICKS)
        _omit(usage, "total", "percpu", "percpu_kernel", "percpu_user")
    if cpu := paths.get("cpu"):
        out["cpu"]["throttling"] = _throttling(_keyed(read_or(cpu + "/cpu.stat")), "throttled_time", 1)
    if cpuset := paths.get("cpuset"):
        out["cpuset"] = _cpuset(cpuset)
    if memory := paths.get("memory"):
        mem = out["memory"]
        for key, prefix in (("usage", "memory."), ("swap", "memory.memsw."), ("kernel", "memory.kmem."),
                            ("kernelTCP", "memory.kmem.tcp.")):
            base = memory + "/" + prefix
            mem[key] = _entry(_int(read_or(base + "limit_in_bytes")), _int(read_or(base + "usage_in_bytes")),
                              _int(read_or(base + "max_usage_in_bytes")), _int(read_or(base + "failcnt")))
        raw = _keyed(read_or(memory + "/memory.stat"))
        if raw.get("cache"):
            mem["cache"] = raw["cache"]
        if raw:
            mem["raw"] = raw
    if pids := paths.get("pids"):
        out["pids"] = _pids(pids)
    if blkio := paths.get("blkio"):
        out["blkio"] = _omit({
            "ioServiceBytesRecursive": _blkio_entries(
                read_or(blkio + "/blkio.io_service_bytes_recursive")
                or read_or(blkio + "/blkio.throttle.io_service_bytes_recursive")),
            "ioServicedRecursive": _blkio_entries(
                read_or(blkio + "/blkio.io_serviced_recursive")
                or read_or(blkio + "/blkio.throttle.io_serviced_recursive")),
        }, "ioServiceBytesRecursive", "ioServicedRecursive")
    if hugetlb := paths.get("hugetlb"):
        for size in _page_sizes():
            base = f"{hugetlb}/hugetlb.{size}."
            out["hugetlb"][size] = _omit({"usage": _int(read_or(base + "usage_in_bytes")),
                                          "max": _int(read_or(base + "max_usage_in_bytes")),
                                          "failcnt": _int(read_or(base + "failcnt"))}, "usage", "max")
    elif unified:
        out["hugetlb"] = _hugetlb_v2(unified)
    return out


def _pids(directory: str) -> dict:
    limit = read_or(directory + "/pids.max")
    return _omit({"current": _int(read_or(directory + "/pids.current")),
                  "limit": 0 if limit == "max" else _int(limit)}, "current", "limit")


def _hugetlb_v2(directory: str) -> dict:
    out = {}
    for size in _page_sizes():
        base = f"{directory}/hugetlb.{size}."
        if not os.path.exists(base + "current"):
            continue
        out[size] = _omit({"usage": _int(read_or(base + "current")),
                           "failcnt": _keyed(read_or(base + "events")).get("max", 0)}, "usage")
    return out


def v2(directory: str) -> dict:
    out = _empty()
    cpu_stat = _keyed(read_or(directory + "/cpu.stat"))
    usage = out["cpu"]["usage"]
    usage["total"] = cpu_stat.get("usage_usec", 0) * 1000
    usage["kernel"] = cpu_stat.get("system_usec", 0) * 1000
    usage["user"] = cpu_stat.get("user_usec", 0) * 1000
    _omit(usage, "total")
    out["cpu"]["throttling"] = _throttling(cpu_stat, "throttled_usec", 1000)
    out["cpuset"] = _cpuset(directory)
    mem = out["memory"]
    current = read_or(directory + "/memory.current")
    if current:
        usage_bytes = _int(current)
        limit = _int(read_or(directory + "/memory.max"))
        mem["usage"] = _entry(limit, usage_bytes, _int(read_or(directory + "/memory.peak")),
                              _keyed(read_or(directory + "/memory.events")).get("max", 0))
        # v1 reports swap as memory + swap; runc keeps that meaning on v2.
        swap_limit = _int(read_or(directory + "/memory.swap.max"))
        if swap_limit != MAX_U64 and limit != MAX_U64:
            swap_limit += limit
        mem["swap"] = _entry(swap_limit, _int(read_or(directory + "/memory.swap.current")) + usage_bytes, 0,
                             _keyed(read_or(directory + "/memory.swap.events")).get("max", 0))
        raw = _keyed(read_or(directory + "/memory.stat"))
        if raw.get("file"):
            mem["cache"] = raw["file"]
        if raw:
            mem["raw"] = raw
    if os.path.exists(directory + "/pids.current"):
        out["pids"] = _pids(directory)
    service_bytes, serviced = [], []
    for line in read_or(directory + "/io.stat").splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for key, op, target in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in values:
                target.append(_omit({"major": int(major), "minor": int(minor), "op": op, "value": int(values[key])},
                                    "major", "minor", "value"))
    out["blkio"] = _omit({"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced},
                         "ioServiceBytesRecursive", "ioServicedRecursive")
    out["hugetlb"] = _hugetlb_v2(directory)
    return out
