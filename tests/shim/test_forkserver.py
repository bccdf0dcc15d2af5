"""The shim's fork server (src/inclavare/shim/forkserver.py): which rune binaries it serves, and that a command run
by one of its workers is the command an exec'd rune runs: same container, output, exit status, fds, signals,
environment and error sentences. Through containerd: tests/engines/test_shim_forkserver.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from inclavare import launcher  # noqa: E402
from inclavare.shim import forkserver  # noqa: E402


def _launchers(tmp_path: Path, **changes: str) -> tuple[Path, Path]:
    """(the shim's launcher, rune's launcher) as inclavare.launcher writes them; changes: rune's text replaced."""
    python, path = "/usr/bin/python3.11", str(REPO / "src")
    shim = tmp_path / "containerd-shim-rune-v2"
    shim.write_text(launcher.text(python, path, "inclavare.cli.shim", ["/site"]))
    rune = tmp_path / "rune"
    text = launcher.text(python, path, "inclavare.cli.rune", ["/site"])
    for old, new in changes.items():
        text = text.replace(old, new)
    rune.write_text(text)
    return shim, rune


def _server(shim: Path) -> forkserver.ForkServer:
    fs = forkserver.ForkServer(None)
    fs.launcher = str(shim)
    return fs


def test_serves_this_installation_s_rune_launcher(tmp_path: Path) -> None:
    shim, rune = _launchers(tmp_path)
    assert _server(shim).serves(str(rune))


@pytest.mark.parametrize("old,new", [
    ("/usr/bin/python3.11", "/usr/local/bin/python3.11"),  # another interpreter
    (str(REPO / "src"), "/elsewhere/src"),                 # another installation
    ("'/site'", "'/site', '/more'"),                       # another sys.path
    ("inclavare.cli.rune", "inclavare.cli.sgx_tools"),      # another command
    ("os._exit(code or 0)", "os._exit(code or 0)\nprint()"),  # anything added
])
def test_does_not_serve_another_binary(tmp_path: Path, old: str, new: str) -> None:
    shim, rune = _launchers(tmp_path, **{old: new})
    assert not _server(shim).serves(str(rune))


def test_does_not_serve_a_wrapper_script_or_runc(tmp_path: Path) -> None:
    shim, _ = _launchers(tmp_path)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text("#!/bin/sh\nexec rune \"$@\"\n")
    fs = _server(shim)
    assert not fs.serves(str(wrapper))
    assert not fs.serves("/usr/sbin/runc")
    assert not fs.serves(str(tmp_path / "missing"))


def test_a_changed_binary_is_checked_again(tmp_path: Path) -> None:
    shim, rune = _launchers(tmp_path)
    fs = _server(shim)
    assert fs.serves(str(rune))
    rune.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    assert not fs.serves(str(rune))


def test_not_when_the_shim_is_not_started_by_its_launcher(tmp_path: Path) -> None:
    _, rune = _launchers(tmp_path)
    console_script = tmp_path / "shim"
    console_script.write_text("#!/usr/bin/python3\nfrom inclavare.cli.shim import main\nmain()\n")
    assert not _server(console_script).serves(str(rune))


# ---- a worker runs what an exec'd rune runs -----------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import json, os, sys
    from inclavare.shim import forkserver
    fs = forkserver.start()
    cmds, results = json.loads(sys.argv[1]), []
    for argv, env, out, err in cmds:
        fds = (os.open("/dev/null", os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT, 0o600),
               os.open(err, os.O_WRONLY | os.O_CREAT, 0o600))
        cmd = fs.spawn(argv, fds, env)
        for fd in fds:
            os.close(fd)
        results.append(None if cmd is None else cmd.wait())
    print(json.dumps(results))
