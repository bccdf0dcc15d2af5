#!/usr/bin/env python3
"""rune against runc and crun, side by side in one run.

Times `RUNTIME run` of /bin/true and `create` + `start` + `delete -f` of a busybox bundle. The runtimes take turns
run after run (so a change of machine load hits all of them alike); each gets at least --runs runs; the report
gives medians, p25-p75, the ratios rune/runc and rune/crun, and the peak RSS of the rune process.

crun 1.8 refuses hybrid cgroup hosts; as shared/reference/environment.md describes, it runs here in a private
mount namespace in which /sys/fs/cgroup/unified/cgroup.controllers reads empty. That namespace is made once by a
helper process and crun is started inside it with setns(2) in the forked child, so crun pays no extra exec.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from inclavare.oci.busybox import make_bundle  # noqa: E402

CLONE_NEWNS = 0x00020000


class Runtime:
    def __init__(self, name: str, argv: list[str], mntns: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.mntns = mntns
        self.run_times: list[float] = []
        self.cycle_times: list[float] = []
        self.max_rss_kb = 0

    def _enter(self) -> None:
        if self.mntns:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.mntns, os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNS) != 0:
                os._exit(126)

    def call(self, *args: str) -> tuple[float, int, int]:
        """(seconds, exit status, max RSS in kB) of one invocation."""
        t = time.perf_counter()
        p = subprocess.Popen([*self.argv, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, preexec_fn=self._enter if self.mntns else None)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            raise SystemExit(f"{self.name} {' '.join(args)} failed ({p.returncode}): {err.strip()}")
        if p.stderr:
            p.stderr.close()
        return dt, p.returncode, ru.ru_maxrss


def private_cgroup_view() -> tuple[subprocess.Popen, str]:
    """A helper process holding a mount namespace in which crun sees no cgroup2 controllers."""
    script = ("mount --make-rprivate / && mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers "
              "&& echo ready && exec sleep 1000000")
    helper = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    if helper.stdout.readline().strip() != "ready":
        raise SystemExit("could not prepare the mount namespace for crun")
    return helper, f"/proc/{helper.pid}/ns/mnt"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rune", default=os.path.join(REPO, "bin", "rune"))
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: containers need it")
    if not os.path.exists(args.rune):
        subprocess.run([sys.executable, "-m", "inclavare.launcher", os.path.dirname(args.rune)], check=True)
    work = tempfile.mkdtemp(prefix="rune-bench-")
    helper = None
    try:
        bundle = make_bundle(os.path.join(work, "bundle"), ["/bin/true"])
        # crun 1.8 knows runtime-spec versions up to 1.0.x only; the bundle uses none of 1.1/1.2's fields
        with open(os.path.join(bundle, "config.json")) as f:
            config = json.load(f)
        config["ociVersion"] = "1.0.2"
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        runtimes = [Runtime("rune", [args.rune, "--root", os.path.join(work, "rune")])]
        if shutil.which("runc"):
            runtimes.append(Runtime("runc", ["runc", "--root", os.path.join(work, "runc")]))
        if shutil.which("crun"):
            mntns = None
            if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
                helper, mntns = private_cgroup_view()
            runtimes.append(Runtime("crun", ["crun", "--root", os.path.join(work, "crun")], mntns))
        n = 0
        for i in range(args.warmup + args.runs):
            for rt in runtimes:
                cid = f"bench-{rt.name}-{i}"
                dt, _, rss = rt.call("run", "--bundle", bundle, cid)
                t0 = time.perf_counter()
                rss = max(rss, rt.call("create", "--bundle", bundle, cid + "c")[2])
                rss = max(rss, rt.call("start", cid + "c")[2])
                rss = max(rss, rt.call("delete", "-f", cid + "c")[2])
                cycle = time.perf_counter() - t0
                if i >= args.warmup:
                    rt.run_times.append(dt)
                    rt.cycle_times.append(cycle)
                    rt.max_rss_kb = max(rt.max_rss_kb, rss)
                    n += 1
        report: dict = {"runs": args.runs, "runtimes": {}}
        print(f"{'runtime':8} {'run median':>11} {'p25-p75':>15} {'create+start+delete':>21} {'p25-p75':>15} "
              f"{'peak RSS':>9}")
        for rt in runtimes:
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
            print(f"{rt.name:8} {r['run_median_ms']:9.1f}ms {r['run_p25_ms']:6.1f}-{r['run_p75_ms']:5.1f} ms "
                  f"{r['cycle_median_ms']:19.1f}ms {r['cycle_p25_ms']:6.1f}-{r['cycle_p75_ms']:5.1f} ms "
                  f"{r['peak_rss_kb'] / 1024:7.1f}MB")
        rune = report["runtimes"]["rune"]
        for other in ("runc", "crun"):
            o = report["runtimes"].get(other)
            if o:
                ratios = (rune["run_median_ms"] / o["run_median_ms"], rune["cycle_median_ms"] / o["cycle_median_ms"])
                report[f"rune/{other}"] = {"run": ratios[0], "create_start_delete": ratios[1]}
                print(f"rune/{other}: run {ratios[0]:.2f}, create+start+delete {ratios[1]:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    finally:
        if helper is not None:
            helper.kill()
            helper.wait()
        for d in ("rune", "runc", "crun"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
