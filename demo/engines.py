#!/usr/bin/env python3
"""The engine part of `make demo`: an ordinary busybox image signed once with `sgx-tools sign-image`, loaded into
Docker and containerd (both started here on private sockets and directories, stopped by PID at the end), and run as a
sim enclave through `docker run --runtime rune` and `ctr run --runc-binary rune`; then a refusal with rune's sentence."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.engines import daemons as d  # noqa: E402

RUNE, SGX_TOOLS = str(REPO / "bin" / "rune"), str(REPO / "bin" / "sgx-tools")
SIGNED = "docker.io/library/demo-enclave:latest"


def show(cmd: list[str], env: dict | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print((p.stdout + p.stderr).rstrip() + f"\n(exit {p.returncode})", flush=True)


def main() -> int:
    reason = d.ensure_packages()
    if reason:
        print(f"skipping the engine demo: {reason}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="rune-demo-eng-", dir="/tmp"))
    img = d.Image(base / "image").build()
    c = d.Containerd(base / "containerd")
    k = d.Dockerd(base / "docker", c, {"rune": RUNE})
    try:
        print("\n\033[1m== an ordinary image signed once: sgx-tools sign-image\033[0m")
        d.run([SGX_TOOLS, "gen-key", str(base / "owner.pem")])
        show([SGX_TOOLS, "sign-image", "--key", str(base / "owner.pem"), f"docker-archive:{img.docker_archive}",
              f"docker-archive:{base / 'signed.tar'}:{SIGNED}"])
        c.start()
        k.start()
        print("\n\033[1m== through Docker: docker load, docker run --runtime rune\033[0m")
        k.docker("load", "-i", str(base / "signed.tar"))
        docker = ["docker", "-H", f"unix://{k.sock}"]
        denv = dict(__import__("os").environ, DOCKER_CONFIG=str(k.base / "client"))
        show([*docker, "run", "--rm", "--network", "none", "--runtime", "rune", "--hostname", "any-host", SIGNED, "sh",
              "-c", "echo in the enclave on $(hostname); cat /dev/attestation/attestation_type; echo"], denv)
        show([*docker, "run", "--rm", "--network", "none", "--runtime", "rune", "-e", "LD_PRELOAD=/x.so", SIGNED,
              "true"], denv)
        print("\n\033[1m== through containerd: ctr images import, ctr run --runc-binary rune\033[0m")
        d.run(["skopeo", "copy", "-q", f"docker-archive:{base / 'signed.tar'}", f"oci-archive:{base / 'signed-oci.tar'}:{SIGNED}"])
        c.ctr("images", "import", str(base / "signed-oci.tar"))
        show(["ctr", "-a", c.sock, "-n", c.namespace, "run", "--rm", "--runc-binary", RUNE, SIGNED, "demo1", "sh", "-c",
              "echo in the enclave through containerd; wc -c < /dev/attestation/my_target_info"])
        show(["ctr", "-a", c.sock, "-n", c.namespace, "run", "--rm", "--runc-binary", RUNE, SIGNED, "demo2", "/bin/ls"])
    finally:
        k.stop()
        c.stop()
        subprocess.run(["rm", "-rf", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
