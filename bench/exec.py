#!/usr/bin/env python3
"""`exec` latency: `RUNTIME exec ID true` into a detached sleeping busybox container, rune against runc and crun.

Each runtime gets its own --root and its own container; the runtimes take turns run after run, each gets at least
--runs timed runs (after --warmup), and the report gives medians, p25-p75 and the ratios rune/runc and rune/crun.
crun runs inside the private mount namespace of rune_vs_runc.py (crun 1.8 refuses hybrid cgroup hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from peers import REPO, Runtime, bundle, pct, runtimes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rune", default=os.path.join(REPO, "bin", "rune"))
    ap.add_argument("--baseline", help="another rune launcher (e.g. of an earlier commit), measured beside")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: containers need it")
    if args.runs < 30:
        raise SystemExit("--runs: take at least 30 runs for a stable median")
    work = tempfile.mkdtemp(prefix="rune-bench-exec-")
    helper = None
    started: list[tuple[Runtime, str]] = []
    try:
        b = bundle(os.path.join(work, "bundle"), ["sleep", "1000000"])
        peers, helper = runtimes(work, args.rune, args.baseline)
        for rt in peers:
            cid = f"bench-exec-{rt.name}-{os.getpid()}"
            rt.call("run", "-d", "--bundle", b, cid)
            started.append((rt, cid))
        for i in range(args.warmup + args.runs):
            for rt, cid in started:
                dt = rt.call("exec", cid, "true")[0]
                if i >= args.warmup:
                    rt.run_times.append(dt)
        report: dict = {"runs": args.runs, "runtimes": {}}
        print(f"{'runtime':9} {'exec median':>12} {'p25-p75':>16}")
        for rt in peers:
            r = {"exec_median_ms": statistics.median(rt.run_times) * 1000,
                 "exec_p25_ms": pct(rt.run_times, 0.25) * 1000, "exec_p75_ms": pct(rt.run_times, 0.75) * 1000}
            report["runtimes"][rt.name] = r
            print(f"{rt.name:9} {r['exec_median_ms']:10.1f}ms {r['exec_p25_ms']:7.1f}-{r['exec_p75_ms']:5.1f} ms")
        rune = report["runtimes"]["rune"]["exec_median_ms"]
        for other in ("rune-base", "runc", "crun"):
            if other in report["runtimes"]:
                ratio = rune / report["runtimes"][other]["exec_median_ms"]
                report[f"rune/{other}"] = ratio
                print(f"rune/{other}: exec {ratio:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    finally:
        for rt, cid in started:
            try:
                rt.call("delete", "-f", cid)
            except SystemExit as e:
                print(f"cleanup: {e}", file=sys.stderr)
        if helper is not None:
            helper.kill()
            helper.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
