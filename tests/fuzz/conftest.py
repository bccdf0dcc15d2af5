"""The fuzzers' shared set-up: hypothesis profiles, and a private work directory (its own busybox rootfs, runtime
root, volumes and files that the fuzzed arguments may name), made once per session under /tmp with mode 0755 so that
a user namespace's root reaches it.

Profiles: "ci" (the default, for `make test`) runs FUZZ_EXAMPLES examples per fuzzer (50 unless set), derandomized so
that CI is repeatable; "fuzz" (`make fuzz`, through tests/fuzz/run.py) runs as many as the time allows, random,
remembering failures in build/fuzz/hypothesis.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from tests.conftest import REPO, build_rootfs, default_config  # noqa: E402

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example]
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")), derandomize=True,
                          deadline=None, database=None, suppress_health_check=_SLOW, print_blob=True)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1000000")), deadline=None,
                          suppress_health_check=_SLOW, print_blob=True,
                          database=hypothesis.database.DirectoryBasedExampleDatabase(
                              str(REPO / "build" / "fuzz" / "hypothesis")))
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))


class Work:
    def __init__(self, path: Path, rune: str) -> None:
        self.path = path
        self.rune = rune
        self.token = uuid.uuid4().hex[:8]
        self.root = path / "root"
        self.bundle = path / "bundle"

    def placeholders(self, text: str) -> str:
        return text.replace(str(self.path), "{work}").replace(self.token, "{token}")

    def fill(self, text: str) -> str:
        return text.replace("{work}", str(self.path)).replace("{token}", self.token)


@pytest.fixture(scope="session")
def work(rune_bin) -> Work:
    if os.geteuid() != 0:
        pytest.skip("containers need root")
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("busybox-static is not installed")
    path = Path(tempfile.mkdtemp(prefix="rune-fuzz-", dir="/tmp"))
    path.chmod(0o755)
    try:
        (path / "rootfs").mkdir()
        build_rootfs(path / "rootfs", busybox)
        for d in ("vol", "cwd", "empty", "bundle", "cfg"):
            (path / d).mkdir()
        (path / "bad.json").write_text('{"args": ')
        (path / "process.json").write_text(json.dumps({"args": ["true"], "cwd": "/"}))
        (path / "bundle" / "config.json").write_text(json.dumps(default_config(path / "rootfs", ["true"])))
        yield Work(path, rune_bin)
    finally:
        os.system(f"umount -R -l {path}/rootfs 2>/dev/null")  # a defect may leave a mount: never delete through it
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    from tests.fuzz.harness import STATS

    if STATS["config"] or STATS["argv"]:
        terminalreporter.write_line(f"fuzz: {STATS['config']} config.json inputs ({STATS['created']} created and "
                                    f"removed, {STATS['refused']} refused), {STATS['argv']} argument sequences")
