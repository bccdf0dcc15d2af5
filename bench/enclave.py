#!/usr/bin/env python3
"""Enclave container start-up: `rune run` of /bin/true through the reference PAL (liberpal-skeleton v2 and v3, type sim;
v3 also with epm's pool of pre-initialised enclaves) and through the built-in sim runtime (signed bundle: launch
check, platform keys, /dev/attestation), with and without the measurement cache and with epm's bundle cache (an epm
daemon started here on a private socket, stopped by its PID; the other rows run with epm off), and a large signed
image (a Debian rootfs with python3, from this host's Debian packages, 100 MB or more) cold (every file hashed) and
warm (cache hits; also on a new overlayfs mount each run, as an engine gives each container one), against plain rune
containers of the same rootfs and runc. The variants take turns run after run; each gets --runs runs (>= 30);
medians, p25-p75, and the ratio to plain rune of the same rootfs; MB/s of the cold large launch's measurement. Beside
the wall-clock times, the CPU time (user + system) of each run's whole process tree, which a machine shared with
other work disturbs less.

    python3 bench/enclave.py [--runs N] [--json FILE] [--no-large]   (needs root, `make pal launchers`, runc on PATH)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from inclavare.linux import syscalls  # noqa: E402
from inclavare.oci.busybox import build_rootfs, make_bundle  # noqa: E402

RUNE = os.path.join(REPO, "bin", "rune")
SGX_TOOLS = os.path.join(REPO, "bin", "sgx-tools")
PAL = os.path.join(REPO, "build", "pal", "liberpal-skeleton-v2.so")
PAL3 = os.path.join(REPO, "build", "pal", "liberpal-skeleton-v3.so")
# a Debian rootfs with python3: the host's python3.11 with its standard library and dist-packages and the libraries
# it links, on top of the busybox rootfs
PYTHON = "/usr/bin/python3.11"
PYTHON_TREES = ("/usr/lib/python3.11", "/usr/lib/python3")


def edit(bundle: str, fn) -> None:  # noqa: ANN001
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        c = json.load(f)
    fn(c)
    with open(path, "w") as f:
        json.dump(c, f)


def large_rootfs(root: str) -> int:
    """The busybox rootfs plus python3 (see PYTHON_TREES); its size in bytes."""
    build_rootfs(root)
    for tree in PYTHON_TREES:
        shutil.copytree(tree, root + tree, symlinks=True, dirs_exist_ok=True)  # with the byte code Debian compiles
    os.makedirs(root + "/usr/bin", exist_ok=True)
    shutil.copy2(PYTHON, root + PYTHON)
    libs = subprocess.run(["ldd", PYTHON], capture_output=True, text=True, check=True).stdout
    for line in libs.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            shutil.copy2(path, root + path)
    size = 0
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                size += os.lstat(p).st_size
    return size


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds of the run, and the CPU seconds of its process tree (every process of it was waited for:
    rune reaps the container's init, the init its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()}")
    return dt, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json")
    ap.add_argument("--no-large", action="store_true", help="leave out the large image")
    a = ap.parse_args()
    if a.runs < 30:
        ap.error("--runs must be at least 30")
    for need in (RUNE, SGX_TOOLS, PAL, PAL3):
        if not os.path.exists(need):
            raise SystemExit(f"{need} is missing: run `make pal launchers` first")
    runc = shutil.which("runc")
    tmp = tempfile.mkdtemp(prefix="bench-enclave-")
    overlays: list[str] = []  # the mounted one of fresh_overlay's
    env = dict(os.environ, INCLAVARE_SIM_DIR=os.path.join(tmp, "sim"), INCLAVARE_EPM_SOCKET="")
    epm = None
    try:
        epm_sock = os.path.join(tmp, "epm", "epm.sock")
        with open(os.path.join(tmp, "epm.json"), "w") as f:
            json.dump({"socket": epm_sock, "cache_dir": os.path.join(tmp, "epm-cache"), "pool_runtimes": [PAL3],
                       "pool_size": 4}, f)
        epm = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", os.path.join(tmp, "epm.json")],
                               env=dict(env, PYTHONPATH=os.path.join(REPO, "src")), stderr=subprocess.PIPE, text=True)
        if "serving" not in epm.stderr.readline():
            raise SystemExit("epm did not start")
        with_epm = dict(env, INCLAVARE_EPM_SOCKET=epm_sock)
        rootfs = os.path.join(tmp, "plain", "rootfs")
        make_bundle(os.path.join(tmp, "plain"), ["/bin/true"])
        for name, lib in (("pal", PAL), ("pal3", PAL3)):
            make_bundle(os.path.join(tmp, name), ["/bin/true"], rootfs=rootfs)
            edit(os.path.join(tmp, name), lambda c, lib=lib: c["process"]["env"].extend(
                ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={lib}"]))
        key = os.path.join(tmp, "key.pem")
        subprocess.run([SGX_TOOLS, "gen-key", key], check=True, stdout=subprocess.DEVNULL, env=env)

        def signed(name: str, rootfs: str | None = None) -> str:
            b = os.path.join(tmp, name)
            make_bundle(b, ["/bin/true"], rootfs=rootfs)
            subprocess.run([SGX_TOOLS, "sign-bundle", "--key", key, b], check=True, stdout=subprocess.DEVNULL,
                           env=env)
            return b

        sim = signed("sim-bundle")
        cold = dict(env, INCLAVARE_SIM_MEASURE_CACHE="0")

        def run(bundle: str, prefix: str, e: dict[str, str] = env):  # noqa: ANN202
            return lambda i: ([RUNE, "--root", f"{tmp}/root", "run", "-b", bundle, f"{prefix}{i}"], e)

        def fresh_overlay(bundle: str, prefix: str):  # noqa: ANN202
            """Each run on a new overlayfs mount over the bundle's rootfs, as an engine mounts one per container
            (made and removed outside the timing): the measurement cache hits across containers."""
            with open(os.path.join(bundle, "config.json")) as f:
                config = json.load(f)

            def argv(i: int):  # noqa: ANN202
                while overlays:
                    syscalls.umount2(overlays.pop(), 0)
                b = os.path.join(tmp, f"{prefix}-{i}")
                for sub in ("upper", "work", "rootfs"):
                    os.makedirs(os.path.join(b, sub))
                syscalls.mount("overlay", f"{b}/rootfs", "overlay", 0,
                               f"lowerdir={config['root']['path']},upperdir={b}/upper,workdir={b}/work")
                overlays.append(f"{b}/rootfs")
                with open(os.path.join(b, "config.json"), "w") as f:
                    json.dump(dict(config, root=dict(config["root"], path=f"{b}/rootfs")), f)
                return run(b, prefix)(i)

            return argv

        variants = {
            "rune plain": run(f"{tmp}/plain", "r"),
            "rune enclave (reference PAL v2)": run(f"{tmp}/pal", "p"),
            "rune enclave (reference PAL v2, epm up)": run(f"{tmp}/pal", "pe", with_epm),
            "rune enclave (reference PAL v3)": run(f"{tmp}/pal3", "q"),
            "rune enclave (reference PAL v3, epm pool)": run(f"{tmp}/pal3", "qe", with_epm),
            "rune enclave (built-in sim, signed, cache)": run(sim, "s"),
            "rune enclave (built-in sim, signed, no cache)": run(sim, "n", cold),
            "rune enclave (built-in sim, signed, epm)": run(sim, "e", with_epm),
        }
        base = dict.fromkeys(variants, "rune plain")
        large_mb = 0.0
        if not a.no_large:
            large = os.path.join(tmp, "large-rootfs")
            large_mb = large_rootfs(large) / 1e6
            make_bundle(os.path.join(tmp, "large-plain"), ["/bin/true"], rootfs=large)
            big = signed("large-sim", rootfs=large)
            check = subprocess.run([RUNE, "--root", f"{tmp}/root", "run", "-b", os.path.join(tmp, "large-plain"),
                                    "py"], capture_output=True, env=env)  # /bin/true; python3 is checked next
            edit(os.path.join(tmp, "large-plain"), lambda c: c["process"].update(args=[PYTHON, "-c", "print(6*7)"]))
            py = subprocess.run([RUNE, "--root", f"{tmp}/root", "run", "-b", os.path.join(tmp, "large-plain"),
                                 "py2"], capture_output=True, text=True, env=env)
            if check.returncode or py.stdout.strip() != "42":
                raise SystemExit(f"python3 does not run in the large rootfs: {py.stderr.strip()}")
            edit(os.path.join(tmp, "large-plain"), lambda c: c["process"].update(args=["/bin/true"]))
            variants.update({
                f"rune plain, large image ({large_mb:.0f} MB)": run(os.path.join(tmp, "large-plain"), "lp"),
                "rune enclave (built-in sim, large, warm: cache hits)": run(big, "lw"),
                "rune enclave (built-in sim, large, warm, a new overlay each run)": fresh_overlay(big, "lo"),
                "rune enclave (built-in sim, large, cold: every file hashed)": run(big, "lc", cold),
                "rune enclave (built-in sim, large, epm)": run(big, "le", with_epm),
            })
            base[f"rune plain, large image ({large_mb:.0f} MB)"] = "rune plain"
            for name in list(variants)[-4:]:
                base[name] = f"rune plain, large image ({large_mb:.0f} MB)"
        if runc:
            variants["runc plain"] = lambda i: ([runc, "--root", f"{tmp}/runc", "run", "-b", f"{tmp}/plain",
                                                 f"c{i}"], env)
            base["runc plain"] = "rune plain"
        times: dict[str, list[float]] = {k: [] for k in variants}
        cpus: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(a.runs + 2):
            for name, argv in variants.items():
                dt, cpu = timed(*argv(i))
                if i >= 2:  # the first two runs warm the page cache
                    times[name].append(dt)
                    cpus[name].append(cpu)
        report = {}
        for name, ts in times.items():
            q = statistics.quantiles(ts, n=4)
            report[name] = {"median_ms": round(statistics.median(ts) * 1000, 1), "p25_ms": round(q[0] * 1000, 1),
                            "p75_ms": round(q[2] * 1000, 1), "runs": len(ts),
                            "cpu_median_ms": round(statistics.median(cpus[name]) * 1000, 1)}
        for name, r in report.items():
            r["ratio"] = round(r["median_ms"] / report[base[name]]["median_ms"], 2)
            r["cpu_ratio"] = round(r["cpu_median_ms"] / report[base[name]]["cpu_median_ms"], 2)
            r["versus"] = base[name]
        width = max(map(len, report))
        print(f"{'rune run /bin/true':{width}}  median   p25-p75      ratio   cpu    ratio (to plain rune of the "
              f"same rootfs; ms, {a.runs} runs each; load {open('/proc/loadavg').read().split()[0]})")
        for name, r in report.items():
            print(f"{name:{width}}  {r['median_ms']:6.1f}   {r['p25_ms']:6.1f}-{r['p75_ms']:<6.1f}  {r['ratio']:.2f}x  "
                  f"{r['cpu_median_ms']:6.1f} {r['cpu_ratio']:.2f}x")
        cold_name = "rune enclave (built-in sim, large, cold: every file hashed)"
        if cold_name in report:
            warm_ms = report["rune enclave (built-in sim, large, warm: cache hits)"]["median_ms"]
            mbs = large_mb / max(report[cold_name]["median_ms"] - warm_ms, 0.1) * 1000
            report["large image"] = {"mb": round(large_mb, 1), "cold_measure_mb_per_s": round(mbs)}
            print(f"large image: {large_mb:.0f} MB, a cold launch measures it at {mbs:.0f} MB/s (cold - warm)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(report, f, indent=1)
        return 0
    finally:
        if epm is not None and epm.poll() is None:
            os.kill(epm.pid, signal.SIGTERM)
            epm.wait(10)
        for m in overlays:
            syscalls.umount2(m, syscalls.MNT_DETACH)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
