#!/usr/bin/env python3
"""containerd-shim-rune-v2 beside containerd-shim-runc-v2, in one run, on one private containerd 1.6:

1. `ctr run --rm` of the busybox image's /bin/true through each shim, taking turns run after run (median, p25-p75,
   ratio): io.containerd.runc.v2 with runc, io.containerd.rune.v2 with rune, and io.containerd.runc.v2 with rune
   (--runc-binary), which sets the shims side by side on the same runtime; and `ctr run -d` (create and start
   only);
2. the shims' memory per pod with 1 and with N pods running (CRI: a host-network sandbox and one sleeping
   container each, through the `runc` handler and the `rune` handler): RSS (what `ps` shows, file pages shared
   between shims counted in each) and PSS (shared pages divided among the processes sharing them);
3. `ctr run --rm` of /bin/true from the busybox image signed with `sgx-tools sign-image` (a sim enclave) and from the
   plain image, each through containerd-shim-rune-v2 with its fork server (an enclave container's shim preloads the
   enclave runtime into it: the init is a warm runelet), through it with every command exec'd (`[rune] fork_server =
   false`), and through containerd-shim-runc-v2 + rune: what an enclave adds over a plain container with each; and
   `rune run` of a signed sim enclave and a plain bundle in a long-lived fork server's workers, with and without the
   enclave runtime preloaded (what a shim's later commands get);
4. the time Create spends on the enclave conversion of the busybox image (ENCLAVE_TYPE=sim), cold (an empty cache)
   and from the cache, as the shim logs it, and cold for the same image with a 64 MiB file added: the difference
   gives the measurement's hashing rate.

containerd, the images and every file live under a temporary directory; the daemon and the shims are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.engines import daemons as d  # noqa: E402
from tests.engines import shimd  # noqa: E402
from tests.engines.shimd import FORK_SERVER  # noqa: E402

from inclavare.shim import forkserver  # noqa: E402


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def timed(cmd: list[str]) -> float:
    """Wall time of cmd, waited for with a blocking waitpid: subprocess's wait with a timeout polls with sleeps of
    up to 50 ms, which would round every time up to its next poll."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status = os.waitpid(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.read().decode(errors='replace')}")
    return dt


def run_rm(c: shimd.ShimContainerd, detached: bool, runs: int, warmup: int) -> dict[str, list[float]]:
    """ctr run --rm /bin/true, or (detached) ctr run -d of a sleeper: create and start only, removed untimed."""
    flags = {"runc": ["--runtime", "io.containerd.runc.v2"], "rune": c.run_flags(),
             "runc shim + rune": ["--runtime", "io.containerd.runc.v2", "--runc-binary", str(shimd.BIN / "rune"),
                                  "--runc-root", str(c.base / "runc-shim-rune-root")]}
    names = list(flags)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(warmup + runs):
        for name in names[i % 3:] + names[:i % 3]:
            cid = f"bench-{name.split()[0]}-{uuid.uuid4().hex[:8]}"
            argv = ["-d", "--null-io", *flags[name], d.IMAGE, cid, "sleep", "100"] if detached else [
                "--rm", *flags[name], d.IMAGE, cid, "/bin/true"]
            dt = timed(["ctr", "-a", c.sock, "-n", c.namespace, "run", *argv])
            if i >= warmup:
                times[name].append(dt)
            if detached:
                c.ctr("task", "kill", "-s", "SIGKILL", cid)
                c.ctr("task", "delete", "--force", cid, check=False)
                c.ctr("containers", "delete", cid)
    return times


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def pods_memory(c: shimd.ShimContainerd, cri, handler: str, n: int) -> list[tuple[float, float]]:  # noqa: ANN001
    """(RSS, PSS) in MB per pod of the shims of n running pods (each: a sandbox and one container), with rune's
    shims' fork servers: 1 s after the last start (the servers still up), and at rest (after their idle end)."""
    from tests.engines.test_cri import NODE, s

    from inclavare.tee.sgx import protobuf as pb

    binary = "containerd-shim-runc-v2" if handler == "runc" else "containerd-shim-rune-v2"
    before = {p for p in d.pids_naming(c.sock) if binary in d._cmdline(p)}
    pods = []
    try:
        for _ in range(n):
            meta = [(1, s(f"bench-{uuid.uuid4().hex[:8]}")), (2, s(uuid.uuid4().hex)), (3, s("bench"))]
            cfg = [(1, meta), (8, [(2, [(1, [(1, NODE)])])])]
            pod = pb.first(cri.call("RunPodSandbox", [(1, cfg), (2, s(handler))]), 1).decode()
            pods.append(pod)
            ccfg = [(1, [(1, s("sleeper"))]), (2, [(1, s(d.IMAGE))]), (3, s("sleep")), (3, s("100000"))]
            cid = pb.first(cri.call("CreateContainer", [(1, s(pod)), (2, ccfg), (3, cfg)]), 1).decode()
            cri.call("StartContainer", [(1, s(cid))])
        results = []
        for wait in (1.0, forkserver.IDLE + 1):
            time.sleep(wait)
            procs = [p for p in d.pids_naming(c.sock) if binary in d._cmdline(p) and p not in before]
            shims = [p for p in procs if d.comm(p) != FORK_SERVER]
            assert len(shims) == n, f"{len(shims)} {binary} processes for {n} pods"
            total = [memory(p) for p in procs]  # rune's shims with their fork servers
            results.append((sum(r for r, _ in total) / n / 1024, sum(p for _, p in total) / n / 1024))
        return results
    finally:
        for pod in pods:
            cri.call("StopPodSandbox", [(1, s(pod))])
            cri.call("RemovePodSandbox", [(1, s(pod))])


