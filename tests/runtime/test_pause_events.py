"""pause / resume and events on real containers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import cgroup_leftovers
from tests.runtime.test_exec import running, wait_for

COUNTER = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.02; done'


def counter(pid: int) -> int:
    text = Path(f"/proc/{pid}/root/tmp/c").read_text().strip()
    return int(text) if text else 0


def test_paused_container_makes_no_progress_and_resumes(rune):
    with running(rune, ["sh", "-c", COUNTER]) as cid:
        init = rune.state(cid)["pid"]
        wait_for(lambda: Path(f"/proc/{init}/root/tmp/c").exists() and counter(init) > 2, what="the counter")
        assert rune("pause", cid).returncode == 0
        assert rune.state(cid)["status"] == "paused"
        freezer = json.loads((rune.root / cid / "state.json").read_text())["cgroup_paths"].get("freezer")
        if freezer:
            assert Path(freezer, "freezer.state").read_text().strip() == "FROZEN"
        before = counter(init)
        time.sleep(0.3)  # a running counter would have moved on by more than ten steps
        assert counter(init) == before
        assert Path(f"/proc/{init}/stat").read_text().split(")")[1].split()[0] in ("S", "D")
        p = rune("exec", cid, "true")
        assert p.returncode == 255 and "paused" in p.stderr
        assert rune("resume", cid).returncode == 0
        assert rune.state(cid)["status"] == "running"
        wait_for(lambda: counter(init) > before + 2, what="the counter to move after resume")


def test_pause_resume_errors(rune):
    p = rune("pause", "nosuch")
    assert p.returncode == 1 and "does not exist" in p.stderr
    p = rune("resume", "nosuch")
    assert p.returncode == 1 and "does not exist" in p.stderr
    with running(rune) as cid:
        p = rune("resume", cid)
        assert p.returncode == 1 and "not paused" in p.stderr
        assert rune("pause", cid).returncode == 0
        p = rune("pause", cid)
        assert p.returncode == 1 and "not running" in p.stderr
        # with --ignore-paused the process joins the frozen cgroup and runs once the container is resumed
        pidfile = rune.tmp / "frozen.pid"
        ex = subprocess.Popen([rune.binary, "--root", str(rune.root), "exec", "--ignore-paused", "-d", "--pid-file",
                               str(pidfile), cid, "sleep", "100"])
        try:
            assert rune("resume", cid).returncode == 0
            assert ex.wait(timeout=30) == 0
        finally:
            if ex.poll() is None:
                ex.kill()
                ex.wait()
        assert Path(f"/proc/{int(pidfile.read_text())}/cmdline").read_bytes() == b"sleep\x00100\x00"
        assert rune("kill", cid, "KILL").returncode == 0
        wait_for(lambda: rune.state(cid)["status"] == "stopped", what="the container to stop")
        p = rune("pause", cid)
        assert p.returncode == 1 and "not running" in p.stderr


def test_delete_force_of_a_paused_container(rune):
    with running(rune) as cid:
        assert rune("pause", cid).returncode == 0
        assert rune("delete", "--force", cid).returncode == 0
        assert cgroup_leftovers(cid) == []
        assert not (rune.root / cid).exists()


def test_events_stats_has_numbers(rune):
    with running(rune, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 300"]) as cid:
        p = rune("events", "--stats", cid)
        assert p.returncode == 0, p.stderr
        ev = json.loads(p.stdout)
        assert ev["type"] == "stats" and ev["id"] == cid
        data = ev["data"]
        assert data["cpu"]["usage"]["total"] > 0
        assert data["memory"]["usage"]["usage"] > 0
        assert data["pids"]["current"] >= 1
        assert {"cpu", "memory", "pids", "blkio"} <= set(data)


def test_events_stream_ends_with_the_container(rune):
    with running(rune) as cid:
        ev = subprocess.Popen([rune.binary, "--root", str(rune.root), "events", "--interval", "100ms", cid],
                              stdout=subprocess.PIPE, text=True)
        try:
            lines = [json.loads(ev.stdout.readline()) for _ in range(2)]
            assert all(e["type"] == "stats" and e["id"] == cid for e in lines)
            assert rune("kill", cid, "KILL").returncode == 0
            assert ev.wait(timeout=30) == 0
        finally:
            if ev.poll() is None:
                ev.kill()
                ev.wait()
            ev.stdout.close()


def test_events_errors(rune):
    p = rune("events", "--stats", "nosuch")
    assert p.returncode == 1 and "does not exist" in p.stderr
    with running(rune) as cid:
        p = rune("events", "--interval", "soon", cid)
        assert p.returncode == 1 and "--interval" in p.stderr
        assert rune("kill", cid, "KILL").returncode == 0
        wait_for(lambda: rune.state(cid)["status"] == "stopped", what="the container to stop")
        p = rune("events", "--stats", cid)
        assert p.returncode == 1 and "not running" in p.stderr
