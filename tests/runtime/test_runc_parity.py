"""Parity with runc (issue 2 item 6): the same bundle through rune and runc, each with its own --root, gives the
same payload output and exit code; the CLI error cases engines rely on give the same exit codes; `spec` agrees."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest
from tests.conftest import new_id
from tests.runtime.helpers import mountinfo

RUNC = shutil.which("runc")
pytestmark = pytest.mark.skipif(RUNC is None, reason="runc is not installed")


def _runc(rune, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([RUNC, "--root", str(rune.tmp / "runc-root"), *args], stdout=out, stderr=err, text=True,
                           timeout=60)  # fmt: skip
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def _both(rune, args: list[str], edit=None) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    b = rune.bundle(args, edit=edit)
    return rune("run", "--bundle", str(b), new_id()), _runc(rune, "run", "--bundle", str(b), new_id())


@pytest.mark.parametrize("args", [["echo", "hello", "world"], ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                  ["id"], ["hostname"], ["sh", "-c", "grep ^Cap /proc/self/status"],
                                  ["sh", "-c", "ulimit -n; umask; pwd; env | sort"]])  # fmt: skip
def test_same_output_and_status(rune, args):
    mine, theirs = _both(rune, args)
    assert (mine.returncode, mine.stdout, mine.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)


def test_same_output_as_a_user_with_groups(rune):
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o077}

    mine, theirs = _both(rune, ["sh", "-c", "id; umask; grep ^Cap /proc/self/status"], edit)
    assert (mine.returncode, mine.stdout) == (theirs.returncode, theirs.stdout)


def test_signal_death(rune):
    def edit(c: dict) -> None:
        c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "pid"]

    mine, theirs = _both(rune, ["sh", "-c", "kill -TERM $$"], edit)
    assert mine.returncode == theirs.returncode == 143


def test_same_mount_points(rune):
    mine, theirs = _both(rune, ["cat", "/proc/self/mountinfo"])
    assert mine.returncode == theirs.returncode == 0
    assert set(mountinfo(mine.stdout)) == set(mountinfo(theirs.stdout))
    for point in ("/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"):
        assert mountinfo(mine.stdout)[point]["opts"] == mountinfo(theirs.stdout)[point]["opts"], point


def test_cli_error_exit_codes(rune):
    """The exit codes engines rely on (shared/reference/environment.md)."""
    stopped = {}
    for name, tool in (("rune", rune), ("runc", lambda *a: _runc(rune, *a))):
        cid = new_id()
        b = rune.bundle(["sleep", "30"])
        assert tool("run", "-d", "--bundle", str(b), cid).returncode == 0
        codes = {"start of running": tool("start", cid).returncode}
        assert tool("kill", cid, "KILL").returncode == 0
        for _ in range(500):
            if json.loads(tool("state", cid).stdout)["status"] == "stopped":
                break
        codes["kill of stopped"] = tool("kill", cid, "TERM").returncode
        codes["kill --all of stopped"] = tool("kill", "--all", cid, "KILL").returncode
        codes["delete of stopped"] = tool("delete", cid).returncode
        codes["delete of missing"] = tool("delete", cid).returncode
        codes["delete --force of missing"] = tool("delete", "--force", cid).returncode
        codes["kill of missing"] = tool("kill", cid, "KILL").returncode
        codes["state of missing"] = tool("state", cid).returncode
        codes["start of missing"] = tool("start", cid).returncode
        stopped[name] = codes
    assert stopped["rune"] == stopped["runc"]
    assert stopped["rune"] == {"start of running": 1, "kill of stopped": 1, "kill --all of stopped": 0,
                               "delete of stopped": 0, "delete of missing": 1, "delete --force of missing": 0,
                               "kill of missing": 1, "state of missing": 1, "start of missing": 1}  # fmt: skip


def test_spec_matches_runc_spec(rune, tmp_path):
    for name, tool in (("rune", rune), ("runc", lambda *a: _runc(rune, *a))):
        d = tmp_path / name
        d.mkdir()
        assert tool("spec", "--bundle", str(d)).returncode == 0
    mine = json.loads((tmp_path / "rune" / "config.json").read_text())
    theirs = json.loads((tmp_path / "runc" / "config.json").read_text())
    for c in (mine, theirs):
        c.pop("ociVersion")
        c.pop("hostname")
    assert mine == theirs
