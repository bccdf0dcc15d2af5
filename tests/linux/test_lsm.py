"""AppArmor profiles and SELinux labels as runc applies them (inclavare.linux.lsm): the exec attribute writes and the
mount option, unit-tested on directory trees that stand for /proc; and real containers, which on this host (no
AppArmor, no SELinux: the tests say so in their names) ignore the labels with a warning, as crun does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, new_id

sys.path.insert(0, str(REPO / "src"))
from inclavare.linux import lsm  # noqa: E402

APPARMOR_ON = lsm.apparmor_enabled()
SELINUX_ON = lsm.selinux_enabled()


def _task(tmp_path: Path, *, apparmor_dir: bool = True) -> tuple[int, Path]:
    """A tree shaped like the task's attr/ directory of /proc (pid 7, tid 7): an fd of its root, the attr dir."""
    attr = tmp_path / "proc" / "7" / "task" / "7" / "attr"
    attr.mkdir(parents=True)
    (attr / "exec").write_text("")
    if apparmor_dir:
        (attr / "apparmor").mkdir()
        (attr / "apparmor" / "exec").write_text("")
    return os.open(tmp_path / "proc", os.O_PATH | os.O_DIRECTORY), attr


def test_what_is_written(tmp_path):
    assert lsm.exec_attrs("docker-default", None) == [("apparmor", ("apparmor/exec", "exec"), b"exec docker-default")]
    assert lsm.exec_attrs(None, "system_u:system_r:container_t:s0") == [
        ("selinux", ("exec",), b"system_u:system_r:container_t:s0")]
    assert lsm.exec_attrs("", "") == []


def test_apparmor_profile_goes_to_its_own_attribute(tmp_path):
    fd, attr = _task(tmp_path)
    try:
        lsm.write_exec_attrs(fd, lsm.exec_attrs("docker-default", "user_u:role_r:type_t:s0"), pid=7)
    finally:
        os.close(fd)
    assert (attr / "apparmor" / "exec").read_text() == "exec docker-default"
    assert (attr / "exec").read_text() == "user_u:role_r:type_t:s0"


def test_apparmor_profile_falls_back_to_the_shared_attribute_before_linux_5_8(tmp_path):
    fd, attr = _task(tmp_path, apparmor_dir=False)
    try:
        lsm.write_exec_attrs(fd, lsm.exec_attrs("docker-default", None), pid=7)
    finally:
        os.close(fd)
    assert (attr / "exec").read_text() == "exec docker-default"


@pytest.mark.parametrize("swap", ["attr", "task", "exec"])
def test_a_symlink_on_the_way_is_refused(tmp_path, swap):
    """A container that made a path component of its /proc a symlink (to a file of its choosing) gets nothing
    written through it."""
    fd, attr = _task(tmp_path)
    decoy = tmp_path / "decoy"
    decoy.write_text("")
    target = {"attr": attr, "task": attr.parent, "exec": attr / "apparmor" / "exec"}[swap]
    if target.is_dir():
        os.rename(target, str(target) + ".real")
        os.symlink(str(target) + ".real", target)
    else:
        target.unlink()
        os.symlink(decoy, target)
    try:
        with pytest.raises(lsm.AttrError) as e:
            lsm.write_exec_attrs(fd, lsm.exec_attrs("docker-default", None), pid=7)
    finally:
        os.close(fd)
    assert e.value.errno == 40 and e.value.attr == "apparmor"  # ELOOP
    assert decoy.read_text() == ""


def test_a_path_out_of_the_tree_is_refused(tmp_path):
    fd, _ = _task(tmp_path)
    try:
        with pytest.raises(lsm.AttrError):
            lsm.write_exec_attrs(fd, [("selinux", ("../../../../../decoy",), b"x")], pid=7)
    finally:
        os.close(fd)


def test_only_a_procfs_is_written_through(tmp_path):
    with pytest.raises(OSError, match="is not a procfs"):
        lsm.open_proc(str(tmp_path))
    os.close(lsm.open_proc("/proc"))


