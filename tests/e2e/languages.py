"""The example services of examples/ as enclave images for the language tests: built from Debian packages
(examples/imagebuild.py, cached under build/examples), signed once with `sgx-tools sign-image` (the whole argv fixed,
PORT the one variable users may set), and a tampered copy whose one changed file is a file of the language runtime.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO
from tests.engines import daemons as d

from inclavare.oci import image as oci_image

EXAMPLES = REPO / "examples"
# what each example's tampered copy changes: a file its runtime loads at start
TAMPER = {"python-web": "/usr/lib/python3.11/http/server.py", "go-web": "/app/go-web",
          "java-web": "/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"}
# the Debian packages each image is built from (and its compiler)
PACKAGES = {"python-web": ["python3.11-minimal", "libpython3.11-stdlib"], "go-web": [],
            "java-web": ["openjdk-17-jre-headless", "openjdk-17-jdk-headless"]}
# a measured program and its arguments for `exec`, and what it prints
EXEC = {"python-web": (["/usr/bin/python3.11", "-I", "-c", "print('exec-ok')"], "exec-ok"),
        "go-web": (["/app/go-web", "-version"], "go-web"),
        "java-web": (["/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-version"], "openjdk")}


def imagebuild():  # noqa: ANN201 - the module
    spec = importlib.util.spec_from_file_location("imagebuild", EXAMPLES / "imagebuild.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader
    spec.loader.exec_module(mod)
    return mod


class Example:
    def __init__(self, name: str, work: Path, key: Path) -> None:
        self.name = name
        reason = d.ensure_packages(PACKAGES[name])
        assert reason is None, reason
        try:
            built = imagebuild().build(name)
        except SystemExit as e:  # the builder's one sentence
            raise AssertionError(str(e)) from None
        self.plain_ref = built["ref"]
        self.plain_docker, self.plain_oci = Path(built["docker_archive"]), Path(built["oci_archive"])
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.signed_ref = f"docker.io/library/inclavare-{name}-enclave:latest"
        self.tampered_ref = f"docker.io/library/inclavare-{name}-tampered:latest"
        self.signed_docker, self.signed_oci = work / "signed-docker.tar", work / "signed-oci.tar"
        self.tampered_docker, self.tampered_oci = work / "tampered-docker.tar", work / "tampered-oci.tar"
        p = d.run([str(REPO / "bin" / "sgx-tools"), "sign-image", "--key", str(key), "--fixed-args",
               "--untrusted-env", "PORT", f"docker-archive:{self.plain_docker}",
               f"docker-archive:{self.signed_docker}:{self.signed_ref}"], timeout=600)
        self.signed_mr_enclave = next(ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("mr_enclave "))
        img, _ = oci_image.read(str(self.signed_docker), work)
        oci_image.write(img, "oci-archive", str(self.signed_oci), self.signed_ref)
        self.tamper_path = TAMPER[name]
        original = self._file(self.tamper_path)
        oci_image.add_layer(img, oci_image.layer_of({self.tamper_path.lstrip("/"): (original + b"\n", 0o755)}), work,
                            "tamper")
        oci_image.write(img, "docker-archive", str(self.tampered_docker), self.tampered_ref)
        oci_image.write(img, "oci-archive", str(self.tampered_oci), self.tampered_ref)

    def _file(self, path: str) -> bytes:
        import tarfile

        rel = path.lstrip("/")
        with tarfile.open(self.plain_docker) as t:
            layers = json.loads(t.extractfile("manifest.json").read())[0]["Layers"]
            for layer in reversed(layers):
                with tarfile.open(fileobj=t.extractfile(layer)) as lt:
                    try:
                        return lt.extractfile(rel).read()
                    except KeyError:
                        continue
        raise AssertionError(f"{path} is not in the image {self.plain_ref}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def first_answer(port: int, timeout: float = 120, alive=lambda: True,  # noqa: ANN001
                 interval: float = 0.05) -> tuple[int, bytes]:
    """The first HTTP answer on port (polled every interval seconds), or an AssertionError once timeout passed or
    alive() says no."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(port, timeout=2)
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline or not alive():
                raise AssertionError(f"no HTTP answer on port {port}") from None
            time.sleep(interval)
