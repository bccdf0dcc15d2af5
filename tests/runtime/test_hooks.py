"""OCI hooks on real containers: order, the state on stdin (status, pid), timeouts, and failure handling at each
stage (fatal before the process starts, warnings after)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.runtime.test_lifecycle import wait_status

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _hooks(out: Path, fail: str = "", extra: dict | None = None) -> dict:
    """Every hook writes its stdin to out/<kind>.json and appends its kind to out/order; `fail` exits 3.
    startContainer runs in the container, so it is the container's sh writing to the bind-mounted out (/hooks)."""
    hooks = {}
    for k in KINDS:
        d = "/hooks" if k == "startContainer" else str(out)
        script = f"cat > {d}/{k}.json; echo {k} >> {d}/order" + ("; echo boom >&2; exit 3" if k == fail else "")
        hooks[k] = [{"path": "/bin/sh", "args": ["sh", "-c", script]}]
    hooks.update(extra or {})
    return hooks


def _bundle(rune, out: Path, args: list[str], fail: str = "", extra: dict | None = None) -> Path:
    def edit(c: dict) -> None:
        c["hooks"] = _hooks(out, fail, extra)
        c["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(out), "options": ["rbind"]})
        c["annotations"] = {"org.example": "yes"}

    return rune.bundle(args, edit=edit)


def _order(out: Path) -> list[str]:
    p = out / "order"
    return p.read_text().split() if p.exists() else []


def test_hook_order_and_state(rune, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    cid = new_id()
    b = _bundle(rune, out, ["sh", "-c", "echo payload >> /hooks/order; sleep 30"])
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    assert _order(out) == ["prestart", "createRuntime", "createContainer"]
    pid = rune.state(cid)["pid"]
    assert rune("start", cid).returncode == 0
    assert rune("delete", "--force", cid).returncode == 0
    order = _order(out)
    assert order[:4] == ["prestart", "createRuntime", "createContainer", "startContainer"]
    assert order[-1] == "poststop" and sorted(order[4:6]) == ["payload", "poststart"]
    states = {k: json.loads((out / f"{k}.json").read_text()) for k in KINDS}
    for k, st in states.items():
        assert st["id"] == cid and st["bundle"] == str(b) and st["ociVersion"], k
        assert st.get("annotations") == {"org.example": "yes"}, k
    assert {k: states[k]["status"] for k in KINDS} == {
        "prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
        "startContainer": "created", "poststart": "running", "poststop": "stopped"}  # fmt: skip
    for k in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart"):
        assert states[k]["pid"] == pid, k


def test_hooks_with_run(rune, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    p = rune("run", "--bundle", str(_bundle(rune, out, ["true"])), new_id())
    assert p.returncode == 0, p.stderr
    order = _order(out)
    assert order[:4] == list(KINDS[:4]) and order[-1] == "poststop" and "poststart" in order


def test_hook_args_and_env(rune, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    extra = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f'echo "$0 $FOO" > {out}/argenv', "first"],
                                "env": ["FOO=bar"]}]}  # fmt: skip
    assert rune("run", "--bundle", str(_bundle(rune, out, ["true"], extra=extra)), new_id()).returncode == 0
    assert (out / "argenv").read_text() == "first bar\n"


def test_hook_timeout(rune, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    extra = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    cid = new_id()
    p = rune("create", "--bundle", str(_bundle(rune, out, ["true"], extra=extra)), cid)
    assert p.returncode == 1
    assert p.stderr == "hooks.createRuntime[0]: /bin/sleep did not finish within its timeout of 1 s and was killed\n"
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_hook_timeout_after_closing_its_output(rune, tmp_path):
    """The deadline holds after the hook closes stdout and stderr: it is killed, not waited for."""
    out = tmp_path / "hooks"
    out.mkdir()
    extra = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exec >&- 2>&-; sleep 5"], "timeout": 1}]}
    cid = new_id()
    p = rune("create", "--bundle", str(_bundle(rune, out, ["true"], extra=extra)), cid, timeout=30)
    assert p.returncode == 1, p.stderr
    assert p.stderr == "hooks.createRuntime[0]: /bin/sh did not finish within its timeout of 1 s and was killed\n"
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_hook_without_env_gets_the_runtimes_environment(rune, tmp_path, kind):
    """As runc: no `env` passes rune's environment (podman hooks.d, libnetwork-setkey); `env: []` is empty."""
    out = tmp_path / "hooks"
    out.mkdir()
    extra = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", f'echo "${{RUNE_HOOK_T-unset}}" > {out}/inherited']},
                    {"path": "/bin/sh", "args": ["sh", "-c", f'echo "${{RUNE_HOOK_T-unset}}" > {out}/empty'],
                     "env": []}]}  # fmt: skip
    env = dict(os.environ, RUNE_HOOK_T="from-rune")
    p = rune("run", "--bundle", str(_bundle(rune, out, ["true"], extra=extra)), new_id(), env=env)
    assert p.returncode == 0, p.stderr
    assert (out / "inherited").read_text() == "from-rune\n"
    assert (out / "empty").read_text() == "unset\n"


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer", "startContainer"])
def test_failing_hook_before_the_process_is_fatal(rune, tmp_path, kind):
    out = tmp_path / "hooks"
    out.mkdir()
    cid = new_id()
    b = _bundle(rune, out, ["sh", "-c", "echo payload >> /hooks/order"], fail=kind)
    if kind == "startContainer":
        # it runs in the container's init after `start` released it; `start` waits for the exec, so it fails with
        # the hook's sentence; the init also says it on the stdio `create` was given (as runc's init does)
        errfile = tmp_path / "create.err"
        with open(errfile, "w") as err:
            assert rune("create", "--bundle", str(b), cid, stdout=err, stderr=err).returncode == 0
        p = rune("start", cid)
        assert p.returncode == 1
        assert p.stderr.startswith(f"hooks.{kind}[0]: /bin/sh exited with status 3: boom"), p.stderr
        assert wait_status(rune, cid, "stopped")["status"] == "stopped"
        stderr = errfile.read_text()
        assert rune("delete", cid).returncode == 0
    else:
        p = rune("create", "--bundle", str(b), cid)
        assert p.returncode == 1
        stderr = p.stderr
    assert stderr.startswith(f"hooks.{kind}[0]: /bin/sh exited with status 3: boom") and stderr.count("\n") == 1
    assert "payload" not in _order(out)
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    if kind != "startContainer":
        # the spec: poststop hooks run when a container that got a pid is torn down
        assert _order(out)[-1] == "poststop"