@pytest.mark.skipif(APPARMOR_ON, reason="AppArmor is enabled here")
def test_the_real_procfs_refuses_a_profile_where_apparmor_is_off():
    """This host's /proc has no attr/apparmor/ and its attr/exec belongs to no LSM: the write reaches it (the
    fallback) and the kernel refuses it, in a sentence naming the field."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = lsm.open_proc()
            lsm.write_exec_attrs(fd, lsm.exec_attrs("docker-default", None))
        except lsm.AttrError as e:
            code = 0 if lsm.why(e, "F") == "F: cannot apply the AppArmor profile 'docker-default': Invalid argument" \
                else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_sentences():
    assert lsm.why(lsm.AttrError(2, "apparmor", "exec nope"), "config.json process.apparmorProfile") == (
        "config.json process.apparmorProfile: the AppArmor profile 'nope' is not loaded on this host (load it with "
        "apparmor_parser, or name a loaded one)")
    assert lsm.why(lsm.AttrError(22, "selinux", "bad"), "--process-label") == (
        "--process-label: 'bad' is not a valid SELinux label on this host (Invalid argument)")


def test_mount_label_option():
    label = "system_u:object_r:container_file_t:s0:c1,c2"
    assert lsm.format_mount_label("", label) == f'context="{label}"'
    assert lsm.format_mount_label("mode=755,size=65536k", label) == f'mode=755,size=65536k,context="{label}"'
    assert lsm.format_mount_label("mode=755", "") == "mode=755"
    assert {"proc", "sysfs", "cgroup", "bind", "mqueue"} <= set(lsm.UNLABELLED_TYPES)
    assert "tmpfs" not in lsm.UNLABELLED_TYPES and "devpts" not in lsm.UNLABELLED_TYPES


_MOUNT_CHILD = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from inclavare.linux import syscalls
from inclavare.runtime import rootfs as rfs
syscalls.unshare(syscalls.CLONE_NEWNS)
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
seen = []
real = syscalls.mount
def spy(src, target, typ, flags, data=None):
    seen.append([typ, data])
    return real(src, target, typ, flags, data)
rfs.s.mount = spy
root = sys.argv[2]
mounts = [{"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
          {"destination": "/p", "type": "proc", "source": "proc"}]
try:
    rfs.mount_all({"mounts": mounts[int(sys.argv[3]):]}, root, root, None, False, sys.argv[4])
    err = ""
except Exception as e:
    err = str(e)
print(json.dumps({"seen": seen, "error": err}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_mount_label_reaches_the_mount_where_selinux_is_off(tmp_path):
    """linux.mountLabel becomes context= on a tmpfs (not on proc); without SELinux the kernel refuses the option,
    which shows the option reached mount(2). (rune itself ignores the label on such a host: see below.)"""
    root = tmp_path / "r"
    (root / "t").mkdir(parents=True)
    (root / "p").mkdir()
    label = "system_u:object_r:container_file_t:s0"

    def child(skip: int) -> dict:
        p = subprocess.run([sys.executable, "-c", _MOUNT_CHILD, str(REPO / "src"), str(root), str(skip), label],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    first = child(0)
    assert first["seen"][0] == ["tmpfs", f'mode=755,context="{label}"']
    if not SELINUX_ON:
        assert first["error"].startswith("config.json mounts[0]: cannot mount tmpfs on /t: ")
    proc_only = child(1)
    assert proc_only == {"seen": [["proc", None]], "error": ""}


# ---------------------------------------------------------------------------------------- real containers


@pytest.mark.skipif(APPARMOR_ON or SELINUX_ON, reason="an LSM is enabled here")
def test_labels_are_ignored_with_a_warning_where_apparmor_and_selinux_are_off(rune, tmp_path):
    """docker's docker-default and podman's container_t on a host without those LSMs: the container runs, and the
    log says which field was ignored (they were refused, so every `docker run --runtime rune` failed on Ubuntu)."""

    def edit(c: dict) -> None:
        c["process"]["apparmorProfile"] = "docker-default"
        c["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2"
        c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"

    log = tmp_path / "rune.log"
    p = rune("--log", str(log), "--log-format", "json", "run", "--bundle", str(rune.bundle(["echo", "ran"], edit)),
             new_id())
    assert (p.returncode, p.stdout) == (0, "ran\n"), p.stderr
    warnings = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert warnings == [
        "config.json process.apparmorProfile: AppArmor is not enabled on this host: 'docker-default' is ignored",
        "config.json process.selinuxLabel: SELinux is not enabled on this host: "
        "'system_u:system_r:container_t:s0:c1,c2' is ignored",
        "config.json linux.mountLabel: SELinux is not enabled on this host: "
        "'system_u:object_r:container_file_t:s0:c1,c2' is ignored"]


@pytest.mark.skipif(APPARMOR_ON or SELINUX_ON, reason="an LSM is enabled here")
def test_exec_labels_are_ignored_with_a_warning_where_apparmor_and_selinux_are_off(rune):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(rune.bundle(["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("exec", "--apparmor", "docker-default", "--process-label", "system_u:system_r:container_t:s0", cid,
                 "echo", "ran")
        assert (p.returncode, p.stdout) == (0, "ran\n"), p.stderr
        assert p.stderr == ("warning: --apparmor: AppArmor is not enabled on this host: 'docker-default' is ignored\n"
                            "warning: --process-label: SELinux is not enabled on this host: "
                            "'system_u:system_r:container_t:s0' is ignored\n")
    finally:
        rune("delete", "--force", cid)


@pytest.mark.skipif(not APPARMOR_ON, reason="AppArmor is not enabled on this host")
def test_apparmor_profile_confines_the_process_where_apparmor_is_on(rune):
    """unconfined is always loaded; a profile that is not loaded is a clear error."""
    out = rune("run", "--bundle", str(rune.bundle(["cat", "/proc/self/attr/current"],
                                                  lambda c: c["process"].update(apparmorProfile="unconfined"))),
               new_id())
    assert out.returncode == 0 and out.stdout.startswith("unconfined"), out.stderr
    p = rune("run", "--bundle", str(rune.bundle(["true"], lambda c: c["process"].update(
        apparmorProfile="rune-test-no-such-profile"))), new_id())
    assert p.returncode == 1 and "'rune-test-no-such-profile' is not loaded on this host" in p.stderr
