"""Web services in Python, Go and Java from ordinary images (examples/, built from Debian packages) as sim enclave
containers: through Docker (`docker run --runtime rune` of the image signed with `sgx-tools sign-image`) and through
containerd with containerd-shim-rune-v2 (the ordinary image, signed by the shim at Create). Each answers HTTP on its
port (host network: the test dockerd runs without a bridge), `exec` of a measured program works, SIGTERM ends it with
status 0, the same image with one changed file of the language runtime is refused at launch with rune's sentence,
and nothing is left behind (rune state, mounts, cgroups, shims).
"""

from __future__ import annotations

import json
import os

import pytest
from tests.e2e import languages as lang
from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.conftest import Docker
from tests.engines.test_shim import remove, stop_task

pytestmark = pytest.mark.engines

def _docker_flags(e: Docker, port: int) -> list[str]:
    # a signed enclave's root is read-only: the runtimes' scratch space (/tmp) is a memory file system of its own
    return ["--runtime", "rune", "--network", "host", "--cgroup-parent", "/" + e.parent, "--tmpfs", "/tmp",
            "-e", f"PORT={port}"]


def test_docker_serves_http_exec_and_stops_cleanly(example: lang.Example, docker_engine: Docker) -> None:
    dk = docker_engine.k.docker
    port = lang.free_port()
    cid = dk("run", "-d", *_docker_flags(docker_engine, port), example.signed_ref).stdout.strip()
    try:
        def alive() -> bool:
            return dk("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"

        status, body = lang.first_answer(port, alive=alive)
        assert status == 200 and json.loads(body)["service"] == example.name, body
        assert lang.get(port, "/health") == (200, b"ok\n")
        cmd, want = lang.EXEC[example.name]
        p = dk("exec", cid, *cmd, check=False)
        assert p.returncode == 0 and want in (p.stdout + p.stderr).lower(), (p.returncode, p.stdout, p.stderr)
        dk("stop", cid, timeout=60)
        state = json.loads(dk("inspect", cid).stdout)[0]["State"]
        assert state["ExitCode"] == 0, (state, dk("logs", cid, check=False).stderr)
        assert "stopped" in (dk("logs", cid).stdout + dk("logs", cid).stderr)
    finally:
        dk("rm", "-f", cid, check=False)


def test_docker_refuses_the_tampered_runtime(example: lang.Example, docker_engine: Docker) -> None:
    port = lang.free_port()
    p = docker_engine.k.docker("run", "--rm", *_docker_flags(docker_engine, port), example.tampered_ref, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    assert f"the trusted file {example.tamper_path} changed since signing" in text or (
        f"the file {example.tamper_path}" in text and "does not match its signature" in text), text
    assert "listening" not in text


def _ctr_flags(c: shimd.ShimContainerd, port: int) -> list[str]:
    return [*c.run_flags(), "--net-host", "--env", "ENCLAVE_TYPE=sim", "--env", f"PORT={port}",
            "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev"]


def test_containerd_shim_signs_the_ordinary_image_and_serves(example: lang.Example,
                                                             shim: shimd.ShimContainerd) -> None:
    port = lang.free_port()
    cid = shimd.name("l")
    log = shim.base / f"{cid}.log"
    shim.ctr("run", "-d", "--log-uri", f"file://{log}", *_ctr_flags(shim, port), example.plain_ref, cid, timeout=600)
    try:
        state = json.loads((shim.rune_root / shim.namespace / cid / "state.json").read_text())
        assert state["enclave"]["type"] == "sim", state.get("enclave")

        def alive() -> bool:
            return _task(shim, cid) == "RUNNING"

        status, body = lang.first_answer(port, alive=alive)
        assert status == 200 and json.loads(body)["service"] == example.name, body
        cmd, want = lang.EXEC[example.name]
        p = d.run(["ctr", "-a", shim.sock, "-n", shim.namespace, "task", "exec", "--exec-id", shimd.name("e"), cid,
                   *cmd], check=False)
        assert p.returncode == 0 and want in (p.stdout + p.stderr).lower(), (p.returncode, p.stdout, p.stderr)
        assert stop_task(shim, cid) == 0, log.read_text() if log.exists() else ""
        assert "stopped" in log.read_text()
    except BaseException:
        remove(shim, cid)
        raise
    finally:
        if log.exists():
            os.unlink(log)


def _task(c: shimd.ShimContainerd, cid: str) -> str | None:
    for line in c.ctr("task", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return parts[2]
    return None


def test_containerd_shim_refuses_the_tampered_runtime(example: lang.Example, shim: shimd.ShimContainerd) -> None:
    """The signed image with one changed runtime file: the shim finds the image's own signature and rune refuses it
    at create (the shim does not re-sign an image that carries a signature)."""
    port = lang.free_port()
    cid = shimd.name("l")
    p = shim.ctr("run", "--rm", *_ctr_flags(shim, port), example.tampered_ref, cid, check=False, timeout=600)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    assert example.tamper_path in text and ("changed since signing" in text or "does not match" in text), text
    shim.ctr("containers", "delete", cid, check=False)
