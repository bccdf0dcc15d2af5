"""config.json root and mounts, observed from inside real containers: read-only root, bind and rbind, mount flags,
propagation (of the mounts and of the root), tmpfs, proc, sysfs, devpts, mqueue, cgroup, --no-pivot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import new_id
from tests.runtime.helpers import mountinfo, run_ok, sh, wait_file


def bind(src: Path | str, dest: str, *options: str, typ: str = "bind") -> dict:
    return {"destination": dest, "type": typ, "source": str(src), "options": list(options)}


def test_readonly_root_refuses_writes(rune):
    out = run_ok(rune, ["sh", "-c", "touch /probe 2>&1; echo rc=$?; cat /proc/self/mountinfo"])
    assert "Read-only file system" in out and "rc=1" in out
    assert "ro" in mountinfo(out)["/"]["opts"]


def test_writable_root_when_readonly_is_false(rune):
    name = f"probe-{new_id()}"
    out = run_ok(rune, ["sh", "-c", f"touch /{name} && echo wrote && rm /{name}"],
                 edit=lambda c: c["root"].update(readonly=False))  # fmt: skip
    assert out == "wrote\n"
    assert not (rune.rootfs / name).exists()


def test_bind_and_rbind_nested_mount(rune, tmp_path):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "file").write_text("from the host\n")
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "nested"))
    try:
        (src / "nested" / "inner").write_text("nested mount\n")
        out = run_ok(rune, ["sh", "-c", "cat /mnt/b/file; cat /mnt/b/nested/inner 2>&1; cat /mnt/r/nested/inner"],
                     edit=lambda c: c["mounts"].extend([bind(src, "/mnt/b", "bind"), bind(src, "/mnt/r", "rbind")]))
    finally:
        sh("umount", str(src / "nested"))
    lines = out.splitlines()
    assert lines[0] == "from the host"
    assert "No such file" in lines[1]  # a plain bind does not bring the nested mount
    assert lines[2] == "nested mount"  # rbind does


def test_bind_mount_flags(rune, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("#!/bin/sh\necho ran\n")
    (src / "x").chmod(0o755)
    out = run_ok(rune, ["sh", "-c", "cat /proc/self/mountinfo; echo ---; /mnt/flags/x 2>&1; touch /mnt/flags/y 2>&1;"
                        " /mnt/plain/x; touch /mnt/plain/y && echo wrote"],
                 edit=lambda c: c["mounts"].extend([bind(src, "/mnt/flags", "rbind", "ro", "nosuid", "nodev", "noexec"),
                                                    bind(src, "/mnt/plain", "rbind", "rw")]))  # fmt: skip
    info, rest = out.split("---\n")
    m = mountinfo(info)
    assert {"ro", "nosuid", "nodev", "noexec"} <= m["/mnt/flags"]["opts"]
    assert not {"ro", "nosuid", "nodev", "noexec"} & m["/mnt/plain"]["opts"]
    assert "Permission denied" in rest  # noexec
    assert "Read-only file system" in rest  # ro
    assert "ran\nwrote\n" in rest
    assert (src / "y").exists()


@pytest.fixture
def shared_dir(tmp_path):
    """A host directory that is a shared mount of its own (the host's / is private here)."""
    src = tmp_path / "shared"
    src.mkdir()
    sh("mount", "--bind", str(src), str(src))
    sh("mount", "--make-shared", str(src))
    yield src
    subprocess.run(["umount", "-R", "-l", str(src)], capture_output=True)


def _host_mount_seen(rune, tmp_path: Path, src: Path, edit) -> dict:
    """Run a container that waits while the host mounts a tmpfs on src/sub; its mountinfo afterwards."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (src / "sub").mkdir(exist_ok=True)

    def full(c: dict) -> None:
        c["mounts"].append(bind(ctl, "/ctl", "rbind"))
        edit(c)

    b = rune.bundle(["sh", "-c", "echo > /ctl/ready; while [ ! -e /ctl/go ]; do usleep 10000; done;"
                                 " cat /proc/self/mountinfo"], edit=full)  # fmt: skip
    p = subprocess.Popen([rune.binary, "--root", str(rune.root), "run", "--bundle", str(b), new_id()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_file(ctl / "ready", p)
        sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub"))
        (ctl / "go").touch()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    return mountinfo(out)


@pytest.mark.parametrize(("option", "seen"), [("rshared", True), ("shared", True), ("rslave", True), ("slave", True),
                                              ("rprivate", False), ("private", False), ("runbindable", False)])
def test_mount_propagation_from_the_host(rune, tmp_path, shared_dir, option, seen):
    m = _host_mount_seen(rune, tmp_path, shared_dir,
                         lambda c: c["mounts"].append(bind(shared_dir, "/mnt/p", "rbind", option)))
    assert ("/mnt/p/sub" in m) == seen
    if seen:
        assert m["/mnt/p/sub"]["fstype"] == "tmpfs"
    want = {"rshared": "shared:", "shared": "shared:", "rslave": "master:", "slave": "master:"}.get(option)
    tags = " ".join(m["/mnt/p"]["optional"])
    assert (want in tags) if want else ("shared:" not in tags and "master:" not in tags)


def test_rshared_mount_propagates_back_to_the_host(rune, shared_dir):
    """Mounts made inside reach the host only when the container's tree stays a peer of the host's
    (rootfsPropagation rshared; under the default rslave the container's copy is a slave)."""

    def edit(c: dict) -> None:
        c["linux"]["rootfsPropagation"] = "rshared"
        c["mounts"].append(bind(shared_dir, "/mnt/p", "rbind", "rshared"))
        c["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
        c["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN")
        c["process"]["capabilities"]["permitted"].append("CAP_SYS_ADMIN")

    (shared_dir / "back").mkdir()
    run_ok(rune, ["mount", "-t", "tmpfs", "-o", "size=1m", "fromcontainer", "/mnt/p/back"], edit=edit)
    with open("/proc/self/mountinfo") as f:
        m = mountinfo(f.read())
    assert m[str(shared_dir / "back")]["source"] == "fromcontainer"


@pytest.mark.parametrize(("prop", "tag", "seen"), [(None, "master:", True), ("rslave", "master:", True),
                                                   ("slave", "", False), ("rshared", "shared:", False),
                                                   ("shared", "shared:", False), ("rprivate", "", False),
                                                   ("private", "", False)])  # fmt: skip
def test_rootfs_propagation(rune, tmp_path, rootfs, prop, tag, seen):
    """The root mount's propagation inside (mountinfo's optional fields) and whether a mount the host makes under
    a shared rootfs reaches the container. As with runc, the mount holding the rootfs is made private before the
    rootfs is bound for pivot_root unless the whole tree was made rslave or rprivate, so host mounts reach the root
    only under the default rslave; the asked propagation is then applied to the new root."""
    root = tmp_path / "sharedroot"
    root.mkdir()
    sh("mount", "--bind", str(rootfs), str(root))
    sh("mount", "--make-shared", str(root))
    try:
        (root / "mnt").mkdir(exist_ok=True)

        def edit(c: dict) -> None:
            c["root"]["path"] = str(root)
            if prop:
                c["linux"]["rootfsPropagation"] = prop

        m = _host_mount_seen(rune, tmp_path, root / "mnt", edit)
    finally:
        subprocess.run(["umount", "-R", "-l", str(root)], capture_output=True)
    tags = " ".join(m["/"]["optional"])
    assert (tag in tags) if tag else ("shared:" not in tags and "master:" not in tags)
    assert ("/mnt/sub" in m) == seen


def test_tmpfs_size_and_mode(rune):
    out = run_ok(rune, ["sh", "-c", "stat -c %a /mnt/t; grep ' /mnt/t ' /proc/self/mountinfo"],
                 edit=lambda c: c["mounts"].append({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                                                    "options": ["size=2m", "mode=1750", "nodev"]}))  # fmt: skip
    mode, line = out.splitlines()
    assert mode == "1750"
    m = mountinfo(line)["/mnt/t"]
    assert m["fstype"] == "tmpfs" and "size=2048k" in m["super"] and "nodev" in m["opts"]


def test_kernel_filesystems_are_mounted_and_work(rune):
    out = run_ok(rune, ["sh", "-c", "cat /proc/self/mountinfo; echo ---; cat /proc/1/comm; ls /sys/kernel >/dev/null"
                        " && echo sysfs-ok; test -c /dev/pts/ptmx && echo devpts-ok; ls -a /dev/mqueue | wc -l"])
    info, rest = out.split("---\n")
    m = mountinfo(info)
    assert m["/proc"]["fstype"] == "proc"
    assert m["/sys"]["fstype"] == "sysfs" and "ro" in m["/sys"]["opts"]
    assert m["/dev/pts"]["fstype"] == "devpts" and {"newinstance", "ptmxmode=666"} & m["/dev/pts"]["super"]
    assert m["/dev/mqueue"]["fstype"] == "mqueue"
    assert m["/dev/shm"]["fstype"] == "tmpfs" and "size=65536k" in m["/dev/shm"]["super"]
    assert m["/dev"]["fstype"] == "tmpfs"
    assert rest.splitlines() == ["sh", "sysfs-ok", "devpts-ok", "2"]


def test_cgroup_mount_is_the_containers_cgroup_read_only(rune):
    cid = new_id()
    b = rune.bundle(["sh", "-c", "cat /proc/self/mountinfo; echo ---; cat /proc/self/cgroup; echo ---;"
                                 " for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs; do"
                                 " [ -e $f ] && cat $f && break; done; echo ---;"
                                 " mkdir /sys/fs/cgroup/pids/x 2>&1 || mkdir /sys/fs/cgroup/x 2>&1"])  # fmt: skip
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1, p.stderr  # the mkdir fails
    info, _cg, procs, err = p.stdout.split("---\n")
    m = mountinfo(info)
    assert "ro" in m["/sys/fs/cgroup"]["opts"]
    cg = {k: v for k, v in m.items() if k.startswith("/sys/fs/cgroup/") or k == "/sys/fs/cgroup"}
    roots = {v["root"] for v in cg.values() if v["fstype"] in ("cgroup", "cgroup2")}
    assert roots and all(r.endswith("/" + cid) for r in roots), roots  # bind mounts of the container's cgroups
    assert all("ro" in v["opts"] for v in cg.values())
    assert "1" in procs.split()  # the container's init is in the cgroup it sees
    assert "Read-only file system" in err


def test_cgroup_namespace_mounts_its_own_root(rune):
    out = run_ok(rune, ["sh", "-c", "cat /proc/self/cgroup; echo ---; cat /proc/self/mountinfo"],
                 edit=lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}))
    cg, info = out.split("---\n")
    assert all(line.endswith(":/") for line in cg.splitlines())  # the container's cgroup is its root
    m = mountinfo(info)
    assert {v["root"] for k, v in m.items() if k.startswith("/sys/fs/cgroup/")} == {"/"}


def test_no_pivot(rune):
    out = run_ok(rune, ["sh", "-c", "ls /bin/busybox; touch /x 2>&1; cat /proc/self/mountinfo"], flags=("--no-pivot",))
    assert out.startswith("/bin/busybox\n")
    assert "Read-only file system" in out
    m = mountinfo(out)
    assert m["/"]["root"] == str(rune.rootfs) and m["/proc"]["fstype"] == "proc"
