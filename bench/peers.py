"""What the benchmarks share: the peer runtimes (runc, crun) beside rune, a busybox bundle all of them accept, and
percentiles.

crun 1.8 refuses hybrid cgroup hosts; as shared/reference/environment.md describes, it runs here in a private
mount namespace in which /sys/fs/cgroup/unified/cgroup.controllers reads empty. That namespace is made once by a
helper process and crun is started inside it with setns(2) in the forked child, so crun pays no extra exec.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
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


def bundle(path: str, args: list[str], rootfs: str | None = None) -> str:
    """A busybox bundle every peer accepts: crun 1.8 knows runtime-spec versions up to 1.0.x only, and the
    bundle uses none of 1.1/1.2's fields."""
    make_bundle(path, args, rootfs=rootfs)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["ociVersion"] = "1.0.2"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def runtimes(work: str, rune: str, baseline: str | None = None) -> tuple[list[Runtime], subprocess.Popen | None]:
    """rune, and runc and crun where installed, each with its own --root under work; the crun helper to stop.
    baseline: another rune launcher (a checkout of an earlier commit) measured in the same run as `rune-base`."""
    if not os.path.exists(rune):
        subprocess.run([sys.executable, "-m", "inclavare.launcher", os.path.dirname(rune)], check=True)
    out = [Runtime("rune", [rune, "--root", os.path.join(work, "rune")])]
    if baseline:
        out.append(Runtime("rune-base", [baseline, "--root", os.path.join(work, "rune-base")]))
    helper = None
    if shutil.which("runc"):
        out.append(Runtime("runc", ["runc", "--root", os.path.join(work, "runc")]))
    if shutil.which("crun"):
        mntns = None
        if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
            helper, mntns = private_cgroup_view()
        out.append(Runtime("crun", ["crun", "--root", os.path.join(work, "crun")], mntns))
    return out, helper
