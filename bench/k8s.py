#!/usr/bin/env python3
"""Pod start to Running through the real kubelet (tests/k8s/cluster.py: etcd, kube-apiserver, scheduler, controller
manager, kubelet, containerd 1.6, all started privately and stopped by PID), side by side in one run, taking turns
pod after pod:

- runc: RuntimeClass `runc` (containerd's runc shim, runc);
- rune plain: RuntimeClass `rune` (containerd-shim-rune-v2, rune);
- rune-runc plain: RuntimeClass `rune-runc` (containerd's runc shim calling rune as a drop-in);
- rune enclave: RuntimeClass `rune` with inclavare-containers.io/sim-enclave from rune-device-plugin (a sim enclave:
  the shim signs the ordinary image at Create, from its cache after the first pod; the init-runelet launches it).

Two times from just before `kubectl create`: until a watch (one `kubectl get pods --watch`, started before) reports
the pod Running with its container ready, which is what a user waits for but moves in steps of the kubelet's PLEG
relist period (1 s, fixed in the kubelet; evented PLEG needs containerd 1.7's CRI events); and until the container
started, as containerd's CRI reports it (crictl inspect: status.startedAt, nanoseconds, the same clock), which shows
what the runtime and the shim cost. The pod is then deleted and waited for. Medians, p25-p75 and ratios.
Goals (issue 13): plain within 1.1x of runc, enclave within 1.5x of plain.

    python3 bench/k8s.py [-n 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.engines import daemons as d  # noqa: E402
from tests.engines import shimd  # noqa: E402
from tests.k8s import cluster as k  # noqa: E402

SIM = "inclavare-containers.io/sim-enclave"
VARIANTS = {  # name: (RuntimeClass, resources)
    "runc": ("runc", None),
    "rune plain": ("rune", None),
    "rune-runc plain": ("rune-runc", None),
    "rune enclave": ("rune", {"limits": {SIM: "1"}}),
}


class Watch:
    """One `kubectl get pods --watch`: the monotonic time each pod was first seen Running and ready."""

    def __init__(self, c: k.Cluster) -> None:
        self.running: dict[str, float] = {}
        self.seen = threading.Condition()
        fmt = "jsonpath={.metadata.name} {.status.phase} {.status.containerStatuses[0].ready}{\"\\n\"}"
        self.proc = subprocess.Popen([*c.wrap, str(c.tools.kubectl), "--kubeconfig", str(c.admin), "get", "pods",
                                      "--watch", "-o", fmt], stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            parts = line.split()
            if len(parts) == 3 and parts[1] == "Running" and parts[2] == "true":
                with self.seen:
                    self.running.setdefault(parts[0], now)
                    self.seen.notify_all()

    def wait(self, name: str, timeout: float = 120) -> float:
        with self.seen:
            if not self.seen.wait_for(lambda: name in self.running, timeout):
                raise RuntimeError(f"pod {name} did not become Running")
            return self.running[name]

    def stop(self) -> None:
        d.stop_pid(self.proc.pid)


def started_at(c: k.Cluster, name: str) -> float:
    """The container's start (CRI status.startedAt) in seconds since the epoch."""
    import datetime

    cid = c.get("pod", name)["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]
    stamp = json.loads(c.crictl("inspect", cid).stdout)["status"]["startedAt"]
    whole, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC).timestamp()
    return base + float(f"0.{frac or 0}")


def start_pod(c: k.Cluster, watch: Watch, runtime_class: str, resources: dict | None) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    body = json.dumps(k.pod(name, ["sleep", "1000"], runtime_class=runtime_class, resources=resources))
    t0, w0 = time.monotonic(), time.time()
    c.kubectl("create", "-f", "-", input=body)
    running = watch.wait(name) - t0
    started = started_at(c, name) - w0
    c.kubectl("delete", "pod", name, "--wait", "--timeout", "60s", "--grace-period", "1")
    return running, started


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="pods per variant (default 10)")
    args = ap.parse_args()
    tools, why = k.ensure_tools()
    if tools is None:
        print(f"bench/k8s.py: {why}", file=sys.stderr)
        return 1
    subprocess.run([sys.executable, "-m", "inclavare.launcher", str(REPO / "bin")], check=True, capture_output=True,
                   env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    rune = str(REPO / "bin" / "rune")
    base = Path(tempfile.mkdtemp(prefix="k8sb"))
    image = d.Image(base / "image").build()
    shim_base = base / "shim"
    shim_base.mkdir()
    shimd.owner_key(shim_base / "owner.pem")
    config = shimd.write_config(shim_base / "shim.toml", shim_base, **{"": {"log_level": "info"}})
    handlers = {"runc": {}, "rune-runc": k.runc_handler(base, "rune-runc", rune),
                "rune": k.shim_handler(str(config))}
    c = k.Cluster(base, tools, handlers)
    plugin = watch = None
    try:
        c.start()
        for archive in (image.oci_archive, image.pause_archive):
            c.containerd.ctr("-n", k.NAMESPACE, "images", "import", str(archive))
        c.apply([k.runtime_class(h, h) for h in handlers])
        with open(base / "plugin.log", "wb") as log:
            plugin = subprocess.Popen([*c.wrap, str(REPO / "bin/rune-device-plugin"), "--resources", "sim"],
                                      stdout=log, stderr=log)
        d.wait_for(lambda: c.node_object()["status"].get("allocatable", {}).get(SIM) == "110", 60, "the plugin")
        watch = Watch(c)
        for rc, res in VARIANTS.values():  # warm up each path once (images unpacked, the shim's cache filled)
            start_pod(c, watch, rc, res)
        running: dict[str, list[float]] = {v: [] for v in VARIANTS}
        started: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.n):
            for v, (rc, res) in VARIANTS.items():
                r, s = start_pod(c, watch, rc, res)
                running[v].append(r)
                started[v].append(s)
    finally:
        if watch:
            watch.stop()
        if plugin:
            d.stop_pid(plugin.pid)
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"kubelet {tools.kube_version} + containerd 1.6, {args.n} pods each, median (p25-p75), from kubectl create")
    for title, times in (("to Running (API, PLEG-stepped)", running), ("to container started (CRI)", started)):
        med = {v: statistics.median(ts) for v, ts in times.items()}
        print(title)
        for v, ts in times.items():
            print(f"  {v:16} {med[v] * 1000:7.0f} ms  ({pct(ts, .25) * 1000:.0f}-{pct(ts, .75) * 1000:.0f})")
        print(f"  rune plain / runc        {med['rune plain'] / med['runc']:.2f}x   (goal <= 1.1x)")
        print(f"  rune-runc plain / runc   {med['rune-runc plain'] / med['runc']:.2f}x")
        print(f"  rune enclave / plain     {med['rune enclave'] / med['rune plain']:.2f}x   (goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