""")


def _in_workers(cmds: list[tuple[list[str], dict[str, str], str, str]]) -> list[int | None]:
    p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
                        + DRIVER, json.dumps(cmds)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _exec(argv: list[str], env: dict[str, str], out: str, err: str) -> int:
    with open(out, "w") as o, open(err, "w") as e:
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=120).returncode


PROBE = ("ls /proc/self/fd | tr '\\n' ' '; echo; grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status; "
         "echo \"$PROBE_VAR\"; cat /proc/self/attr/current 2>/dev/null; exit 7")


@pytest.mark.parametrize("ignored", [(), (signal.SIGQUIT, signal.SIGHUP)], ids=["none ignored", "SIGQUIT, SIGHUP ignored"])
def test_a_worker_runs_the_same_container_as_an_exec_d_rune(rune, tmp_path: Path, ignored) -> None:  # noqa: ANN001
    """Also when the caller ignores signals (a shim started from a background shell ignores SIGQUIT): exec keeps
    them ignored, and so must a worker."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in ignored}
    try:
        _same_container(rune, tmp_path)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _same_container(rune, tmp_path: Path) -> None:  # noqa: ANN001
    def edit(c: dict) -> None:
        c["process"]["env"].append("PROBE_VAR=from-the-config")

    bundle = rune.bundle(["sh", "-c", PROBE], edit=edit)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PROBE_ENV": "x"}
    base = [rune.binary, "--root", str(rune.root)]
    results = {}
    for how in ("exec", "worker"):
        out, err = str(tmp_path / f"{how}.out"), str(tmp_path / f"{how}.err")
        argv = [*base, "run", "--bundle", str(bundle), f"fs-{how}-{os.getpid()}"]
        status = _exec(argv, env, out, err) if how == "exec" else _in_workers([(argv, env, out, err)])[0]
        results[how] = (status, Path(out).read_text(), Path(err).read_text())
    assert results["worker"] == results["exec"]
    assert results["exec"][0] == 7 and "from-the-config" in results["exec"][1]


def test_a_worker_fails_with_rune_s_own_sentence_and_code(rune, tmp_path: Path) -> None:  # noqa: ANN001
    env = {"PATH": "/usr/bin:/bin"}
    cases = [["state", "no-such-container"], ["kill", "no-such-container", "NOSIG"], ["no-such-command"],
             ["create", "--bundle", str(tmp_path / "missing"), "x"]]
    for args in cases:
        got = {}
        for how in ("exec", "worker"):
            out, err = str(tmp_path / f"{how}.out"), str(tmp_path / f"{how}.err")
            for f in (out, err):
                Path(f).unlink(missing_ok=True)
            log = tmp_path / f"{how}.log"
            argv = [rune.binary, "--root", str(rune.root), "--log", str(log), "--log-format", "json", *args]
            status = _exec(argv, env, out, err) if how == "exec" else _in_workers([(argv, env, out, err)])[0]
            msgs = [json.loads(line)["msg"] for line in log.read_text().splitlines()] if log.exists() else []
            log.unlink(missing_ok=True)
            got[how] = (status, Path(out).read_text(), Path(err).read_text(), msgs)
        assert got["worker"] == got["exec"], args
        assert got["exec"][0] != 0 and got["exec"][2], args


def test_workers_take_a_container_s_commands_one_after_another(rune, tmp_path: Path) -> None:  # noqa: ANN001
    """create, state, start, delete of one container through one server."""
    bundle = rune.bundle(["sleep", "30"])
    cid = f"fs-cycle-{os.getpid()}"
    base = [rune.binary, "--root", str(rune.root)]
    env = {"PATH": "/usr/bin:/bin"}
    outs = [(str(tmp_path / f"{i}.out"), str(tmp_path / f"{i}.err")) for i in range(4)]
    cmds = [([*base, "create", "--bundle", str(bundle), cid], env, *outs[0]), ([*base, "state", cid], env, *outs[1]),
            ([*base, "start", cid], env, *outs[2]), ([*base, "delete", "--force", cid], env, *outs[3])]
    assert _in_workers(cmds) == [0, 0, 0, 0], [Path(e).read_text() for _, e in outs]
    assert json.loads(Path(outs[1][0]).read_text())["status"] == "created"
    assert not (rune.root / cid).exists()


IDLE_DRIVER = textwrap.dedent("""
    import os, sys, time
    from inclavare.shim import forkserver
    from inclavare.shim.reaper import Reaper
    fs = forkserver.start()
    fs.spawner = Reaper().spawn
    first = fs.pid
    null = os.open("/dev/null", os.O_RDWR)
    argv = [sys.argv[1], "--version"]
    assert fs.spawn(argv, (null, null, null)).wait() == 0
    time.sleep(forkserver.IDLE + 1)
    assert os.waitpid(first, os.WNOHANG)[0] == first, "the idle server did not end"
    cmd = fs.spawn(argv, (null, null, null))  # finds it gone: starts a new server, waits for it, and runs there
    assert cmd is not None and cmd.wait() == 0 and fs.pid != first
    with open(f"/proc/{fs.pid}/comm") as f:
        assert f.read().strip() == forkserver.COMM
    print("ok")
""")


def test_an_idle_server_ends_and_the_next_command_starts_another(rune_bin: str) -> None:
    p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
                        + IDLE_DRIVER, rune_bin], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr


