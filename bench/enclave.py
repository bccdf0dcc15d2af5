#!/usr/bin/env python3
"""Enclave container start-up: `rune run` of /bin/true through the reference PAL (liberpal-skeleton v2, type sim)
and through the built-in sim runtime (signed bundle: launch check, platform keys, /dev/attestation), against a plain
rune container and runc. The variants take turns run after run; each gets --runs runs (>= 30); medians and p25-p75.

    python3 bench/enclave.py [--runs N] [--json FILE]     (needs root, `make pal launchers`, runc on PATH)
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from inclavare.oci.busybox import make_bundle  # noqa: E402

RUNE = os.path.join(REPO, "bin", "rune")
SGX_TOOLS = os.path.join(REPO, "bin", "sgx-tools")
PAL = os.path.join(REPO, "build", "pal", "liberpal-skeleton-v2.so")


def edit(bundle: str, fn) -> None:  # noqa: ANN001
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        c = json.load(f)
    fn(c)
    with open(path, "w") as f:
        json.dump(c, f)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.runs < 30:
        ap.error("--runs must be at least 30")
    for need in (RUNE, SGX_TOOLS, PAL):
        if not os.path.exists(need):
            raise SystemExit(f"{need} is missing: run `make pal launchers` first")
    runc = shutil.which("runc")
    tmp = tempfile.mkdtemp(prefix="bench-enclave-")
    env = dict(os.environ, INCLAVARE_SIM_DIR=os.path.join(tmp, "sim"))
    try:
        rootfs = os.path.join(tmp, "plain", "rootfs")
        make_bundle(os.path.join(tmp, "plain"), ["/bin/true"])
        make_bundle(os.path.join(tmp, "pal"), ["/bin/true"], rootfs=rootfs)
        edit(os.path.join(tmp, "pal"), lambda c: c["process"]["env"].extend(
            ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={PAL}"]))
        sim = os.path.join(tmp, "sim-bundle")
        make_bundle(sim, ["/bin/true"])
        key = os.path.join(tmp, "key.pem")
        subprocess.run([SGX_TOOLS, "gen-key", key], check=True, stdout=subprocess.DEVNULL, env=env)
        subprocess.run([SGX_TOOLS, "sign-bundle", "--key", key, sim], check=True, stdout=subprocess.DEVNULL, env=env)
        variants = {
            "rune enclave (reference PAL v2)": lambda i: [RUNE, "--root", f"{tmp}/root", "run", "-b", f"{tmp}/pal",
                                                          f"p{i}"],
            "rune enclave (built-in sim, signed)": lambda i: [RUNE, "--root", f"{tmp}/root", "run", "-b", sim,
                                                              f"s{i}"],
            "rune plain": lambda i: [RUNE, "--root", f"{tmp}/root", "run", "-b", f"{tmp}/plain", f"r{i}"],
        }
        if runc:
            variants["runc plain"] = lambda i: [runc, "--root", f"{tmp}/runc", "run", "-b", f"{tmp}/plain", f"c{i}"]
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(a.runs + 2):
            for name, argv in variants.items():
                dt = timed(argv(i), env)
                if i >= 2:  # the first two runs warm the page cache
                    times[name].append(dt)
        report = {}
        for name, ts in times.items():
            q = statistics.quantiles(ts, n=4)
            report[name] = {"median_ms": round(statistics.median(ts) * 1000, 1), "p25_ms": round(q[0] * 1000, 1),
                            "p75_ms": round(q[2] * 1000, 1), "runs": len(ts)}
        width = max(map(len, report))
        print(f"{'rune run /bin/true':{width}}  median   p25-p75   (ms, {a.runs} runs each)")
        for name, r in report.items():
            print(f"{name:{width}}  {r['median_ms']:6.1f}   {r['p25_ms']:.1f}-{r['p75_ms']:.1f}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(report, f, indent=1)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
