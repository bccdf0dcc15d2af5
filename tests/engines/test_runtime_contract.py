"""What the engines' shims send to an OCI runtime, replayed by hand against rune and runc (same bundle, same argv):
the `--root/--log/--log-format json` globals, `delete` then `delete --force` after the container exited, `kill --all`
of a stopped container, the exit codes of each, and the error sentence in the JSON log that the shim shows.

No daemon is needed; the engine suites above exercise the same calls through the real engines.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import Rune, new_id
from tests.engines import daemons as d

pytestmark = pytest.mark.engines


class Shim:
    """Calls a runtime the way containerd's runc shim does."""

    def __init__(self, binary: str, root: Path, log: Path) -> None:
        self.binary = binary
        self.root = root
        self.log = log

    def __call__(self, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
        argv = [self.binary, "--root", str(self.root), "--log", str(self.log), "--log-format", "json", *args]
        pre = (lambda: os.umask(umask)) if umask is not None else None
        return d.run(argv, check=False, timeout=60, preexec_fn=pre)

    def status(self, cid: str) -> str:
        p = d.run([self.binary, "--root", str(self.root), "state", cid], check=False)
        return json.loads(p.stdout)["status"] if p.returncode == 0 else "missing"

    def wait_stopped(self, cid: str) -> None:
        deadline = time.monotonic() + 20
        while self.status(cid) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(params=["rune", "runc"])
def shim(request: pytest.FixtureRequest, rune: Rune, tmp_path: Path) -> Shim:
    binary = rune.binary if request.param == "rune" else d.RUNC
    root = rune.root if request.param == "rune" else tmp_path / "runc-root"
    s = Shim(binary, root, tmp_path / "log.json")
    yield s
    if request.param == "runc":
        left = os.listdir(root) if root.exists() else []
        for cid in left:
            d.run([d.RUNC, "--root", str(root), "delete", "--force", cid], check=False)
        assert not left, f"runc left {left}"


def test_exited_container_delete_then_delete_force(shim: Shim, rune: Rune) -> None:
    b = rune.bundle(["true"])
    cid = new_id()
    p = shim("create", "--bundle", str(b), "--pid-file", str(b / "init.pid"), cid)
    assert p.returncode == 0, p.stderr
    assert shim("start", cid).returncode == 0
    shim.wait_stopped(cid)
    assert shim.status(cid) == "stopped"
    p = shim("kill", "--all", cid, "9")  # the shim kills every process of a container that has exited: fine
    assert p.returncode == 0, p.stderr
    p = shim("kill", cid, "9")  # a single kill of a stopped container is an error
    assert p.returncode == 1
    assert "not running" in p.stderr, p.stderr
    assert shim("delete", cid).returncode == 0
    p = shim("delete", "--force", cid)  # the second delete from another process finds nothing: fine
    assert p.returncode == 0, p.stderr
    p = shim("delete", cid)
    assert p.returncode == 1
    p = shim("kill", cid, "9")
    assert p.returncode == 1


def test_create_failure_is_in_the_json_log(shim: Shim, rune: Rune) -> None:
    b = rune.bundle(["/nonexistent"])
    cid = new_id()
    p = shim("create", "--bundle", str(b), "--pid-file", str(b / "init.pid"), cid)
    assert p.returncode == 1
    entries = [json.loads(line) for line in shim.log.read_text().splitlines()]
    last = entries[-1]  # what the shim shows as "OCI runtime create failed: <msg>"
    assert last["level"] == "error" and set(last) >= {"level", "msg", "time"}
    assert '"/nonexistent"' in last["msg"] and "no such file or directory" in last["msg"], last
    assert shim.status(cid) == "missing"


def test_non_root_user_with_a_strict_umask(shim: Shim, rune: Rune) -> None:
    """Daemons may run with umask 077; the init of a container whose user is not root must still start."""
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["root"]["readonly"] = False

    b = rune.bundle(["sh", "-c", "id -u > /tmp/uid"], edit=edit)
    cid = new_id()
    p = shim("create", "--bundle", str(b), cid, umask=0o077)
    assert p.returncode == 0, p.stderr
    assert shim("start", cid).returncode == 0, shim.log.read_text()
    shim.wait_stopped(cid)
    assert shim("delete", cid).returncode == 0
    out = rune.rootfs / "tmp" / "uid"
    assert out.read_text() == "1000\n"
    out.unlink()