def _held(pid: int) -> tuple[list[tuple[int, str]], list[str]]:
    """(fd number and what it is, the signal mask lines) of a live process."""
    fds = []
    for n in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            what = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        fds.append((int(n), what.split(":[")[0]))
    with open(f"/proc/{pid}/status") as f:
        sig = [line.strip() for line in f if line.startswith(("SigBlk", "SigIgn"))]
    return fds, sig


HOLD_DRIVER = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, os.environ["TEST_TESTS"])
    from inclavare.shim import forkserver
    from test_forkserver import _held
    fs = forkserver.start()
    argv = json.loads(sys.argv[1])
    fds = (os.open("/dev/null", os.O_RDONLY), os.open("/dev/null", os.O_WRONLY), os.open("/dev/null", os.O_WRONLY))
    cmd = fs.spawn(argv, fds, {"PATH": "/usr/bin:/bin"})
    time.sleep(1)
    held = _held(cmd.pid)
    print(json.dumps([cmd.wait(), held]))
""")


def test_a_worker_holds_only_what_an_exec_d_rune_holds(rune, tmp_path: Path) -> None:  # noqa: ANN001
    """While `rune run` waits for its container: the same fds (0, 1, 2 and rune's own), the same signal mask and
    ignored signals; none of the server's or the shim's sockets."""
    bundle = rune.bundle(["sleep", "3"])
    base = [rune.binary, "--root", str(rune.root), "run", "--bundle", str(bundle)]
    with open(os.devnull, "w") as null:
        p = subprocess.Popen([*base, f"fs-hold-e-{os.getpid()}"], stdin=subprocess.DEVNULL, stdout=null, stderr=null,
                             env={"PATH": "/usr/bin:/bin"})
        time.sleep(1)
        exec_held = _held(p.pid)
        assert p.wait(timeout=60) == 0
    d = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
                        + HOLD_DRIVER, json.dumps([*base, f"fs-hold-w-{os.getpid()}"])], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, TEST_TESTS=str(Path(__file__).parent)))
    assert d.returncode == 0, d.stderr
    status, held = json.loads(d.stdout)
    assert status == 0
    assert [tuple(x) for x in held[0]] == exec_held[0] and held[1] == exec_held[1]


@pytest.mark.parametrize(("config", "enclave"), [
    ({"process": {"env": ["PATH=/bin", "ENCLAVE_TYPE=sim"]}}, True),
    ({"annotations": {"enclave.type": "intelSgx"}}, True),
    ({"process": {"env": ["PATH=/bin", "NOT_ENCLAVE_TYPE=sim"]}, "annotations": {"enclave.other": "x"}}, False),
    ({}, False),
], ids=["ENCLAVE_TYPE", "enclave.type annotation", "plain", "no config.json"])
def test_an_enclave_bundle_is_told_by_its_config(config: dict, enclave: bool) -> None:
    assert forkserver.names_enclave(config) is enclave


START_DRIVER = textwrap.dedent("""
    import os, select, sys
    from inclavare.linux import sealed_exe
    from inclavare.shim import forkserver
    from inclavare.shim.reaper import Reaper
    if sys.argv[1] == "busy":  # the lowest free fds about 96: the spawn's moved fds and the exe's fd would meet
        while os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) < 95:
            pass
    if sys.argv[1] == "no overlay":
        sealed_exe.overlay_exe = lambda exe, lower: None
    fs = forkserver.ForkServer(None)
    fs.spawner = Reaper().spawn
    fs._start_again()
    assert fs.ctl is not None, "no server started"
    p = select.poll()
    p.register(fs.ctl.fileno(), select.POLLIN)
    assert p.poll(10000) and fs.ctl.recv(16) == b"ready"
    fd = os.open(f"/proc/{fs.pid}/exe", os.O_PATH)
    print("protected" if sealed_exe.protected(fd) else "host", os.path.realpath(sys.executable) ==
          os.path.realpath(open(f"/proc/{fs.pid}/cmdline", "rb").read().split(b"\\0")[0].decode()))
""")


@pytest.mark.parametrize(("case", "exe"), [("quiet", "protected"), ("busy", "protected"), ("no overlay", "host")])
def test_a_server_started_on_demand_runs_from_the_protected_interpreter(case: str, exe: str) -> None:
    """A server the shim starts after its first (the shim has threads then: a spawn, not a fork) runs from the
    interpreter through a read-only overlayfs, argv[0] the interpreter's real path; with many fds open in the shim
    too (the fd the spawn's path names is kept clear of the fds it moves); from the interpreter itself where no
    overlay can be made."""
    p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO / 'src')!r})\n"
                        + START_DRIVER, case], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, f"{exe} True\n"), p.stderr
