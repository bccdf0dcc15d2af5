"""Task statistics: `rune events --stats` (runc's JSON stats) as containerd's cgroups metrics messages,
io.containerd.cgroups.v1.Metrics on v1 and hybrid hosts and io.containerd.cgroups.v2.Metrics on unified ones, as
containerd-shim-runc-v2 reports them (containerd/cgroups stats/v1 and cgroup2/stats metrics.proto)."""

from __future__ import annotations

import os

from inclavare.shim import api
from inclavare.shim.protobuf import Message

U = "uint64"
R = "repeated"


class HugetlbStat(Message):
    FIELDS = (("usage", 1, U), ("max", 2, U), ("failcnt", 3, U), ("pagesize", 4, "string"))


class PidsStat(Message):
    FIELDS = (("current", 1, U), ("limit", 2, U))


class CPUUsage(Message):
    FIELDS = (("total", 1, U), ("kernel", 2, U), ("user", 3, U), ("per_cpu", 4, (R, U)))


class Throttle(Message):
    FIELDS = (("periods", 1, U), ("throttled_periods", 2, U), ("throttled_time", 3, U))


class CPUStat(Message):
    FIELDS = (("usage", 1, CPUUsage), ("throttling", 2, Throttle))


class MemoryEntry(Message):
    FIELDS = (("limit", 1, U), ("usage", 2, U), ("max", 3, U), ("failcnt", 4, U))


_MEMORY_V1 = ("cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout", "pgfault",
              "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
              "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache", "total_rss", "total_rss_huge",
              "total_mapped_file", "total_dirty", "total_writeback", "total_pgpgin", "total_pgpgout",
              "total_pgfault", "total_pgmajfault", "total_inactive_anon", "total_active_anon", "total_inactive_file",
              "total_active_file", "total_unevictable")  # memory.stat keys, fields 1-32 in this order


class MemoryStat(Message):
    FIELDS = (*((k, i, U) for i, k in enumerate(_MEMORY_V1, 1)), ("usage", 33, MemoryEntry), ("swap", 34, MemoryEntry),
              ("kernel", 35, MemoryEntry), ("kernel_tcp", 36, MemoryEntry))


class BlkIOEntry(Message):
    FIELDS = (("op", 1, "string"), ("device", 2, "string"), ("major", 3, U), ("minor", 4, U), ("value", 5, U))


class BlkIOStat(Message):
    FIELDS = (("io_service_bytes_recursive", 1, (R, BlkIOEntry)), ("io_serviced_recursive", 2, (R, BlkIOEntry)))


class MetricsV1(Message):
    FIELDS = (("hugetlb", 1, (R, HugetlbStat)), ("pids", 2, PidsStat), ("cpu", 3, CPUStat), ("memory", 4, MemoryStat),
              ("blkio", 5, BlkIOStat))


# ---- cgroup v2 ----------------------------------------------------------------------------------------------------

class CPUStatV2(Message):
    FIELDS = (("usage_usec", 1, U), ("user_usec", 2, U), ("system_usec", 3, U), ("nr_periods", 4, U),
              ("nr_throttled", 5, U), ("throttled_usec", 6, U))


_MEMORY_V2 = ("anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
              "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
              "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
              "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
              "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc")  # fields 1-31


class MemoryStatV2(Message):
    FIELDS = (*((k, i, U) for i, k in enumerate(_MEMORY_V2, 1)), ("usage", 32, U), ("usage_limit", 33, U),
              ("swap_usage", 34, U), ("swap_limit", 35, U), ("max_usage", 36, U), ("swap_max_usage", 37, U))


class IOEntry(Message):
    FIELDS = (("major", 1, U), ("minor", 2, U), ("rbytes", 3, U), ("wbytes", 4, U), ("rios", 5, U), ("wios", 6, U))


class IOStat(Message):
    FIELDS = (("usage", 1, (R, IOEntry)),)


class HugeTlbStatV2(Message):
    FIELDS = (("current", 1, U), ("max", 2, U), ("pagesize", 3, "string"))


class MetricsV2(Message):
    FIELDS = (("pids", 1, PidsStat), ("cpu", 2, CPUStatV2), ("memory", 4, MemoryStatV2), ("io", 6, IOStat),
              ("hugetlb", 7, (R, HugeTlbStatV2)))


_MAX = (1 << 64) - 1


def _u(v: object) -> int:
    return v if isinstance(v, int) and 0 <= v <= _MAX else 0


def _entry(d: object) -> MemoryEntry:
    d = d if isinstance(d, dict) else {}
    return MemoryEntry(limit=_u(d.get("limit")), usage=_u(d.get("usage")), max=_u(d.get("max")),
                       failcnt=_u(d.get("failcnt")))


