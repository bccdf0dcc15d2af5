"""rune features (the runtime-spec features document) and the checkpoint/restore errors."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from tests.conftest import REPO

RUNE = str(REPO / "bin" / "rune")


def rune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RUNE, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _launcher(rune_bin: str) -> None:
    """The session fixture writes bin/rune when it is missing."""


def test_features_is_the_runtime_spec_document():
    p = rune("features")
    assert p.returncode == 0, p.stderr
    f = json.loads(p.stdout)
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"] == "1.2.0"
    assert set(f) == {"ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux", "annotations"}
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert {"ro", "rw", "bind", "rbind", "nosuid", "rprivate", "shared"} <= set(f["mountOptions"])
    linux = f["linux"]
    assert set(linux["namespaces"]) == {"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"}
    assert "CAP_SYS_ADMIN" in linux["capabilities"] and "CAP_CHECKPOINT_RESTORE" in linux["capabilities"]
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": True}
    assert linux["apparmor"] == {"enabled": True} and linux["selinux"] == {"enabled": True}
    assert linux["intelRdt"] == {"enabled": False}
    sc = linux["seccomp"]
    assert sc["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"} <= set(sc["actions"])
    assert set(sc["operators"]) == {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                                    "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"} <= set(sc["archs"])
    assert set(sc["supportedFlags"]) <= set(sc["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in sc["supportedFlags"]
    ann = f["annotations"]
    assert ann["org.inclavare.rune.version"]
    assert ann["io.github.seccomp.libseccomp.version"].count(".") == 2
    assert rune("features", "extra").returncode == 1


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_features_keys_match_runc():
    ours = json.loads(rune("features").stdout)
    theirs = json.loads(subprocess.run(["runc", "features"], capture_output=True, text=True).stdout)
    assert set(theirs) <= set(ours)
    assert set(theirs["linux"]) <= set(ours["linux"])
    assert set(theirs["linux"]["seccomp"]) <= set(ours["linux"]["seccomp"])
    assert set(theirs["linux"]["namespaces"]) <= set(ours["linux"]["namespaces"])


def test_checkpoint_and_restore_say_why_they_cannot_work(tmp_path):
    root = str(tmp_path / "root")
    p = rune("--root", root, "checkpoint", "nosuch")
    assert p.returncode == 1 and "'nosuch' does not exist" in p.stderr
    p = rune("--root", root, "--criu", str(tmp_path / "no-criu"), "restore", "--image-path", "x", "new")
    assert p.returncode == 1 and "install the criu package" in p.stderr
    p = rune("--root", root, "restore", "new")
    assert p.returncode == 1
    if shutil.which("criu"):
        works = subprocess.run(["criu", "check"], capture_output=True).returncode == 0
        assert ("does not implement" if works else "`criu check` failed") in p.stderr
    else:
        assert "install the criu package" in p.stderr
