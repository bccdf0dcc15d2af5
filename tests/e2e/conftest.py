"""The engine tests' private daemons (containerd, dockerd, containerd with containerd-shim-rune-v2), for the whole
journeys that run through an engine, and the example services' enclave images loaded into them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e import languages as lang
from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.conftest import (  # noqa: F401
    Docker,
    containerd,
    dockerd,
    engine_base,
    image,
    leftovers,
    shim_containerd,
    snapshot,
)
from tests.engines.test_shim import _state

NAMES = list(lang.TAMPER)


@pytest.fixture(scope="session", params=NAMES)
def example(request: pytest.FixtureRequest, engine_base: Path, dockerd: d.Dockerd,  # noqa: F811
            shim_containerd: shimd.ShimContainerd) -> lang.Example:  # noqa: F811
    name = request.param
    key = engine_base / "lang-owner.pem"
    if not key.exists():
        d.run([str(d.REPO / "bin" / "sgx-tools"), "gen-key", str(key)])
    ex = lang.Example(name, engine_base / f"lang-{name}", key)
    for archive in (ex.signed_docker, ex.tampered_docker):
        dockerd.docker("load", "-i", str(archive), timeout=300)
    for archive in (ex.plain_oci, ex.tampered_oci):
        shim_containerd.ctr("images", "import", str(archive), timeout=300)
    return ex


class HostNetworkDocker(Docker):
    def engine_mounts(self) -> set[str]:
        # dockerd's sandbox of the host network, made on its first use and kept for the daemon's life
        return {str(self.base / "exec" / "netns" / "default")}


@pytest.fixture
def docker_engine(dockerd: d.Dockerd, rune_bin: str) -> Iterator[Docker]:  # noqa: F811
    e = HostNetworkDocker("rune", rune_bin, dockerd)
    before = snapshot(e)
    yield e
    deadline = time.monotonic() + 15
    while (left := leftovers(e, before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        e.cleanup()
    assert not left, f"docker/rune left behind: {left}"


@pytest.fixture
def shim(shim_containerd: shimd.ShimContainerd) -> Iterator[shimd.ShimContainerd]:  # noqa: F811
    c = shim_containerd
    before = _state(c)
    yield c
    deadline = time.monotonic() + 15
    while (left := {k: sorted(v - before[k]) for k, v in _state(c).items() if v - before[k]}) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        for cid in c.ctr("task", "ls", "-q", check=False).stdout.split():
            c.ctr("task", "delete", "--force", cid, check=False)
    assert not left, f"left behind: {left}"