def unified() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _parts(data: dict) -> tuple[dict, dict, dict, dict]:
    """(cpu usage, cpu throttling, memory, raw memory.stat) of runc's stats JSON."""
    cpu = data.get("cpu") or {}
    mem = data.get("memory") or {}
    return cpu.get("usage") or {}, cpu.get("throttling") or {}, mem, mem.get("raw") or {}


def metrics_v1(data: dict) -> MetricsV1:
    usage, thr, mem, raw = _parts(data)
    stat = MemoryStat(**{k: _u(raw.get(k)) for k in _MEMORY_V1})
    stat.usage, stat.swap = _entry(mem.get("usage")), _entry(mem.get("swap"))
    stat.kernel, stat.kernel_tcp = _entry(mem.get("kernel")), _entry(mem.get("kernelTCP"))
    blkio = data.get("blkio") or {}

    def entries(key: str) -> list[BlkIOEntry]:
        return [BlkIOEntry(op=str(e.get("op", "")), major=_u(e.get("major")), minor=_u(e.get("minor")),
                           value=_u(e.get("value"))) for e in blkio.get(key) or () if isinstance(e, dict)]

    pids = data.get("pids") or {}
    return MetricsV1(
        hugetlb=[HugetlbStat(usage=_u(v.get("usage")), max=_u(v.get("max")), failcnt=_u(v.get("failcnt")),
                             pagesize=k) for k, v in sorted((data.get("hugetlb") or {}).items())],
        pids=PidsStat(current=_u(pids.get("current")), limit=_u(pids.get("limit"))),
        cpu=CPUStat(usage=CPUUsage(total=_u(usage.get("total")), kernel=_u(usage.get("kernel")),
                                   user=_u(usage.get("user")), per_cpu=[_u(v) for v in usage.get("percpu") or ()]),
                    throttling=Throttle(periods=_u(thr.get("periods")),
                                        throttled_periods=_u(thr.get("throttledPeriods")),
                                        throttled_time=_u(thr.get("throttledTime")))),
        memory=stat,
        blkio=BlkIOStat(io_service_bytes_recursive=entries("ioServiceBytesRecursive"),
                        io_serviced_recursive=entries("ioServicedRecursive")))


def metrics_v2(data: dict) -> MetricsV2:
    usage, thr, mem, raw = _parts(data)
    use, swap = mem.get("usage") or {}, mem.get("swap") or {}
    stat = MemoryStatV2(**{k: _u(raw.get(k)) for k in _MEMORY_V2})
    stat.usage, stat.usage_limit, stat.max_usage = _u(use.get("usage")), _u(use.get("limit")), _u(use.get("max"))
    stat.swap_usage = max(0, _u(swap.get("usage")) - stat.usage)
    stat.swap_limit = _u(swap.get("limit"))
    io: dict[tuple[int, int], IOEntry] = {}
    for key, field in (("ioServiceBytesRecursive", ("rbytes", "wbytes")), ("ioServicedRecursive", ("rios", "wios"))):
        for e in (data.get("blkio") or {}).get(key) or ():
            dev = (_u(e.get("major")), _u(e.get("minor")))
            entry = io.setdefault(dev, IOEntry(major=dev[0], minor=dev[1]))
            op = str(e.get("op", "")).lower()
            if op in ("read", "write"):
                setattr(entry, field[0] if op == "read" else field[1], _u(e.get("value")))
    pids = data.get("pids") or {}
    return MetricsV2(
        pids=PidsStat(current=_u(pids.get("current")), limit=_u(pids.get("limit"))),
        cpu=CPUStatV2(usage_usec=_u(usage.get("total")) // 1000, user_usec=_u(usage.get("user")) // 1000,
                      system_usec=_u(usage.get("kernel")) // 1000, nr_periods=_u(thr.get("periods")),
                      nr_throttled=_u(thr.get("throttledPeriods")),
                      throttled_usec=_u(thr.get("throttledTime")) // 1000),
        memory=stat, io=IOStat(usage=[io[k] for k in sorted(io)]),
        hugetlb=[HugeTlbStatV2(current=_u(v.get("usage")), max=_u(v.get("max")), pagesize=k)
                 for k, v in sorted((data.get("hugetlb") or {}).items())])


def metrics_any(data: dict) -> api.Any:
    if unified():
        return api.Any(type_url=api.METRICS_V2, value=metrics_v2(data).encode())
    return api.Any(type_url=api.METRICS_V1, value=metrics_v1(data).encode())
