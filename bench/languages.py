#!/usr/bin/env python3
"""Time from `docker run -d` to the first HTTP answer of each example service (examples/), in one run: the ordinary
image under runc, the ordinary image under rune (a plain container), and the image signed with `sgx-tools sign-image`
under rune (a sim enclave: measurement checked at create); cold (the first run of the image in the daemon) and warm
(median and p25-p75 of the next runs, the three ways taking turns run after run); and each image's size and the time
to measure its root filesystem (the manifest's file hashes, as rune's launch check computes them).

containerd and dockerd are the engine test suite's (tests/engines/daemons.py), started privately and stopped by
their PID; the services run with the host network (that dockerd has no bridge) on a free port.

Beside the wall-clock time, each run's CPU time (user + system) up to the first answer, which a machine shared with
other work disturbs less: the daemons are started in a cgroup of the bench's own (cpuacct on cgroup v1, cpu.stat on
v2) that is also dockerd's cgroup-parent, so the shims, the runtime (rune's launch check included) and the service's
processes are charged to it; the `docker run` client's CPU is added from the bench's own child usage. The daemons'
idle work in the same time is counted too (the same for every way).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.e2e import languages as lang  # noqa: E402
from tests.engines import daemons as d  # noqa: E402

MODES = ("runc", "rune", "rune-sim")
CGROUP = Path("/sys/fs/cgroup")


class CpuGroup:
    """A cgroup of the bench's own under the root of the CPU accounting hierarchy; its usage covers its subtree."""

    def __init__(self, name: str) -> None:
        self.v2 = (CGROUP / "cgroup.controllers").exists()
        self.root = CGROUP if self.v2 else CGROUP / "cpuacct"
        self.name = name
        self.path = self.root / name
        self.path.mkdir()
        (self.path / "daemons").mkdir()

    def usage_s(self) -> float:
        if self.v2:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def own_cgroup(self) -> Path:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self.v2 and controllers == "") or (not self.v2 and "cpuacct" in controllers.split(",")):
                return self.root / path.lstrip("/")
        raise RuntimeError("no CPU accounting cgroup in /proc/self/cgroup")

    def remove(self) -> None:
        """The bench's cgroup in every hierarchy (dockerd made its cgroup-parent in each); empty ones only."""
        for top in [CGROUP] if self.v2 else [p for p in CGROUP.iterdir() if p.is_dir()]:
            tree = top / self.name
            if not tree.is_dir():
                continue
            for sub in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                tree.rmdir()
            except OSError as e:
                print(f"left cgroup {tree}: {e}", file=sys.stderr)


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def measurement_seconds(docker_archive: Path, work: Path) -> tuple[float, int, int]:
    """(seconds to measure the unpacked rootfs, files, bytes)."""
    from inclavare.oci import image as oci_image
    from inclavare.tee.sim import manifest

    img, _ = oci_image.read(str(docker_archive), work)
    rootfs = work / "rootfs"
    oci_image.unpack(img, rootfs)
    t0 = time.perf_counter()
    cfg = manifest.from_image_config(rootfs, img.config)
    dt = time.perf_counter() - t0
    size = sum((rootfs / p.lstrip("/")).stat().st_size for p in cfg.trusted_files)
    shutil.rmtree(rootfs)
    return dt, len(cfg.trusted_files), size