@pytest.mark.parametrize("kind", ["poststart", "poststop"])
def test_failing_hook_after_the_process_is_a_warning(rune, tmp_path, kind):
    out = tmp_path / "hooks"
    out.mkdir()
    p = rune("run", "--bundle", str(_bundle(rune, out, ["sh", "-c", "exit 5"], fail=kind)), new_id())
    assert p.returncode == 5  # the container's own status
    assert f"hooks.{kind}[0]: /bin/sh exited with status 3" in p.stderr and "warning" in p.stderr
    assert "poststop" in _order(out)


def test_missing_hook_binary(rune, tmp_path):
    cid = new_id()
    b = rune.bundle(["true"], edit=lambda c: c.update(hooks={"prestart": [{"path": "/no/such/hook"}]}))
    p = rune("create", "--bundle", str(b), cid)
    assert p.returncode == 1
    assert p.stderr == "hooks.prestart[0]: /no/such/hook could not be run: /no/such/hook does not exist\n"
    assert not (rune.root / cid).exists()
    assert os.listdir(rune.root) == []


@pytest.mark.parametrize("kind", ["poststart", "poststop"])
def test_a_failing_hook_after_the_process_does_not_stop_the_next(rune, tmp_path, kind):
    """Runtime spec: a poststart or poststop failure is logged as a warning and the lifecycle goes on: the hooks
    after the failing one still run (the first failure stopped them)."""
    out = tmp_path / "hooks"
    out.mkdir()
    extra = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "echo first >&2; exit 4"]},
                    {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/second.json"]},
                    {"path": "/bin/sh", "args": ["sh", "-c", "exit 6"]},
                    {"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} >> {out}/order"]}]}  # fmt: skip
    log = tmp_path / "rune.log"
    cid = new_id()
    p = rune("--log", str(log), "run", "--bundle", str(_bundle(rune, out, ["true"], extra=extra)), cid)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "second.json").read_text())["id"] == cid
    assert _order(out).count(kind) == 1  # the fourth hook ran
    text = log.read_text()
    assert f"hooks.{kind}[0]: /bin/sh exited with status 4: first" in text
    assert f"hooks.{kind}[2]: /bin/sh exited with status 6" in text


RUNC = shutil.which("runc")


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
def test_hook_states_match_runc(rune, tmp_path):
    """The status each hook is given, checked against the runtime spec and runc: prestart, createRuntime and
    createContainer run during `create`, whose state is "creating" (runc agrees; crun 1.8 says "created");
    poststart runs once the user's process has executed, "running" (crun agrees; runc 1.1 says "created", the
    state it read before starting); poststop "stopped"."""
    seen = {}
    for name in ("rune", "runc"):
        out = tmp_path / f"hooks-{name}"
        out.mkdir()
        hooks = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{k}.json"]}]
                 for k in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
        b = rune.bundle(["sleep", "30"], edit=lambda c, h=hooks: c.update(hooks=h))
        cid = new_id()
        cmd = [rune.binary] if name == "rune" else [RUNC]
        root = str(rune.root if name == "rune" else tmp_path / "runc-root")
        for args in (["create", "--bundle", str(b), cid], ["start", cid], ["kill", cid, "KILL"]):
            with open(tmp_path / f"{name}.out", "a") as f:
                assert subprocess.run([*cmd, "--root", root, *args], stdout=f, stderr=f, timeout=60).returncode == 0
        for _ in range(500):  # until the killed container is stopped
            st = subprocess.run([*cmd, "--root", root, "state", cid], capture_output=True, text=True).stdout
            if '"stopped"' in st:
                break
            time.sleep(0.01)
        subprocess.run([*cmd, "--root", root, "delete", cid], check=True, capture_output=True)
        seen[name] = {k: json.loads((out / f"{k}.json").read_text())["status"] for k in hooks}
    runc = dict(seen["runc"], poststart="running") if seen["runc"]["poststart"] == "created" else seen["runc"]
    assert seen["rune"] == runc == {"prestart": "creating", "createRuntime": "creating",
                                    "createContainer": "creating", "poststart": "running", "poststop": "stopped"}