CONVERTED = re.compile(r'msg="(\S+): (signed enclave|enclave signature from the cache).*converted in ([0-9.]+) ms')


def conversion_times(c: shimd.ShimContainerd, image: str, cold: bool, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        config = c.config_path
        if cold:
            config = shimd.write_config(c.base / f"cold-{i}.toml", c.base, cache={"dir": str(c.base / f"cold-{i}")})
        cid = shimd.name("conv")
        c.ctr("run", "--rm", *c.run_flags(config), "--env", "ENCLAVE_TYPE=sim", image, cid, "/bin/true")
        found = [float(m.group(3)) for m in CONVERTED.finditer(c.log.read_text()) if m.group(1) == cid]
        kind = [m.group(2) for m in CONVERTED.finditer(c.log.read_text()) if m.group(1) == cid]
        assert found and (kind[0] == "signed enclave") == cold, (cid, kind)
        times.append(found[0])
    return times


SIGNED = "docker.io/library/rune-bench-enclave:latest"


def signed_image(c: shimd.ShimContainerd, work: Path, base: d.Image) -> str:
    """The busybox image signed with sgx-tools sign-image (a sim enclave), imported; its reference."""
    key = work / "owner.pem"
    d.run([str(shimd.BIN / "sgx-tools"), "gen-key", str(key)])
    d.run([str(shimd.BIN / "sgx-tools"), "sign-image", "--key", str(key), "--entrypoint", "/bin/true",
           f"docker-archive:{base.docker_archive}",
           f"docker-archive:{work}/signed-docker.tar:{SIGNED}"])
    d.run(["skopeo", "copy", "-q", f"docker-archive:{work}/signed-docker.tar", f"oci-archive:{work}/signed.tar:{SIGNED}"])
    c.ctr("images", "import", str(work / "signed.tar"))
    return SIGNED


def enclave_runs(c: shimd.ShimContainerd, signed: str, runs: int, warmup: int) -> dict[str, list[float]]:
    """ctr run --rm /bin/true of the signed image and of the plain one through each way of running rune, taking
    turns run after run."""
    exec_cfg = shimd.write_config(c.base / "no-fork-server.toml", c.base, rune={"fork_server": False})
    ways = {"rune shim, fork server": c.run_flags(), "rune shim, exec'd": c.run_flags(exec_cfg),
            "runc shim + rune": ["--runtime", "io.containerd.runc.v2", "--runc-binary", str(shimd.BIN / "rune"),
                                 "--runc-root", str(c.base / "runc-shim-rune-root")]}
    names = [(way, img) for way in ways for img in ("enclave", "plain")]
    times: dict[str, list[float]] = {f"{way}: {img}": [] for way, img in names}
    for i in range(warmup + runs):
        for way, img in names[i % len(names):] + names[:i % len(names)]:
            cid = f"bench-e-{uuid.uuid4().hex[:8]}"
            dt = timed(["ctr", "-a", c.sock, "-n", c.namespace, "run", "--rm", *ways[way],
                        signed if img == "enclave" else d.IMAGE, cid, "/bin/true"])
            if i >= warmup:
                times[f"{way}: {img}"].append(dt)
    return times


WARM_DRIVER = """
import os, statistics, sys, time
from inclavare.shim import forkserver
rune, root, enclave, runs = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
bundles = sys.argv[5:]
fs = forkserver.start(enclave)
times = {b: [] for b in bundles}
for i in range(runs + 2):
    for b in bundles:
        fds = (os.open("/dev/null", os.O_RDONLY), os.open("/dev/null", os.O_WRONLY), os.open("/dev/null", os.O_WRONLY))
        t = time.perf_counter()
        cmd = fs.spawn([rune, "--root", root, "run", "-b", b, f"w{i}-{len(times[b])}-{os.getpid()}"], fds, None)
        code = cmd.wait()
        dt = time.perf_counter() - t
        for fd in fds:
            os.close(fd)
        if code:
            raise SystemExit(f"rune run -b {b} in a worker: exit status {code}")
        if i >= 2:
            times[b].append(dt * 1000)
print(" ".join(str(statistics.median(times[b])) for b in bundles))
"""


def warm_server_runs(work: Path, runs: int) -> dict[str, dict[str, float]]:
    """`rune run` of a signed sim enclave and of a plain bundle in workers of one long-lived fork server, with and
    without the enclave runtime preloaded (forkserver.PRELOAD_ENCLAVE): what a shim's later commands get. Rounds of
    each kind alternate; medians of the rounds' medians."""
    from inclavare.oci.busybox import make_bundle

    key = work / "warm-owner.pem"
    d.run([str(shimd.BIN / "sgx-tools"), "gen-key", str(key)])
    plain = make_bundle(str(work / "warm-plain"), ["/bin/true"])
    signed = make_bundle(str(work / "warm-sim"), ["/bin/true"])
    d.run([str(shimd.BIN / "sgx-tools"), "sign-bundle", "--key", str(key), signed])
    out: dict[str, dict[str, list[float]]] = {"preloaded": {"enclave": [], "plain": []},
                                              "not preloaded": {"enclave": [], "plain": []}}
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), INCLAVARE_EPM_SOCKET="")
    for _ in range(3):
        for kind, flag in (("preloaded", "1"), ("not preloaded", "0")):
            p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
                                + WARM_DRIVER, str(shimd.BIN / "rune"), str(work / "warm-root"), flag, str(runs),
                                signed, plain], capture_output=True, text=True, env=env, check=True)
            e, pl = (float(x) for x in p.stdout.split())
            out[kind]["enclave"].append(e)
            out[kind]["plain"].append(pl)
    return {k: {img: statistics.median(v) for img, v in r.items()} for k, r in out.items()}


