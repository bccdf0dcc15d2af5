"""CVE-2024-21626 and CVE-2016-9962: fds of the host that reach a container's process.

A directory fd open in a process that enters the container (rune's own cgroup2 directory fd, a namespace file, or
one leaked by rune's caller) is reachable as /proc/self/fd/N: a working directory there lies outside the container's
root, and `../..` climbs the host's tree. rune closes every fd above stdio and --preserve-fds in its processes
before they enter the container, and refuses a working directory that the container's root does not reach.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from tests.conftest import new_id
from tests.enclave.conftest import pal_bundle
from tests.security.conftest import attack_bundle, detached

UP = "../" * 40  # enough `..` to reach the host's / from any directory outside the root


@pytest.fixture
def marker(tmp_path):
    """A file on the host that no container may read, and a directory where none may write."""
    d = tmp_path / "host-secret"
    d.mkdir()
    secret = uuid.uuid4().hex
    (d / "marker").write_text(secret)
    return d, secret


def _cat(marker_dir) -> str:
    return f"cat {UP}{str(marker_dir).lstrip('/')}/marker; echo > {UP}{str(marker_dir).lstrip('/')}/written"


def test_exec_cwd_through_every_fd_of_the_exec_process(srune, attack_rootfs, tmp_path, marker):
    """`rune exec --cwd /proc/self/fd/N` for every small N: the exec process holds no host directory (the old code
    kept its cgroup2 directory fd there)."""
    d, secret = marker
    out = tmp_path / "out"
    out.mkdir()
    with detached(srune, attack_bundle(srune, attack_rootfs, out, ["sleep", "60"])) as cid:
        _every_fd_as_cwd(srune, cid, d, secret)


def _every_fd_as_cwd(r, cid: str, d, secret: str) -> None:  # noqa: ANN001
    for n in range(3, 16):
        p = r("exec", "--cwd", f"/proc/self/fd/{n}", cid, "sh", "-c", _cat(d))
        assert secret not in p.stdout, f"fd {n} led to the host: {p.stdout}"
        assert not (d / "written").exists(), f"fd {n} let the container write on the host"
        assert p.returncode != 0, f"--cwd /proc/self/fd/{n} was accepted: {p.stdout} {p.stderr}"


def test_exec_cwd_through_a_caller_fd(srune, attack_rootfs, tmp_path, marker):
    """A directory fd that rune's caller leaked (`rune exec ... 7</host/dir`) is closed before the exec process
    enters the container; --cwd through it is refused."""
    d, secret = marker
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with detached(srune, attack_bundle(srune, attack_rootfs, out, ["sleep", "60"])) as cid:
            p = srune("exec", "--cwd", f"/proc/self/fd/{fd}", cid, "sh", "-c", "cat marker; ls", pass_fds=(fd,))
            assert secret not in p.stdout and p.returncode != 0, (p.stdout, p.stderr)
            p = srune("exec", cid, "sh", "-c", f"ls -l /proc/self/fd/; cat /proc/self/fd/{fd}/marker",
                      pass_fds=(fd,))
            assert secret not in p.stdout, p.stdout
            assert f" {fd} -> " not in p.stdout, f"the caller's fd {fd} reached the exec'd process: {p.stdout}"
    finally:
        os.close(fd)


def test_create_cwd_through_a_caller_fd(srune, attack_rootfs, tmp_path, marker):
    """process.cwd = /proc/self/fd/N with N an fd of rune's caller: refused at create, before the program runs."""
    d, secret = marker
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def cwd(c: dict) -> None:
            c["process"]["cwd"] = f"/proc/self/fd/{fd}"

        b = attack_bundle(srune, attack_rootfs, out, ["sh", "-c", _cat(d)], edit=cwd)
        p = srune("run", "--bundle", str(b), new_id("leak"), pass_fds=(fd,))
    finally:
        os.close(fd)
    assert secret not in p.stdout and not (d / "written").exists(), p.stdout
    assert p.returncode == 1 and "process.cwd" in p.stderr, (p.returncode, p.stderr)


