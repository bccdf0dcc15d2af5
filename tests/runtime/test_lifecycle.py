"""The container lifecycle of the runtime spec, on real containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import cgroup_leftovers, new_id


def wait_status(rune, cid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = rune.state(cid)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_create_start_state_delete(rune):
    b = rune.bundle(["sh", "-c", "echo started > /tmp/x; sleep 30"], edit=lambda c: c["root"].update(readonly=False) or c.update(annotations={"a": "b"}))
    cid = new_id()
    pidfile = rune.tmp / "pid"
    p = rune("create", "--bundle", str(b), "--pid-file", str(pidfile), cid)
    assert p.returncode == 0, p.stderr
    st = rune.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == str(b) and st["annotations"] == {"a": "b"}
    assert st["pid"] == int(pidfile.read_text())
    # blocked before execve: the init is still rune's python, not sh
    assert "sh" not in open(f"/proc/{st['pid']}/cmdline").read().split("\0")  # (an argument, not a path's letters)
    assert rune("start", cid).returncode == 0
    st = wait_status(rune, cid, "running")
    assert st["status"] == "running"
    assert rune("start", cid).returncode == 1  # a running container cannot be started again
    p = rune("delete", cid)
    assert p.returncode == 1 and "not stopped" in p.stderr
    assert rune("kill", cid, "KILL").returncode == 0
    st = wait_status(rune, cid, "stopped")
    assert st["status"] == "stopped" and st["pid"] == 0
    assert rune("kill", cid).returncode == 1  # runc: "container not running"
    assert rune("kill", "--all", cid, "9").returncode == 0
    assert rune("delete", cid).returncode == 0
    assert not (rune.root / cid).exists()
    assert cgroup_leftovers(cid) == []
    assert rune("state", cid).returncode == 1


def test_kill_created_container_with_term(rune):
    cid = new_id()
    assert rune("create", "--bundle", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    assert rune("kill", cid, "TERM").returncode == 0
    assert wait_status(rune, cid, "stopped")["status"] == "stopped"
    assert rune("delete", cid).returncode == 0


def test_delete_created_container_without_force(rune):
    cid = new_id()
    assert rune("create", "--bundle", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    pid = rune.state(cid)["pid"]
    assert rune("delete", cid).returncode == 0
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert cgroup_leftovers(cid) == []


def test_delete_force_running(rune):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    assert rune.state(cid)["status"] == "running"
    assert rune("delete", "--force", cid).returncode == 0
    assert cgroup_leftovers(cid) == [] and not (rune.root / cid).exists()
    assert rune("delete", "--force", cid).returncode == 0  # runc: 0 for a missing container with --force
    assert rune("delete", cid).returncode == 1


def test_run_exit_status_and_output(rune):
    b = rune.bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
    p = rune("run", "--bundle", str(b), new_id())
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    assert os.listdir(rune.root) == []


def test_run_killed_by_signal_returns_128_plus(rune):
    # without its own pid namespace the shell is not an init, which would be immune to its own SIGKILL
    b = rune.bundle(["sh", "-c", "kill -9 $$"], edit=lambda c: c["linux"]["namespaces"].remove({"type": "pid"}))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 137


def test_run_forwards_signals(rune):
    b = rune.bundle(["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done"])
    proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "run", "--bundle", str(b), new_id()],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 42 and "got-term" in out


def test_run_detach_then_state_and_list(rune):
    cid = new_id()
    assert rune("run", "--detach", "--bundle", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    assert rune.state(cid)["status"] == "running"
    p = rune("list")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert lines[1].split()[0] == cid and lines[1].split()[2] == "running"
    assert rune("list", "-q").stdout == cid + "\n"
    js = json.loads(rune("list", "--format", "json").stdout)
    assert js[0]["id"] == cid and js[0]["status"] == "running"
    ps = json.loads(rune("ps", "--format", "json", cid).stdout)
    assert rune.state(cid)["pid"] in ps
    assert rune("delete", "-f", cid).returncode == 0
    assert rune("list", "--format", "json").stdout.strip() == "null"


def test_duplicate_id_is_refused_and_leaves_the_first(rune):
    cid = new_id()
    b = rune.bundle(["sleep", "30"])
    assert rune("create", "-b", str(b), cid).returncode == 0
    p = rune("create", "-b", str(b), cid)
    assert p.returncode == 1 and "already exists" in p.stderr
    assert rune.state(cid)["status"] == "created"
    assert rune("delete", "-f", cid).returncode == 0


def test_delete_force_cleans_a_killed_create(rune):
    """A rune killed before writing its final state leaves a directory that delete --force removes."""
    cid = new_id()
    d = rune.root / cid
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"id": cid, "pid": 0, "status": "creating", "cgroup_paths": {}}))
    assert rune("state", cid).stdout and json.loads(rune("state", cid).stdout)["status"] == "creating"
    assert rune("delete", "--force", cid).returncode == 0
    assert not d.exists()


def test_concurrent_commands_on_many_containers(rune):
    """100 containers created, started and deleted concurrently: no corruption, nothing left."""
    b = rune.bundle(["sh", "-c", "sleep 0.2"])
    ids = [new_id("c") for _ in range(100)]

    def journey(cid: str) -> str:
        for args in (("create", "-b", str(b), cid), ("start", cid)):
            p = rune(*args)
            if p.returncode:
                return f"{args[0]} {cid}: {p.stderr}"
        # racing commands on one container: state and kill while it runs
        rune("state", cid)
        rune("delete", "--force", cid)
        return ""

    with ThreadPoolExecutor(16) as ex:
        errors = [e for e in ex.map(journey, ids) if e]
    assert errors == []
    assert os.listdir(rune.root) == []
    assert all(cgroup_leftovers(cid) == [] for cid in ids)


def test_concurrent_commands_on_one_container_serialize(rune):
    cid = new_id()
    assert rune("create", "-b", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda a: rune(*a), [("start", cid)] * 4 + [("state", cid)] * 4))
    starts = [r.returncode for r in results[:4]]
    assert starts.count(0) == 1, [r.stderr for r in results[:4]]
    for r in results[4:]:
        assert json.loads(r.stdout)["status"] in ("created", "running")
    assert rune("delete", "-f", cid).returncode == 0


def test_only_stdio_and_preserved_fds_reach_the_container(rune):
    """Fds rune inherits from its caller do not leak into the container; --preserve-fds passes 3..3+N-1."""
    extra = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(extra, True)
    probe = f"for n in 3 {extra}; do [ -e /proc/$$/fd/$n ] && echo open $n || echo closed $n; done"
    b = rune.bundle(["sh", "-c", probe])
    try:
        p = subprocess.run([rune.binary, "--root", str(rune.root), "run", "-b", str(b), new_id()], capture_output=True,
                           text=True, pass_fds=(extra,), timeout=30)
        assert p.stdout.splitlines() == ["closed 3", f"closed {extra}"], p.stdout + p.stderr
        # with --preserve-fds 1, fd 3 reaches the container, the other one still does not
        p = subprocess.run(f"exec 3</dev/null; {rune.binary} --root {rune.root} run --preserve-fds 1 -b {b} {new_id()}",
                           shell=True, capture_output=True, text=True, pass_fds=(extra,), timeout=30)
        assert p.stdout.splitlines() == ["open 3", f"closed {extra}"], p.stdout + p.stderr
    finally:
        os.close(extra)


def test_delete_force_cleans_after_rune_was_killed_during_create(rune):
    """rune killed while a prestart hook runs: `delete --force` removes the init, the cgroups and the state."""
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"]}
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"prestart": [hook]}))
    cid = new_id()
    proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "create", "-b", str(b), cid],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = rune.root / cid / "state.json"
    deadline = time.monotonic() + 20
    while not (state_file.exists() and json.loads(state_file.read_text()).get("pid")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # the hook is running now
    pid = json.loads(state_file.read_text())["pid"]
    proc.kill()
    proc.wait()
    assert json.loads(rune("state", cid).stdout)["status"] in ("creating", "stopped")
    assert rune("delete", "--force", cid).returncode == 0
    assert not (rune.root / cid).exists()
    assert cgroup_leftovers(cid) == []
    time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    # the hook's sleep was started by the killed rune; it is not the container's, but must not hold the cgroup


def test_sigterm_during_create_removes_what_was_made(rune):
    """An engine that gives up on a slow create (SIGTERM to rune) is left with nothing: no state, cgroup or init."""
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "sleep 3"]}
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"createRuntime": [hook]}))
    cid = new_id()
    proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "create", "-b", str(b), cid],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state_file = rune.root / cid / "state.json"
    deadline = time.monotonic() + 20
    while not (state_file.exists() and json.loads(state_file.read_text()).get("pid")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = json.loads(state_file.read_text())["pid"]
    time.sleep(0.3)  # in the hook now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert err == (f"rune was interrupted by signal 15 (SIGTERM) while creating container '{cid}'; what it had made "
                   "was removed\n")
    assert not (rune.root / cid).exists()
    assert cgroup_leftovers(cid) == []
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