def first_answer(dk, cg: CpuGroup, flags: list[str], image: str) -> tuple[float, float]:  # noqa: ANN001
    """(wall-clock seconds, CPU seconds) from `docker run -d` to the first HTTP answer."""
    port = lang.free_port()
    c0, k0 = cg.usage_s(), children_cpu_s()
    t0 = time.perf_counter()
    cid = dk("run", "-d", *flags, "-e", f"PORT={port}", image).stdout.strip()
    try:
        lang.first_answer(port, timeout=180, interval=0.01)
        dt = time.perf_counter() - t0
        return dt, cg.usage_s() - c0 + children_cpu_s() - k0
    finally:
        dk("rm", "-f", cid, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="warm runs per example and way")
    ap.add_argument("--examples", default=",".join(lang.TAMPER))
    ap.add_argument("--rune", default=str(REPO / "bin" / "rune"))
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the engines need it")
    reason = d.ensure_packages()
    if reason:
        raise SystemExit(reason)
    if not os.path.exists(args.rune):
        d.run([sys.executable, "-m", "inclavare.launcher", str(Path(args.rune).parent)],
              env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    work = Path(tempfile.mkdtemp(prefix="rune-lang-"))
    containerd = dockerd = None
    results: dict[str, dict] = {}
    cg = CpuGroup(work.name)
    try:
        back = cg.own_cgroup()
        (cg.path / "daemons" / "cgroup.procs").write_text(str(os.getpid()))  # the daemons are started in it
        try:
            containerd = d.Containerd(work / "containerd").start()
            dockerd = d.Dockerd(work / "docker", containerd, {"rune": args.rune},
                                {"cgroup-parent": f"/{cg.name}"}).start()
        finally:
            (back / "cgroup.procs").write_text(str(os.getpid()))
        dk = dockerd.docker
        key = work / "owner.pem"
        d.run([str(REPO / "bin" / "sgx-tools"), "gen-key", str(key)])
        base = ["--network", "host", "--tmpfs", "/tmp"]
        for name in args.examples.split(","):
            ex = lang.Example(name, work / name, key)
            dk("load", "-i", str(ex.plain_docker), timeout=300)
            dk("load", "-i", str(ex.signed_docker), timeout=300)
            m_s, m_files, m_bytes = measurement_seconds(ex.plain_docker, work / f"{name}-m")
            ways = {"runc": (["--runtime", "runc"], ex.plain_ref), "rune": (["--runtime", "rune"], ex.plain_ref),
                    "rune-sim": (["--runtime", "rune"], ex.signed_ref)}
            cold = {m: first_answer(dk, cg, [*base, *ways[m][0]], ways[m][1])[0] for m in MODES}
            warm: dict[str, list[float]] = {m: [] for m in MODES}
            cpu: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.runs):
                for m in MODES:
                    dt, c = first_answer(dk, cg, [*base, *ways[m][0]], ways[m][1])
                    warm[m].append(dt)
                    cpu[m].append(c)
            results[name] = {"image_bytes": ex.plain_docker.stat().st_size, "measured_files": m_files,
                             "measured_bytes": m_bytes, "measurement_s": m_s, "cold_s": cold, "warm_s": warm,
                             "warm_cpu_s": cpu}
            print_one(name, results[name])
    finally:
        if dockerd:
            dockerd.stop()
        if containerd:
            containerd.stop()
        cg.remove()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def print_one(name: str, r: dict) -> None:
    print(f"\n{name}: image {r['image_bytes'] / 2**20:.1f} MiB, {r['measured_files']} measured files "
          f"({r['measured_bytes'] / 2**20:.1f} MiB), measurement {r['measurement_s'] * 1000:.0f} ms")
    print("| way | cold ms | warm median ms | warm p25-p75 | warm / runc | CPU median ms | CPU p25-p75 | CPU / runc |")
    print("|---|---|---|---|---|---|---|---|")
    runc = statistics.median(r["warm_s"]["runc"])
    runc_cpu = statistics.median(r["warm_cpu_s"]["runc"])
    for m in MODES:
        q1, med, q3 = quartiles(r["warm_s"][m])
        c1, cmed, c3 = quartiles(r["warm_cpu_s"][m])
        print(f"| {m} | {r['cold_s'][m] * 1000:.0f} | {med * 1000:.0f} | {q1 * 1000:.0f}-{q3 * 1000:.0f} | "
              f"{med / runc:.2f}x | {cmed * 1000:.0f} | {c1 * 1000:.0f}-{c3 * 1000:.0f} | {cmed / runc_cpu:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