def test_create_cwd_through_the_inits_own_fds(srune, attack_rootfs, tmp_path, marker):
    """process.cwd through each small fd of the init (the old code kept the cgroup2 directory and the host's pid
    namespace there): refused, never the host."""
    d, secret = marker
    out = tmp_path / "out"
    out.mkdir()
    for n in range(3, 12):
        def cwd(c: dict, n: int = n) -> None:
            c["process"]["cwd"] = f"/proc/self/fd/{n}"

        b = attack_bundle(srune, attack_rootfs, out, ["sh", "-c", _cat(d)], edit=cwd)
        p = srune("run", "--bundle", str(b), new_id("leak"))
        assert secret not in p.stdout and not (d / "written").exists(), (n, p.stdout)
        assert p.returncode != 0, (n, p.stdout, p.stderr)


def test_no_host_fd_in_a_created_container(srune, attack_rootfs, tmp_path):
    """A created container's init (waiting for start, still rune's Python) holds stdio, rune's sync socket and the
    exec fifo handle, and nothing from the host that the container could open."""
    out = tmp_path / "out"
    out.mkdir()
    leaked = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    cid = new_id("fds")
    try:
        p = srune("create", "--bundle", str(attack_bundle(srune, attack_rootfs, out, ["true"])), cid,
                  pass_fds=(leaked,))
        assert p.returncode == 0, p.stderr
        pid = json.loads(srune("state", cid).stdout)["pid"]
        targets = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    finally:
        os.close(leaked)
        srune("delete", "--force", cid)
    dirs = {n: t for n, t in targets.items() if t.startswith("/") and os.path.isdir(t)}
    assert not dirs, f"directories of the host held by the container's init: {dirs}"
    assert not any(t.startswith("pid:[") or t.startswith("cgroup") for t in targets.values()), targets
    assert len(targets) <= 7, targets  # stdio, the socket, the fifo handle, the exec trampoline


@pytest.mark.parametrize("pal_version", [None, 2], ids=["sim", "pal-v2"])
def test_enclave_pid1_holds_no_caller_fd(srune, attack_rootfs, tmp_path, marker, pal_libs, sim_dir, pal_version):
    """An enclave container's PID 1 (the runelet) never execs, so an fd it inherited would stay for the container's
    life: the payload finds none, and cannot read PID 1's fds at all."""
    d, secret = marker
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    script = f"ls -l /proc/1/fd/ 2>&1; cat /proc/1/fd/{fd}/marker 2>&1; cd /proc/1/fd/{fd} 2>&1 && cat marker"

    def edit(c: dict) -> None:
        c["root"]["path"] = str(attack_rootfs)
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})

    b = pal_bundle(srune, pal_libs[pal_version] if pal_version else None, ["sh", "-c", script], edit=edit)
    try:
        p = srune("run", "--bundle", str(b), new_id("enc"), pass_fds=(fd,))
    finally:
        os.close(fd)
    assert p.returncode in (0, 1, 2), p.stderr
    assert secret not in p.stdout, p.stdout


def test_enclave_exec_cwd_through_the_runelets_fds(srune, attack_rootfs, tmp_path, marker, pal_libs):
    """`rune exec --cwd /proc/self/fd/N` into a PAL enclave: the runelet changes to that directory itself before the
    PAL creates the process; none of its fds leads to the host, and such a cwd is refused."""
    d, secret = marker

    def edit(c: dict) -> None:
        c["root"]["path"] = str(attack_rootfs)

    with detached(srune, pal_bundle(srune, pal_libs[2], ["sleep", "60"], edit=edit), "encexec") as cid:
        _every_fd_as_cwd(srune, cid, d, secret)


def test_runc_reference(runc_copy, attack_rootfs, tmp_path, marker):
    """`runc exec --cwd /proc/self/fd/N` on the same bundle: the reference holds too."""
    from tests.conftest import default_config

    d, secret = marker
    b = tmp_path / "runc-bundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(default_config(attack_rootfs, ["sleep", "60"])))
    cid = new_id("runc")
    p = runc_copy("run", "--detach", "--bundle", str(b), cid)
    assert p.returncode == 0, p.stderr
    try:
        for n in range(3, 16):
            p = runc_copy("exec", "--cwd", f"/proc/self/fd/{n}", cid, "sh", "-c", _cat(d))
            assert secret not in p.stdout and not (d / "written").exists(), (n, p.stdout)
    finally:
        runc_copy("delete", "--force", cid)
    assert runc_copy.intact()
