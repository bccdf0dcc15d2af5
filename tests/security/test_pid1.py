"""PID 1 of an enclave container is the init-runelet, a long-lived Python process of the host's that never execs.
The payload must not read its environment or memory, ptrace it, reach its executable, or read the host's command
line from it; and no container process gets the environment of rune's caller."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from tests.conftest import default_config, new_id
from tests.enclave.conftest import pal_bundle
from tests.security.conftest import attack_bundle, interpreter_mounts, wait_for

PALS = [None, 1, 2, 3]
IDS = ["sim", "pal-v1", "pal-v2", "pal-v3"]


def _on_attack_rootfs(root, out, more=None):
    def edit(c: dict) -> None:
        c["root"]["path"] = str(root)
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
        if more is not None:
            more(c)

    return edit


def _signed_sim_bundle(tmp_path, root, out, args, key, rune_bin) -> Path:
    """The attack rootfs as a signed sim enclave (the built-in sim runtime runs signed images only)."""
    b = tmp_path / "simb"
    shutil.copytree(root, b / "rootfs", symlinks=True)
    c = default_config(b / "rootfs", args)
    c["process"]["env"].append("ENCLAVE_TYPE=sim")
    c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
    (b / "config.json").write_text(json.dumps(c))
    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    p = subprocess.run([sgx_tools, "sign-bundle", "--key", str(key), str(b)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return b


@pytest.mark.parametrize("pal_version", PALS, ids=IDS)
def test_the_payload_cannot_reach_pid1(srune, attack_rootfs, tmp_path, pal_libs, sim_dir, signing_key, rune_bin,
                                       pal_version, monkeypatch):
    secret = uuid.uuid4().hex
    monkeypatch.setenv("HOST_SECRET", secret)  # in the environment of rune's caller
    out = tmp_path / "out"
    out.mkdir()
    if pal_version is None:
        b = _signed_sim_bundle(tmp_path, attack_rootfs, out, ["/bin/probe", "1"], signing_key, rune_bin)
    else:
        b = pal_bundle(srune, pal_libs[pal_version], ["/bin/probe", "1"], edit=_on_attack_rootfs(attack_rootfs, out))
    p = srune("run", "--bundle", str(b), new_id("pid1"))
    assert p.returncode == 0, p.stderr
    seen = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    assert secret not in p.stdout, p.stdout
    assert seen["cmdline"].strip() == "init-runelet", p.stdout  # not rune's command line (root, bundle, log)
    assert seen["environ"].startswith("denied") or not seen["environ"].strip(), p.stdout
    assert seen["mem"] == "denied" and seen["exe"].startswith("denied"), p.stdout
    assert seen["ptrace"].startswith("denied"), p.stdout
    # the fd numbers may be listed (the directory is root's), never where they lead
    fds = seen.get("fds", "denied")
    assert fds.startswith("denied") or all(f.endswith("=") for f in fds.split()), p.stdout


@pytest.mark.parametrize("pal_version", [1, 2, 3], ids=IDS[1:])
def test_script_whose_interpreter_is_proc_self_exe_in_a_pal_enclave(srune, host_copy, attack_rootfs, tmp_path,
                                                                     pal_libs, pal_version):
    """The classic CVE-2019-5736 through an enclave runtime that forks and execs the payload itself (the reference
    PAL does): the runelet it forks from runs a sealed copy of the interpreter, not the host's file."""
    out = tmp_path / "out"
    out.mkdir()

    def mounts(c: dict) -> None:
        c["mounts"].extend(interpreter_mounts())

    b = pal_bundle(srune, pal_libs[pal_version], ["/bin/evil"], edit=_on_attack_rootfs(attack_rootfs, out, mounts))
    srune("run", "--bundle", str(b), new_id("palclassic"))
    wait_for(lambda: "OVERWROTE" in _read(out / "evil.log") or "busy" in _read(out / "evil.log"), timeout=3)
    log = _read(out / "evil.log")
    assert host_copy.intact(), log
    assert "OVERWROTE" not in log
    assert str(host_copy.python) not in log, f"the payload ran the host's interpreter:\n{log}"


def test_no_caller_environment_in_container_processes(srune, attack_rootfs, tmp_path, monkeypatch):
    """The container's process, an exec'd one and a startContainer hook (which runs in the container) see their own
    environment only, never the one rune was called with."""
    secret = uuid.uuid4().hex
    monkeypatch.setenv("HOST_SECRET", secret)
    out = tmp_path / "out"
    out.mkdir()

    def hook(c: dict) -> None:
        c["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "env > /out/hook.env"]}]}

    cid = new_id("env")
    b = attack_bundle(srune, attack_rootfs, out, ["sh", "-c", "env > /out/init.env; exec sleep 60"], edit=hook)
    p = srune("run", "--detach", "--bundle", str(b), cid)
    assert p.returncode == 0, p.stderr
    try:
        p = srune("exec", cid, "sh", "-c", "env; cat /proc/1/environ")
        assert wait_for(lambda: (out / "init.env").exists())
    finally:
        srune("delete", "--force", cid)
    for what in (p.stdout, (out / "init.env").read_text(), (out / "hook.env").read_text()):
        assert secret not in what, what


def _read(p) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        return ""
