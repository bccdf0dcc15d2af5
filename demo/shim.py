#!/usr/bin/env python3
"""The shim part of `make demo`: containerd (started here on private sockets and directories, stopped by PID at the
end) with containerd-shim-rune-v2 as runtime io.containerd.rune.v2; an ordinary busybox image, never signed by hand,
run as a plain container, then as a signed sim enclave (the shim measures and signs it in Create, with a local key
and then through rune-signing-server), the second time from the conversion cache; then a refusal in one sentence."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.engines import daemons as d  # noqa: E402
from tests.engines import shimd  # noqa: E402


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(c: shimd.ShimContainerd, *args: str) -> None:
    cmd = ["ctr", "-n", c.namespace, *args]
    print("$ " + " ".join(cmd).replace(str(c.base.parent), "$WORK"), flush=True)
    p = subprocess.run(["ctr", "-a", c.sock, *cmd[1:]], capture_output=True, text=True, timeout=120)
    print((p.stdout + p.stderr).rstrip() + f"\n(exit {p.returncode})", flush=True)


def shim_log(c: shimd.ShimContainerd, cid: str) -> None:
    for m in re.finditer(r'msg="(' + cid + r': [^"]*)" runtime=io.containerd.rune.v2', c.log.read_text()):
        print(f"  shim: {m.group(1)}")


def main() -> int:
    reason = d.ensure_packages()
    if reason:
        print(f"skipping the shim demo: {reason}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="rune-demo-shim-", dir="/tmp"))
    img = d.Image(base / "image").build()
    c = shimd.ShimContainerd(base / "containerd")
    server = None
    try:
        c.start()
        c.ctr("images", "import", str(img.oci_archive))
        rt = ["--runtime", "io.containerd.rune.v2", "--runtime-config-path", str(c.config_path)]
        step("containerd-shim-rune-v2: an ordinary image as a plain container")
        show(c, "run", "--rm", *rt, d.IMAGE, "plain", "sh", "-c", "echo plain container, PID 1 is $(cat /proc/1/comm)")
        step("the same image as an enclave container: ENCLAVE_TYPE=sim, signed by the shim in Create")
        probe = "echo in the enclave; tr '\\0' ' ' < /proc/1/cmdline; echo; cat /dev/attestation/attestation_type; echo"
        for cid in ("enclave1", "enclave2"):
            show(c, "run", "--rm", *rt, "--env", "ENCLAVE_TYPE=sim", d.IMAGE, cid, "sh", "-c", probe)
            shim_log(c, cid)
        step("signed through rune-signing-server (the owner's key off the node)")
        key = shimd.owner_key(base / "server-owner.pem")
        log = base / "server.log"
        with open(log, "w") as f:
            server = subprocess.Popen([str(shimd.BIN / "rune-signing-server"), "--private-key", str(key), "--listen",
                                       "127.0.0.1:0"], stdout=f, stderr=f)
        deadline = time.monotonic() + 30
        while "serving on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = log.read_text().split("serving on ")[1].split()[0]
        print(f"rune-signing-server --private-key owner.pem: {url}")
        cfg = shimd.write_config(base / "server.toml", c.base, signature={"server_address": url},
                                 cache={"dir": str(base / "server-cache")})
        show(c, "run", "--rm", "--runtime", "io.containerd.rune.v2", "--runtime-config-path", str(cfg),
             "--env", "ENCLAVE_TYPE=sim", d.IMAGE, "enclave3", "sh", "-c", "echo signed by the server")
        shim_log(c, "enclave3")
        step("a request the shim cannot honour: one sentence, nothing left")
        show(c, "run", "--rm", *rt, "--env", "ENCLAVE_TYPE=sgx2", d.IMAGE, "bad", "true")
        show(c, "task", "ls")
    finally:
        if server is not None:
            d.stop_pid(server.pid)
        c.stop()
        subprocess.run(["rm", "-rf", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