def big_image(work: Path, base: d.Image) -> tuple[str, int]:
    """The busybox image with a 64 MiB file of random bytes added; (reference, bytes added)."""
    rootfs = work / "big-rootfs"
    shutil.copytree(base.rootfs, rootfs, symlinks=True)
    size = 64 << 20
    with open(rootfs / "data.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    lay, ref = work / "big-oci", "docker.io/library/rune-busybox-big:latest"
    d.run(["umoci", "init", "--layout", str(lay)])
    d.run(["umoci", "new", "--image", f"{lay}:big"])
    d.run(["umoci", "insert", "--image", f"{lay}:big", str(rootfs), "/"])
    d.run(["umoci", "config", "--image", f"{lay}:big", "--config.cmd", "/bin/true", "--config.env", "PATH=/bin"])
    d.run(["skopeo", "copy", "-q", f"oci:{lay}:big", f"oci-archive:{work}/big.tar:{ref}"])
    return ref, size


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed ctr run --rm per shim (at least 15)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: containerd needs it")
    if args.runs < 15:
        raise SystemExit("--runs: at least 15")
    reason = d.ensure_packages()
    if reason:
        raise SystemExit(reason)
    d.run([sys.executable, "-m", "inclavare.launcher", str(shimd.BIN)], env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    work = Path(tempfile.mkdtemp(prefix="rune-shim-bench-"))
    out: dict[str, object] = {}
    c = None
    cri = None
    try:
        image = d.Image(work / "image").build()
        c = shimd.ShimContainerd(work / "containerd").start()
        for ns in ([], ["-n", "k8s.io"]):
            c.ctr(*ns, "images", "import", str(image.oci_archive))
        c.ctr("-n", "k8s.io", "images", "import", str(image.pause_archive))

        for key, detached, title in (("ctr_run_rm", False, "ctr run --rm /bin/true"),
                                     ("ctr_run_d", True, "ctr run -d (create + start)")):
            times = run_rm(c, detached, args.runs, args.warmup)
            q = {k: quartiles(v) for k, v in times.items()}
            print(f"{title}, {args.runs} runs each (ms): median, p25-p75")
            for k, label in (("runc", "containerd-shim-runc-v2 + runc"), ("rune", "containerd-shim-rune-v2 + rune"),
                             ("runc shim + rune", "containerd-shim-runc-v2 + rune")):
                print(f"  {label:32s} {q[k][1] * 1000:6.1f}   {q[k][0] * 1000:.1f}-{q[k][2] * 1000:.1f}")
            print(f"  ratio rune shim / runc shim (each with its runtime)  {q['rune'][1] / q['runc'][1]:.2f};"
                  f" the shims alone, both driving rune: {q['rune'][1] / q['runc shim + rune'][1]:.2f}")
            out[key + "_ms"] = {k: {"median": q[k][1] * 1000, "p25": q[k][0] * 1000, "p75": q[k][2] * 1000}
                                for k in q}
            out[key + "_ratio"] = q["rune"][1] / q["runc"][1]
            out[key + "_shim_ratio"] = q["rune"][1] / q["runc shim + rune"][1]

        times = enclave_runs(c, signed_image(c, work, image), args.runs, args.warmup)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"ctr run --rm /bin/true, sim enclave (signed image) and plain, {args.runs} runs each (ms): median, "
              "p25-p75; what the enclave adds")
        for way in ("rune shim, fork server", "rune shim, exec'd", "runc shim + rune"):
            q = {img: quartiles(times[f"{way}: {img}"]) for img in ("enclave", "plain")}
            print(f"  {way:24s} enclave {q['enclave'][1] * 1000:6.1f} ({q['enclave'][0] * 1000:.1f}-"
                  f"{q['enclave'][2] * 1000:.1f})  plain {q['plain'][1] * 1000:6.1f}  enclave adds "
                  f"{(q['enclave'][1] - q['plain'][1]) * 1000:5.1f}  ratio {q['enclave'][1] / q['plain'][1]:.2f}")
        out["enclave_ctr_run_rm_ms"] = med
        warm = warm_server_runs(work, args.runs)
        print("rune run /bin/true in a warm fork server's worker (ms, medians of three rounds): signed sim enclave, "
              "plain")
        for kind, r in warm.items():
            print(f"  enclave runtime {kind:14s} enclave {r['enclave']:6.1f}  plain {r['plain']:6.1f}  ratio "
                  f"{r['enclave'] / r['plain']:.2f}")
        out["warm_server_rune_run_ms"] = warm

        from tests.engines.test_cri import CRI, _grpc

        cri = CRI(_grpc(), c.sock)
        print("shim memory per pod (MB): RSS, PSS; 1 s after the starts (rune's fork servers up), then at rest")
        mem: dict[str, dict[str, list[list[float]]]] = {}
        for n in (1, args.pods):
            for handler in ("runc", "rune"):
                mem.setdefault(handler, {})[str(n)] = [list(x) for x in pods_memory(c, cri, handler, n)]
            for i, when in enumerate(("after start", "at rest")):
                for handler in ("runc", "rune"):
                    rss, pss = mem[handler][str(n)][i]
                    print(f"  {n:3d} pod(s)  {when:11s}  containerd-shim-{handler}-v2  RSS {rss:5.1f}  PSS {pss:5.1f}")
                r = mem["rune"][str(n)][i][0] / mem["runc"][str(n)][i][0]
                p = mem["rune"][str(n)][i][1] / mem["runc"][str(n)][i][1]
                print(f"  {n:3d} pod(s)  {when:11s}  ratio rune/runc  RSS {r:.2f}  PSS {p:.2f}")
        out["memory_per_pod_mb"] = mem

        cold = conversion_times(c, d.IMAGE, True, 5)
        c.ctr("run", "--rm", *c.run_flags(), "--env", "ENCLAVE_TYPE=sim", d.IMAGE, shimd.name("fill"), "/bin/true")
        cached = conversion_times(c, d.IMAGE, False, 15)
        ref, added = big_image(work, image)
        c.ctr("images", "import", str(work / "big.tar"))
        big = conversion_times(c, ref, True, 3)
        rate = added / 1e6 / ((statistics.median(big) - statistics.median(cold)) / 1000)
        print("enclave conversion in Create (ms, median): busybox cold, busybox from the cache, busybox + 64 MiB cold")
        print(f"  {statistics.median(cold):.1f}   {statistics.median(cached):.1f}   {statistics.median(big):.1f}"
              f"   (hashing {rate:.0f} MB/s)")
        out["conversion_ms"] = {"cold": statistics.median(cold), "cached": statistics.median(cached),
                                "cold_plus_64MiB": statistics.median(big), "hash_MB_per_s": rate}
    finally:
        if cri is not None:
            cri.close()
        if c is not None:
            c.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
