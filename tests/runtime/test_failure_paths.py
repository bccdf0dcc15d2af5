"""The failure paths of issue 17, each as a user meets it: no hang, no false success, no leftovers, and the CLI's
sentences (one line, the same in the --log file, exit 1; an internal error says so and names the command)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.runtime.helpers import alive_with
from tests.runtime.test_config_linux import reachable, userns_bundle  # noqa: F401 - the fixture

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _one_line(p: subprocess.CompletedProcess) -> str:
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    return p.stderr.rstrip("\n")


def _hook_pid(pidfile: Path, proc: subprocess.Popen) -> int:
    """The pid a hook wrote, once it runs (while rune still does)."""
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    return int(pidfile.read_text())


def _gone(rune, cid: str) -> None:
    assert not (rune.root / cid).exists()
    assert cgroup_leftovers(cid) == []
    assert alive_with(cid) == []


# ------------------------------------------------------------------------------------------------------- no hang


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda c: c["linux"].update(resources={"pids": {"limit": "many"}}),
     "linux.resources.pids.limit: must be an integer, got a string"),
    (lambda c: c["linux"].update(cgroupsPath="//"), "linux.cgroupsPath: '//' names a hierarchy root"),
    (lambda c: c["linux"].update(uidMappings=c["linux"]["uidMappings"] * 2),
     "linux.uidMappings: the kernel refused the mapping: Invalid argument"),
    # the kernel refuses the value after the intermediate process has entered the user namespace
    (lambda c: c["linux"].update(resources={"cpu": {"cpus": "9999"}}), "linux.resources.cpu.cpus: the kernel refused"),
], ids=["invalid resources", "cgroupsPath //", "uid mapping twice", "value the kernel refuses"])  # fmt: skip
def test_user_namespace_failures_do_not_hang(rune, reachable, edit, pattern):  # noqa: F811
    """With a user namespace, the parent and the intermediate process waited for each other forever."""
    b = userns_bundle(rune, reachable, ["true"], edit)
    cid = new_id()
    t0 = time.monotonic()
    p = rune("create", "-b", str(b), cid, timeout=30)
    assert p.returncode == 1 and pattern in _one_line(p), p.stderr
    assert time.monotonic() - t0 < 15
    _gone(rune, cid)


def test_create_with_a_user_namespace_and_the_exec_fifo(rune, reachable):  # noqa: F811
    """The mapped root need not reach --root: the parent opens the exec fifo for the init."""
    b = userns_bundle(rune, reachable, ["sh", "-c", "id -u > /dev/shm/x"])
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0, rune("state", cid).stdout
    assert rune.state(cid)["status"] == "created"
    assert rune("start", cid).returncode == 0
    assert rune("delete", "-f", cid).returncode == 0
    _gone(rune, cid)


def test_user_namespace_with_a_sim_enclave_says_one_sentence(rune, reachable):  # noqa: F811
    """ENCLAVE_TYPE=sim in a user namespace gave "ModuleNotFoundError: No module named 'select'"."""
    b = userns_bundle(rune, reachable, ["true"], lambda c: c["process"]["env"].append("ENCLAVE_TYPE=sim"))
    cid = new_id()
    p = rune("run", "-b", str(b), cid, timeout=60)
    if p.returncode != 0:
        line = _one_line(p)
        assert "ModuleNotFoundError" not in line and "internal error" not in line, line
    _gone(rune, cid)


# ---------------------------------------------------------------------------------------------- no false success


def test_rlimit_nofile_of_one_is_applied_at_execve(rune, tmp_path):
    """RLIMIT_NOFILE 1 made `create` exit 0 with the init already dead (it could not open the exec fifo)."""
    edit = lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}])  # noqa: E731
    b = rune.bundle(["sh", "-c", "ulimit -n; ulimit -Hn"], edit=edit)
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "w") as f:  # the container's stdout is the one `create` had
        assert subprocess.run([rune.binary, "--root", str(rune.root), "create", "-b", str(b), cid], stdout=f,
                              timeout=30).returncode == 0
    assert rune.state(cid)["status"] == "created"
    assert rune("start", cid).returncode == 0
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert out.read_text() == "1\n1\n"
    assert rune("delete", "-f", cid).returncode == 0


# --------------------------------------------------------------------------------------------------- no leftovers


def test_delete_force_after_sigkill_of_create_at_any_moment(rune):
    """SIGKILL of `create` at a random moment, 20 times: `delete --force` finds and removes the cgroups (with the
    parents the create made), the init and the state directory every time."""
    rng = random.Random(17)
    for i in range(20):
        cid = new_id("k")
        parent = f"rune-test-{cid}"
        b = rune.bundle(["sleep", "30"], edit=lambda c, parent=parent: c["linux"].update(cgroupsPath=f"/{parent}/a/b"))
        proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "create", "-b", str(b), cid],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 0.06))  # a create takes about 40 ms here
        proc.kill()
        proc.wait()
        p = rune("delete", "--force", cid)
        assert p.returncode == 0, (i, p.stderr)
        assert not (rune.root / cid).exists(), i
        left = [str(d / parent) for d in CGROUP_ROOT.iterdir() if (d / parent).exists()]
        assert left == [], (i, left)
        deadline = time.monotonic() + 5
        while alive_with(cid):  # the init dies with a killed create (PR_SET_PDEATHSIG) or by delete's SIGKILL
            assert time.monotonic() < deadline, (i, alive_with(cid))
            time.sleep(0.02)


def test_sigterm_during_the_poststop_hook_of_a_failing_create(rune, tmp_path):
    """The hook process outlived rune; now rune kills it and still removes the container."""
    pidfile = tmp_path / "hook.pid"
    hooks = {"createRuntime": [{"path": "/bin/false"}],
             "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]}]}
    b = rune.bundle(["true"], edit=lambda c: c.update(hooks=hooks))
    cid = new_id()
    proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "create", "-b", str(b), cid],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hook = _hook_pid(pidfile, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "hooks.createRuntime[0]: /bin/false exited with status 1" in err
    assert not os.path.exists(f"/proc/{hook}") or open(f"/proc/{hook}/stat").read().split()[2] == "Z"
    _gone(rune, cid)


def test_delete_force_whatever_the_hooks(rune):
    """A hook timeout that overflowed made every `delete -f` die; a state.json that the table refuses is removed
    by --force like a corrupt one, and a poststop hook that fails is a warning."""
    cid = new_id()
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"poststop": [{"path": "/bin/false"}]}))
    assert rune("create", "-b", str(b), cid).returncode == 0
    p = rune("delete", "-f", cid)
    assert p.returncode == 0 and p.stderr == "warning: hooks.poststop[0]: /bin/false exited with status 1\n"
    _gone(rune, cid)
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0
    pid = rune.state(cid)["pid"]
    config = json.loads((rune.root / cid / "config.json").read_text())
    config["hooks"]["poststop"][0]["timeout"] = 2**63
    (rune.root / cid / "config.json").write_text(json.dumps(config))
    p = rune("delete", cid)
    assert p.returncode == 1 and "/config.json: corrupt state (hooks.poststop[0].timeout: 9223372036854775808 is " \
        "out of range (1 to 2147483647))" in _one_line(p)
    assert rune("delete", "-f", cid).returncode == 0
    _gone(rune, cid)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_sigterm_during_delete_ends_a_hanging_poststop_hook(rune, tmp_path):
    pidfile = tmp_path / "hook.pid"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]}
    cid = new_id()
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"poststop": [hook]}))
    assert rune("create", "-b", str(b), cid).returncode == 0
    proc = subprocess.Popen([rune.binary, "--root", str(rune.root), "delete", "-f", cid],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hook_pid = _hook_pid(pidfile, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "interrupted by signal 15 (SIGTERM) while deleting" in err, err
    assert not os.path.exists(f"/proc/{hook_pid}") or open(f"/proc/{hook_pid}/stat").read().split()[2] == "Z"
    _gone(rune, cid)


# ----------------------------------------------------------------------------------------------------------- CLI


def test_boolean_global_flags_take_values_as_runc(rune):
    cid = new_id()
    log = rune.tmp / "log"
    p = rune("--debug=false", "--log", str(log), "--systemd-cgroup=false", "state", cid)
    assert p.returncode == 1 and _one_line(p) == f"container '{cid}' does not exist"
    assert [x.split(" level=")[1].split()[0] for x in log.read_text().splitlines()] == ["error"]
    p = rune("--debug=true", "state", cid)
    assert p.stderr.startswith("debug: rune ")
    p = rune("--debug=maybe", "state", cid)
    assert p.returncode == 1 and _one_line(p) == "rune: invalid boolean value 'maybe' for flag '--debug' (true or false)"
    p = rune("delete", "--force=nope", cid)
    assert _one_line(p) == "rune delete: invalid boolean value 'nope' for flag '--force' (true or false)"


@pytest.mark.parametrize(("value", "pattern"), [
    ("1000000", r"^--preserve-fds 1000000: at most \d+ descriptors can be passed \(rune's RLIMIT_NOFILE is \d+\)$"),
    ("-5", r"^--preserve-fds -5: cannot be negative$"),
])  # fmt: skip
def test_preserve_fds_bounds(rune, value, pattern):
    import re

    cid = new_id()
    p = rune("create", "--preserve-fds", value, "-b", str(rune.bundle()), cid)
    assert p.returncode == 1 and re.match(pattern, _one_line(p)), p.stderr
    p = rune("exec", "--preserve-fds", value, cid, "true")
    assert p.returncode == 255 and re.match("^exec failed: " + pattern[1:], _one_line(p)), p.stderr
    _gone(rune, cid)


def test_a_newline_in_an_argument_stays_on_one_line(rune):
    log = rune.tmp / "log"
    for args in (("create", "--pid-file", "/no/such\ndir/pid", "-b", str(rune.bundle()), new_id()),
                 ("create", "--bundle", "/no\nbundle", new_id()), ("state", "a\nb"), ("--log-format", "x\ny", "list"),
                 ("delete", "--frce\n", "x"), ("kill", new_id(), "SIG\nKILL"), ("nosuch\ncommand",)):
        p = rune("--log", str(log), "--log-format", "json", *args)
        line = _one_line(p)
        assert p.returncode == 1 and json.loads(log.read_text().splitlines()[-1])["msg"] == line, args


def test_resources_errors_name_the_file(rune):
    cid = new_id()
    assert rune("create", "-b", str(rune.bundle(["sleep", "30"])), cid).returncode == 0
    assert rune("start", cid).returncode == 0
    res = rune.tmp / "res.json"
    res.write_text(json.dumps({"blockIO": {"weightDevice": [{"minor": 0, "weight": 10}]}}))
    p = rune("update", "-r", str(res), cid)
    assert p.returncode == 1
    assert _one_line(p) == f"{res}: linux.resources.blockIO.weightDevice[0].major: is required"
    res.write_text(json.dumps({"cpu": {"cpus": "9999"}}))
    p = rune("update", "-r", str(res), cid)
    assert p.returncode == 1 and _one_line(p).startswith(f"{res}: linux.resources.cpu.cpus: the kernel refused ")
    p = rune("update", "--pids-limit", str(1 << 70), cid)
    assert _one_line(p) == ("rune update: linux.resources.pids.limit: 1180591620717411303424 is out of range "
                            "(-9223372036854775808 to 9223372036854775807)")
    assert rune("delete", "-f", cid).returncode == 0


def test_an_internal_error_is_one_sentence_and_the_traceback_goes_to_the_log(tmp_path, monkeypatch, capsys):
    """A bug (here: a command that raises TypeError) is not shown as Python's traceback."""
    from inclavare.cli import rune as cli
    from inclavare.cli import state

    def broken(g, cmd, argv):  # noqa: ANN001
        from inclavare.cli import args

        args.need_id(cmd, args.parse(cmd, argv, {}))
        raise TypeError("'NoneType' object is not iterable")

    monkeypatch.setattr(state, "main", broken)
    for debug in (False, True):
        log = tmp_path / f"log-{debug}"
        argv = ["--root", str(tmp_path), "--log", str(log), "--log-format", "json"] + (["--debug"] if debug else [])
        assert cli.main([*argv, "state", "c1"]) == 1
        err = capsys.readouterr().err
        hint = "its traceback is in the --log file" if debug else "run it again with --debug --log FILE for the traceback"
        assert err == ("rune state of container 'c1': internal error (TypeError: 'NoneType' object is not iterable); "
                       f"this is a bug in rune, please report it ({hint})\n")
        entries = [json.loads(x) for x in log.read_text().splitlines()]
        assert entries[-1]["msg"] == err.rstrip("\n") and entries[-1]["level"] == "error"
        tracebacks = [e for e in entries if e["msg"].startswith("Traceback")]
        assert len(tracebacks) == (1 if debug else 0)
