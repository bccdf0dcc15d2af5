"""CVE-2019-5736: a container overwrites the host's runtime binary through /proc/self/exe or /proc/PID/exe.

rune's binary is the host's interpreter. Two ways in, both run for real here against a throw-away copy:
- the race: a process in the container watches its pid namespace and opens /proc/PID/exe of a rune process that
  enters it (the exec child, the init), keeps it, and overwrites the file once rune exits;
- the classic: the container's program is a script `#!/proc/self/exe`; exec'd by a rune process, the kernel runs
  rune's own executable with the script, in the container, which opens it and overwrites it later.
rune's processes are non-dumpable from before they enter the container until execve, and they exec the container's
programs through a sealed memfd trampoline (inclavare.linux.dmz), so neither reaches the interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from tests.conftest import new_id
from tests.security.conftest import attack_bundle, wait_for


def _start(r, bundle, cid: str) -> None:
    p = r("run", "--detach", "--bundle", str(bundle), cid)
    assert p.returncode == 0, p.stderr


def test_race_on_the_exec_child_exe(srune, host_copy, attack_rootfs, tmp_path):
    """The container hunts for /proc/PID/exe of every process that enters its pid namespace while the host runs
    `rune exec` twenty times; the old code lost on the first exec (4 of 4 trials)."""
    out = tmp_path / "out"
    out.mkdir()
    cid = new_id("race")
    _start(srune, attack_bundle(srune, attack_rootfs, out, ["sh", "-c", "exec /bin/race 30 > /out/race.log 2>&1"]),
           cid)
    try:
        assert wait_for(lambda: "hunting" in _read(out / "race.log"))
        for _ in range(20):
            p = srune("exec", cid, "/bin/true")
            assert p.returncode == 0, p.stderr
            if "OVERWROTE" in _read(out / "race.log"):
                break
        # the attacker writes as soon as ETXTBSY clears, that is within milliseconds of rune's exit
        wait_for(lambda: "OVERWROTE" in _read(out / "race.log"), timeout=2)
        log = _read(out / "race.log")
    finally:
        srune("delete", "--force", cid)
    assert host_copy.intact(), f"the interpreter was overwritten from the container:\n{log}"
    assert "OVERWROTE" not in log, log
    assert os.path.basename(str(host_copy.python)) not in log, f"the container reached the interpreter:\n{log}"


def test_race_on_the_init_exe_of_a_created_container(srune, host_copy, attack_rootfs, tmp_path):
    """A container that joins the pid namespace of another (a pod): while the second is created and waits for
    start, its init (rune's Python) is visible to the first, which hunts for its executable."""
    out = tmp_path / "out"
    out.mkdir()
    first = new_id("pod")
    _start(srune, attack_bundle(srune, attack_rootfs, out, ["sh", "-c", "exec /bin/race 30 > /out/race.log 2>&1"]),
           first)
    second = new_id("sidecar")
    try:
        assert wait_for(lambda: "hunting" in _read(out / "race.log"))
        pid = json.loads(srune("state", first).stdout)["pid"]

        def join(c: dict) -> None:
            for ns in c["linux"]["namespaces"]:
                if ns["type"] == "pid":
                    ns["path"] = f"/proc/{pid}/ns/pid"

        for i in range(5):
            cid = f"{second}-{i}"
            p = srune("create", "--bundle", str(srune.bundle(["true"], edit=join)), cid)
            assert p.returncode == 0, p.stderr
            wait_for(lambda: "opened" in _read(out / "race.log"), timeout=0.3)
            srune("delete", "--force", cid)
        wait_for(lambda: "OVERWROTE" in _read(out / "race.log"), timeout=2)
        log = _read(out / "race.log")
    finally:
        srune("delete", "--force", first)
    assert host_copy.intact(), log
    assert "OVERWROTE" not in log and os.path.basename(str(host_copy.python)) not in log, log


@pytest.mark.parametrize("how", ["exec", "run", "startContainer hook"])
def test_script_whose_interpreter_is_proc_self_exe(srune, host_copy, attack_rootfs, tmp_path, how):
    """The classic: `#!/proc/self/exe` as the program of `rune exec`, of the container itself, or of a
    startContainer hook (whose path resolves in the container)."""
    out = tmp_path / "out"
    out.mkdir()
    cid = new_id("classic")
    try:
        if how == "exec":
            _start(srune, attack_bundle(srune, attack_rootfs, out, ["sleep", "60"]), cid)
            p = srune("exec", cid, "/bin/evil")
        elif how == "run":
            p = srune("run", "--bundle", str(attack_bundle(srune, attack_rootfs, out, ["/bin/evil"])), cid)
        else:
            def hook(c: dict) -> None:
                c["hooks"] = {"startContainer": [{"path": "/bin/evil", "args": ["evil"]}]}

            p = srune("run", "--bundle", str(attack_bundle(srune, attack_rootfs, out, ["true"], edit=hook)), cid)
        wait_for(lambda: "OVERWROTE" in _read(out / "evil.log") or "busy" in _read(out / "evil.log"), timeout=3)
        log = _read(out / "evil.log")
    finally:
        srune("delete", "--force", cid)
    assert host_copy.intact(), f"the interpreter was overwritten from the container:\n{log}"
    assert "evil: running" not in log, f"the container ran the host's interpreter:\n{log}"
    # refused by the trampoline, which will not run as a script's interpreter (as a shell reports it: 126)
    assert p.returncode != 0
    assert "trampoline" in p.stderr or "126" in p.stderr or p.returncode == 126, (p.returncode, p.stderr)


def test_runc_reference(runc_copy, attack_rootfs, tmp_path):
    """The same race and script against a copy of runc: the reference holds too."""
    from tests.conftest import default_config

    out = tmp_path / "out"
    out.mkdir()
    bundle = tmp_path / "runc-bundle"
    bundle.mkdir()

    class R:  # the bundle helper of tests.conftest.Rune, for runc's bundles
        tmp = tmp_path

        def bundle(self, args, edit=None, name=None):
            c = default_config(attack_rootfs, args)
            if edit is not None:
                edit(c)
            (bundle / "config.json").write_text(json.dumps(c))
            return bundle

    attack_bundle(R(), attack_rootfs, out, ["sh", "-c", "exec /bin/race 20 > /out/race.log 2>&1"])
    cid = new_id("runc")
    p = runc_copy("run", "--detach", "--bundle", str(bundle), cid)
    assert p.returncode == 0, p.stderr
    try:
        assert wait_for(lambda: "hunting" in _read(out / "race.log"))
        for _ in range(10):
            runc_copy("exec", cid, "/bin/true")
        p = runc_copy("exec", cid, "/bin/evil")
        wait_for(lambda: "OVERWROTE" in _read(out / "race.log"), timeout=2)
    finally:
        runc_copy("kill", cid, str(int(signal.SIGKILL)))
        subprocess.run(["sleep", "0.2"])
        runc_copy("delete", "--force", cid)
    assert runc_copy.intact()
    assert "OVERWROTE" not in _read(out / "race.log") and "OVERWROTE" not in _read(out / "evil.log")


def _read(p) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        return ""
