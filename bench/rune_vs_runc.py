#!/usr/bin/env python3
"""rune against runc and crun, side by side in one run.

Times `RUNTIME run` of /bin/true and `create` + `start` + `delete -f` of a busybox bundle. The runtimes take turns
run after run (so a change of machine load hits all of them alike); each gets at least --runs runs; the report
gives medians, p25-p75, the ratios rune/runc and rune/crun, and each runtime process's peak RSS (GNU time).

A last row, `interp`, is the floor of any runtime written in Python: rune's interpreter started bare
(`PYTHON -I -S -c pass`), once in the run column, three times in the create+start+delete column (one start per
command), in the same turns; its ratios to runc and crun are printed beside rune's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from peers import REPO, Runtime, bundle, pct, private_cgroup_view, runtimes  # noqa: F401 - re-exported


def peak_rss_kb(rt: Runtime, b: str, runs: int = 5) -> int:
    """The runtime process's own peak RSS, by GNU time(1) (the rusage of a child forked from this Python would
    count this process's memory too)."""
    if not os.path.exists("/usr/bin/time"):
        return 0
    peak = 0
    for i in range(runs):
        argv = ["/usr/bin/time", "-f", "%M", *rt.argv, "run", "--bundle", b, f"bench-rss-{rt.name}-{i}"]
        if rt.mntns:
            argv = ["nsenter", f"--mount={rt.mntns}", *argv]
        p = subprocess.run(argv, capture_output=True, text=True)
        peak = max(peak, int(p.stderr.strip().splitlines()[-1]))
    return peak


class Floor(Runtime):
    """rune's interpreter started bare, whatever the command: one start per runtime command."""

    def __init__(self, launcher: str) -> None:
        with open(launcher) as f:
            shebang = f.readline()
        python = shebang[2:].split()[0] if shebang.startswith("#!") else sys.executable
        super().__init__("interp", [python, "-I", "-S", "-c", "pass"])

    def call(self, *args: str) -> tuple[float, int, int]:
        t = time.perf_counter()
        subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t, 0, 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rune", default=os.path.join(REPO, "bin", "rune"))
    ap.add_argument("--baseline", help="another rune launcher (e.g. of an earlier commit), measured beside")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: containers need it")
    work = tempfile.mkdtemp(prefix="rune-bench-")
    helper = None
    try:
        b = bundle(os.path.join(work, "bundle"), ["/bin/true"])
        peers, helper = runtimes(work, args.rune, args.baseline)
        peers.append(Floor(args.rune))
        for i in range(args.warmup + args.runs):
            for rt in peers:
                cid = f"bench-{rt.name}-{i}"
                dt = rt.call("run", "--bundle", b, cid)[0]
                t0 = time.perf_counter()
                rt.call("create", "--bundle", b, cid + "c")
                rt.call("start", cid + "c")
                rt.call("delete", "-f", cid + "c")
                cycle = time.perf_counter() - t0
                if i >= args.warmup:
                    rt.run_times.append(dt)
                    rt.cycle_times.append(cycle)
        for rt in peers:
            if not isinstance(rt, Floor):
                rt.max_rss_kb = peak_rss_kb(rt, b)
        report: dict = {"runs": args.runs, "runtimes": {}}
        print(f"{'runtime':9} {'run median':>11} {'p25-p75':>15} {'create+start+delete':>21} {'p25-p75':>15} "
              f"{'peak RSS':>9}")
        for rt in peers:
            r = {
                "run_median_ms": statistics.median(rt.run_times) * 1000,
                "run_p25_ms": pct(rt.run_times, 0.25) * 1000,
                "run_p75_ms": pct(rt.run_times, 0.75) * 1000,
                "cycle_median_ms": statistics.median(rt.cycle_times) * 1000,
                "cycle_p25_ms": pct(rt.cycle_times, 0.25) * 1000,
                "cycle_p75_ms": pct(rt.cycle_times, 0.75) * 1000,
                "peak_rss_kb": rt.max_rss_kb,
            }
            report["runtimes"][rt.name] = r
            print(f"{rt.name:9} {r['run_median_ms']:9.1f}ms {r['run_p25_ms']:6.1f}-{r['run_p75_ms']:5.1f} ms "
                  f"{r['cycle_median_ms']:19.1f}ms {r['cycle_p25_ms']:6.1f}-{r['cycle_p75_ms']:5.1f} ms "
                  f"{r['peak_rss_kb'] / 1024:7.1f}MB")
        for mine in ("rune", "interp"):
            me = report["runtimes"][mine]
            for other in ("rune-base", "runc", "crun") if mine == "rune" else ("runc", "crun"):
                o = report["runtimes"].get(other)
                if o:
                    ratios = (me["run_median_ms"] / o["run_median_ms"], me["cycle_median_ms"] / o["cycle_median_ms"])
                    report[f"{mine}/{other}"] = {"run": ratios[0], "create_start_delete": ratios[1]}
                    print(f"{mine}/{other}: run {ratios[0]:.2f}, create+start+delete {ratios[1]:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()
        for d in ("rune", "rune-base", "runc", "crun"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
