"""Helpers for the config.json tests: run a payload and read what it printed from inside the container."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import new_id


def run_ok(rune, args: list[str], edit=None, flags: tuple[str, ...] = ()) -> str:
    """Run args in a container of the default bundle changed by edit; its stdout (the run must exit 0)."""
    b = rune.bundle(args, edit=edit)
    p = rune("run", *flags, "--bundle", str(b), new_id())
    assert p.returncode == 0, p.stderr
    return p.stdout


def mountinfo(text: str) -> dict[str, dict]:
    """/proc/self/mountinfo lines by mount point (the last mount on a point wins)."""
    out: dict[str, dict] = {}
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        f = left.split()
        r = right.split()
        out[f[4]] = {"root": f[3], "opts": set(f[5].split(",")), "optional": f[6:], "fstype": r[0],
                     "source": r[1], "super": set(r[2].split(",")) if len(r) > 2 else set()}  # fmt: skip
    return out


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def wait_file(path: Path, proc: subprocess.Popen, timeout: float = 20) -> None:
    """Wait for the container to create path; fail early if its runtime exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the container exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def host_mountpoints() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return set(mountinfo(f.read()))


def alive_with(needle: str) -> list[int]:
    """Pids whose command line contains needle (a container id, a bundle path)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out
