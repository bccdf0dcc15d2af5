#!/usr/bin/env python3
"""`ctr run --rm`, `docker run --rm` and `podman run --rm` of /bin/true, with rune and with runc, in one run.

The daemons and the busybox image come from the engine test suite (tests/engines/daemons.py): containerd and dockerd
are started privately under a temporary directory and stopped by their PID at the end. For each engine the two
runtimes take turns run after run (so a change of machine load hits both alike); the report gives the median and
p25-p75 of the client's wall time, and the ratio rune/runc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.engines import daemons as d  # noqa: E402


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per engine and runtime (at least 15)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rune", default=str(REPO / "bin" / "rune"))
    ap.add_argument("--engines", default="containerd,docker,podman")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the engines need it")
    if args.runs < 15:
        raise SystemExit("--runs: at least 15")
    reason = d.ensure_packages()
    if reason:
        raise SystemExit(reason)
    if not os.path.exists(args.rune):
        d.run([sys.executable, "-m", "inclavare.launcher", str(Path(args.rune).parent)], env=dict(
            os.environ, PYTHONPATH=str(REPO / "src")))
    work = Path(tempfile.mkdtemp(prefix="rune-eng-"))
    containerd = dockerd = podman = None
    runtimes = {"rune": args.rune, "runc": d.RUNC}
    results: dict[str, dict[str, list[float]]] = {}
    try:
        image = d.Image(work / "image").build()
        engines = args.engines.split(",")
        cmds: dict[str, Callable[[str, str, int], list[str]]] = {}
        if "containerd" in engines or "docker" in engines:
            containerd = d.Containerd(work / "containerd").start()
            containerd.ctr("images", "import", str(image.oci_archive))
            cmds["containerd"] = lambda rt, binary, i: [
                "ctr", "-a", containerd.sock, "-n", containerd.namespace, "run", "--rm", "--runc-binary", binary,
                "--runc-root", str(work / f"runc-root-{rt}"), d.IMAGE, f"bench-{rt}-{i}", "/bin/true"]
        if "docker" in engines:
            dockerd = d.Dockerd(work / "docker", containerd, {"rune": args.rune}).start()
            dockerd.docker("load", "-i", str(image.docker_archive))
            cmds["docker"] = lambda rt, binary, i: [
                "docker", "-H", f"unix://{dockerd.sock}", "run", "--rm", "--network", "none", "--runtime", rt,
                d.IMAGE, "/bin/true"]
        if "podman" in engines:
            podman = d.Podman(work / "podman")
            podman.podman("load", "-i", str(image.docker_archive))
            cmds["podman"] = lambda rt, binary, i: [
                "podman", "--root", f"{podman.base}/root", "--runroot", f"{podman.base}/runroot", "--tmpdir",
                f"{podman.base}/tmp", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", binary,
                "run", "--rm", "--network", "none", *d.PODMAN_ULIMITS, d.IMAGE, "/bin/true"]
        for name in engines:
            build = cmds[name]
            if name == "podman":
                env = podman.env
            else:
                env = dict(os.environ, DOCKER_CONFIG=str(work / "docker" / "client"))
            times: dict[str, list[float]] = {rt: [] for rt in runtimes}
            for i in range(args.warmup + args.runs):
                for rt, binary in runtimes.items():
                    argv = build(rt, binary, i)
                    t0 = time.perf_counter()
                    p = d.run(argv, check=False, env=env)
                    dt = time.perf_counter() - t0
                    if p.returncode != 0:
                        raise SystemExit(f"{name}/{rt}: {' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
                    if i >= args.warmup:
                        times[rt].append(dt * 1000)
            results[name] = times
    finally:
        if dockerd:
            dockerd.stop()
        if containerd:
            containerd.stop()
        if podman:
            podman.stop()
        d.unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'engine':<12}{'runtime':<8}{'median ms':>10}{'p25-p75 ms':>16}{'rune/runc':>11}")
    report = {}
    for name, times in results.items():
        rune_med = statistics.median(times["rune"])
        runc_med = statistics.median(times["runc"])
        for rt, xs in times.items():
            q1, med, q3 = quartiles(xs)
            ratio = f"{rune_med / runc_med:.2f}" if rt == "rune" else ""
            print(f"{name:<12}{rt:<8}{med:>10.1f}{f'{q1:.1f}-{q3:.1f}':>16}{ratio:>11}")
        report[name] = {rt: {"median_ms": statistics.median(xs), "runs": len(xs)} for rt, xs in times.items()}
        report[name]["ratio_rune_runc"] = rune_med / runc_med
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
