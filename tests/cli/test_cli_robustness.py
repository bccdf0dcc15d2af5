"""The CLI in situations engines and users create: relative roots, unwritable pid files, corrupt state,
--rootless without cgroups, and the formats runc prints."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

from tests.conftest import cgroup_leftovers, new_id


def test_relative_root(rune, tmp_path):
    cid = new_id()
    b = rune.bundle(["sh", "-c", "echo ok"])
    p = subprocess.run([rune.binary, "--root", "relroot", "run", "-b", str(b), cid], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr
    assert os.listdir(tmp_path / "relroot") == []


def test_unwritable_pid_file_is_one_sentence_and_leaves_nothing(rune):
    cid = new_id()
    p = rune("create", "-b", str(rune.bundle(["sleep", "10"])), "--pid-file", "/nonexistent/dir/pid", cid)
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["--pid-file /nonexistent/dir/pid: cannot write it: No such file or directory"]
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_root_that_is_a_file(rune, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    p = subprocess.run([rune.binary, "--root", str(f), "run", "-b", str(rune.bundle()), new_id()],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1 and str(f) in p.stderr
    assert "Traceback" not in p.stderr


def test_delete_force_removes_a_container_with_corrupt_state(rune):
    cid = new_id()
    assert rune("create", "-b", str(rune.bundle(["sleep", "10"])), cid).returncode == 0
    pid = rune.state(cid)["pid"]
    (rune.root / cid / "state.json").write_text('{"id":')
    p = rune("delete", cid)
    assert p.returncode == 1 and "corrupt state" in p.stderr
    assert rune("delete", "--force", cid).returncode == 0
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_state_file_is_private(rune):
    cid = new_id()
    b = rune.bundle(["sleep", "10"], edit=lambda c: c["process"]["env"].append("SECRET=s3cr3t"))
    assert rune("create", "-b", str(b), cid).returncode == 0
    assert stat.S_IMODE(os.stat(rune.root / cid / "state.json").st_mode) == 0o600
    assert rune("delete", "-f", cid).returncode == 0


def test_state_format_as_runc(rune):
    cid = new_id()
    assert rune("create", "-b", str(rune.bundle(["sleep", "10"])), cid).returncode == 0
    st = rune.state(cid)
    assert list(st) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    # Go's RFC3339Nano: no trailing zeros in the fraction
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", st["created"]), st["created"]
    assert rune("delete", "-f", cid).returncode == 0


def test_rootless_without_cgroup_permission_runs_without_cgroups(rune):
    """--rootless true and a cgroupsPath the kernel refuses: a container with no limits still runs."""
    b = rune.bundle(["sh", "-c", "echo ran"], edit=lambda c: c["linux"].update(cgroupsPath="/cgroup.procs/x"))
    p = subprocess.run(
        [rune.binary, "--root", str(rune.root), "--rootless", "true", "run", "-b", str(b), new_id()],
        capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout) == (0, "ran\n"), p.stderr
    p = subprocess.run([rune.binary, "--root", str(rune.root), "run", "-b", str(b), new_id()],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "Traceback" not in p.stderr


def test_list_into_a_closed_pipe(rune):
    cids = [new_id() for _ in range(3)]
    b = rune.bundle(["sleep", "10"])
    for cid in cids:
        assert rune("create", "-b", str(b), cid).returncode == 0
    p = subprocess.run(f"{rune.binary} --root {rune.root} list | head -1", shell=True, capture_output=True, text=True,
                       timeout=30)
    assert p.stdout.startswith("ID") and "Traceback" not in p.stderr and "Broken" not in p.stderr
    assert json.loads(rune("ps", "--format", "json", cids[0]).stdout)
    for cid in cids:
        assert rune("delete", "-f", cid).returncode == 0
