"""Runtime-spec cases where rune was wrong (issue 12 items a-c, g), each checked against runc where the spec leaves
the behaviour to the runtime: a user namespace whose root is an unprivileged host uid, configs without a mount
namespace or without any namespace, a hostname in a uts namespace joined by path, and an execve that fails after
`start`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tests.conftest import new_id
from tests.runtime.test_config_linux import reachable, userns_bundle  # noqa: F401 - the fixture

RUNC = shutil.which("runc")
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")


def _runc(rune, *args: str, private: bool = False) -> subprocess.CompletedProcess:
    """runc with its own --root; private: in a private mount namespace, since runc without a mount namespace in
    the config makes the container's mounts on the host (seen here: proc, sysfs and cgroups left on its rootfs)."""
    cmd = [RUNC, "--root", str(rune.tmp / "runc-root"), *args]
    if private:
        cmd = ["unshare", "-m", "--propagation", "private", *cmd]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(cmd, stdout=out, stderr=err, text=True, timeout=60)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def _create_start(run, bundle: Path, cid: str, out: Path) -> tuple[int, int]:
    """create (its stdio, which the container keeps, on `out`) then start; both exit codes."""
    with open(out, "w") as f:
        created = run("create", "--bundle", str(bundle), cid, stdout=f, stderr=f).returncode
    return created, run("start", cid).returncode


# ------------------------------------------------------------------- a. user namespace root as a host user


@needs_runc
def test_userns_root_as_an_unprivileged_host_uid_with_a_private_root_dir(rune, reachable):  # noqa: F811
    """The mapped root (host uid 100000) cannot traverse --root (0700 here): the exec fifo reaches the init as an
    fd opened by rune, as runc hands it one, and create + start run the process."""
    assert os.stat(rune.tmp).st_mode & 0o077 == 0  # pytest's tmp: only root reaches rune's --root below it
    b = userns_bundle(rune, reachable, ["sh", "-c", "cat /proc/self/uid_map; id -u"])
    outs = {}
    for name in ("rune", "runc"):
        cid = new_id()
        out = rune.tmp / f"{name}.out"

        def run(*a, name=name, **kw):  # noqa: ANN002, ANN003
            if name == "rune":
                return rune(*a, **kw)
            with tempfile.TemporaryFile("w+") as dflt:
                kw.setdefault("stdout", dflt)
                kw.setdefault("stderr", dflt)
                return subprocess.run([RUNC, "--root", str(rune.tmp / "runc-root"), *a], timeout=60, **kw)

        assert _create_start(run, b, cid, out) == (0, 0), out.read_text()
        deadline = time.monotonic() + 20
        while out.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        run("delete", "--force", cid)
        outs[name] = out.read_text().split()
    assert outs["rune"] == outs["runc"] == ["0", "100000", "65536", "0"]


# ------------------------------------------------------------------- b. no mount namespace, no namespaces


def _own_rootfs(rune) -> str:
    """A private copy of the rootfs: without a mount namespace, what a runtime makes in the container (runc's
    device nodes, its mount points) stays in the directory, and the shared rootfs must not get it."""
    root = rune.tmp / f"rootfs-{new_id()}"
    shutil.copytree(rune.rootfs, root, symlinks=True)
    return str(root)


def _no_namespaces(c: dict, keep_mounts: bool = False) -> None:
    c["linux"]["namespaces"] = []
    c.pop("hostname", None)
    for k in ("maskedPaths", "readonlyPaths"):
        c["linux"].pop(k, None)
    c["root"]["readonly"] = False
    if not keep_mounts:
        c["mounts"] = []


@needs_runc
def test_no_namespaces_at_all_runs(rune):
    """`run` of a config without namespaces (nor mounts: see below) runs the process chrooted in the rootfs. runc
    cannot (it lists /proc/self/fd in the chroot, where nothing mounted proc); rune needs no /proc for `run`."""
    root = _own_rootfs(rune)
    b = rune.bundle(["sh", "-c", "echo in; ls /proc | wc -l; exit 3"],
                    edit=lambda c: (_no_namespaces(c), c["root"].update(path=root)))
    mine = rune("run", "--bundle", str(b), new_id())
    assert (mine.returncode, mine.stdout, mine.stderr) == (3, "in\n0\n", "")
    theirs = _runc(rune, "run", "--bundle", str(b), new_id(), private=True)
    assert theirs.returncode == 1 and "open /proc/self/fd: no such file or directory" in theirs.stderr


@needs_runc
def test_create_without_proc_in_the_container_fails_as_runc_does(rune):
    """No mount namespace and so no /proc in the container: the init cannot reopen the exec fifo after its chroot.
    runc's create fails ("open /proc/self/fd: no such file or directory"); rune's too, with a sentence, and no
    container is left (it exited 0 with a dead init, and `state` said stopped with pid 0)."""
    root = _own_rootfs(rune)
    b = rune.bundle(["true"], edit=lambda c: (_no_namespaces(c), c["root"].update(path=root)))
    cid = new_id()
    p = rune("create", "--bundle", str(b), cid)
    assert p.returncode == 1
    assert p.stderr.startswith("config.json: the container cannot wait for `rune start` on the exec fifo"), p.stderr
    assert "/proc is not mounted in the container" in p.stderr
    assert rune("state", cid).returncode == 1 and not (rune.root / cid).exists()
    theirs = _runc(rune, "create", "--bundle", str(b), new_id(), private=True)
    assert theirs.returncode == 1 and "/proc/self/fd" in theirs.stderr


@pytest.mark.parametrize("field", ["mounts", "linux.maskedPaths", "linux.readonlyPaths", "root.readonly"])
def test_what_needs_a_mount_namespace_is_refused_without_one(rune, field):
    """Without a mount namespace the mounts would be the host's: refused, naming the field (runc makes `mounts` on
    the host and refuses masked paths: "unable to restrict sys entries without a private MNT namespace")."""

    root = _own_rootfs(rune)

    def edit(c: dict) -> None:
        _no_namespaces(c)
        c["root"]["path"] = root
        c["linux"]["namespaces"] = [{"type": "pid"}]
        if field == "mounts":
            c["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
        elif field == "root.readonly":
            c["root"]["readonly"] = True
        else:
            c["linux"][field.split(".")[1]] = ["/proc/kcore"]

    def mount_points() -> set[tuple[str, str]]:  # (mount id, mount point): other tests mount and unmount meanwhile
        return {(f[0], f[4]) for f in (line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines())}

    host = mount_points()
    cid = new_id()
    p = rune("run", "--bundle", str(edit and rune.bundle(["true"], edit=edit)), cid)
    assert p.returncode == 1
    assert p.stderr.endswith(f"config.json: {field}: needs a mount namespace in linux.namespaces (without one it "
                             "would change the host's mounts): add {\"type\": \"mount\"} or remove it\n"), p.stderr
    assert not (rune.root / cid).exists()
    made = {point for _, point in mount_points() - host}
    assert not {point for point in made if point.startswith(str(root)) or point in ("/", "/proc", "/proc/kcore")}, made


# ------------------------------------------------------------------- c. hostname in a joined uts namespace


@needs_runc
def test_hostname_in_a_uts_namespace_joined_by_path(rune):
    """The spec allows `hostname` with a uts namespace joined by path; runc sets it there, and so does rune."""
    owner = new_id()
    b = rune.bundle(["sleep", "60"])
    assert rune("run", "--detach", "--bundle", str(b), owner).returncode == 0
    try:
        pid = rune.state(owner)["pid"]
        names = {}
        for name in ("rune", "runc"):
            def edit(c: dict, n: str = name) -> None:
                c["hostname"] = f"joined-{n}"
                c["linux"]["namespaces"] = [{"type": "uts", "path": f"/proc/{pid}/ns/uts"} if ns["type"] == "uts"
                                            else ns for ns in c["linux"]["namespaces"]]

            jb = rune.bundle(["hostname"], edit=edit)
            p = rune("run", "--bundle", str(jb), new_id()) if name == "rune" else \
                _runc(rune, "run", "--bundle", str(jb), new_id())
            assert p.returncode == 0, p.stderr
            seen = rune("exec", owner, "hostname")
            names[name] = (p.stdout, seen.stdout)
        assert names == {"rune": ("joined-rune\n", "joined-rune\n"), "runc": ("joined-runc\n", "joined-runc\n")}
    finally:
        rune("delete", "--force", owner)


# ------------------------------------------------------------------- h. sentences that name the cause


def _held() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(bool(_held() & (1 << 24)), reason="this host gives CAP_SYS_RESOURCE (needed: a host without)")
def test_privileged_without_cap_sys_resource_names_the_capability(rune):
    """docker --privileged asks for every capability; on a host that withholds CAP_SYS_RESOURCE from rune the
    sentence named "cannot switch to uid 0 gid 0" instead of the capability."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from inclavare.linux.capabilities import NAMES

    def edit(c: dict) -> None:
        every = list(NAMES[: int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1])
        c["process"]["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}

    log = rune.tmp / "rune.log"
    cid = new_id()
    p = rune("--log", str(log), "run", "--bundle", str(rune.bundle(["true"], edit=edit)), cid)
    want = ("config.json process.capabilities: cannot grant CAP_SYS_RESOURCE: rune does not hold it on this host "
            "(Operation not permitted); remove it from the capability sets")
    assert (p.returncode, p.stderr) == (1, want + "\n")
    assert want.replace('"', '\\"') in log.read_text()
    assert not (rune.root / cid).exists()


def test_exec_with_a_bad_cwd_names_the_flag(rune):
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(rune.bundle(["sleep", "60"])), cid).returncode == 0
    try:
        p = rune("exec", "--cwd", "/nonexistent", cid, "true")
        assert (p.returncode, p.stderr) == (255, "exec failed: --cwd: cannot enter /nonexistent: No such file or directory\n")
        p = rune("exec", "--cwd", "/etc/passwd", cid, "true")
        assert (p.returncode, p.stderr) == (255, "exec failed: --cwd: cannot enter /etc/passwd: Not a directory\n")
    finally:
        rune("delete", "--force", cid)


# ------------------------------------------------------------------- f. rootless user namespaces


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not (os.path.exists(SYSTEM_PYTHON) and shutil.which("setpriv")),
                    reason="needs a Python that an unprivileged user can run, and setpriv")
def test_rootless_user_namespace_denies_setgroups(rune, reachable):  # noqa: F811
    """rune run by an unprivileged user (nobody) maps its own uid to the container's root: the kernel takes the
    gid_map only once setgroups is denied, which rune (as runc) writes; the process sees "deny". runc, run the same
    way on the same bundle, agrees."""
    src = Path(__file__).resolve().parents[2] / "src"
    launcher = reachable / "rune"
    launcher.write_text(f"#!{SYSTEM_PYTHON} -IS\nimport sys\nsys.path.insert(0, {str(src)!r})\n"
                        "from inclavare.cli.rune import main\nraise SystemExit(main())\n")
    launcher.chmod(0o755)

    def edit(c: dict) -> None:
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 65534, "size": 1}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 65534, "size": 1}]
        c["linux"].pop("resources", None)
        # as `runc spec --rootless` writes them: no cgroup mount, devpts without gid=5, sysfs bound
        c["mounts"] = [m for m in c["mounts"] if m["type"] != "cgroup"]
        for m in c["mounts"]:
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if not o.startswith("gid=")]
            if m["type"] == "sysfs":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])

    b = userns_bundle(rune, reachable, ["sh", "-c", "cat /proc/self/setgroups; id -u; id -G"], edit)
    outs = {}
    for name, exe in (("rune", str(launcher)), ("runc", RUNC)):
        if exe is None:
            continue
        root = reachable / f"root-{name}"
        root.mkdir()
        os.chown(root, 65534, 65534)
        p = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "env",
                            f"HOME={reachable}", "XDG_RUNTIME_DIR=", exe, "--root", str(root), "run", "-b", str(b),
                            new_id()], capture_output=True, text=True, timeout=60, cwd=reachable)  # fmt: skip
        outs[name] = (p.returncode, p.stdout)
        assert p.returncode == 0, f"{name}: {p.stderr}"
    assert outs["rune"] == (0, "deny\n0\n0\n")
    if "runc" in outs:
        assert outs["runc"] == outs["rune"]


# ------------------------------------------------------------------- f. kill without a pid-reuse race, kill --all


def test_kill_signals_through_a_pidfd_checked_against_the_start_time():
    """The init is signalled through a pidfd opened before its start time is compared with the state's: a process
    that only reuses the pid (another start time) is never signalled."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from inclavare.linux import proc
    from inclavare.runtime.kill import signal_init

    p = subprocess.Popen(["sleep", "100"])
    try:
        start = proc.stat(p.pid)[1]
        assert signal_init(p.pid, start + 1, 9) is False  # "the same pid, started at another time": not it
        assert p.poll() is None
        assert signal_init(p.pid, start, 9) is True
        assert p.wait(timeout=10) == -9
        assert signal_init(p.pid, start, 9) is False  # reaped: gone
    finally:
        p.kill()
        p.wait()


def _freezer_state(rune, cid: str) -> str:
    paths = json.loads((rune.root / cid / "state.json").read_text())["cgroup_paths"]
    if "freezer" in paths:
        return Path(paths["freezer"], "freezer.state").read_text().strip()
    return "FROZEN" if "frozen 1" in Path(paths[""], "cgroup.events").read_text() else "THAWED"


def test_kill_all_signals_every_process_and_leaves_the_cgroup_thawed(rune, tmp_path):
    """kill --all freezes the cgroup while it lists and signals (runc does, so that no fork escapes the list), and
    thaws it after; a paused container stays paused after a signal other than SIGKILL, and dies on SIGKILL."""
    cid = new_id()
    script = "trap 'echo got >> /dev/shm/n' USR1; (trap 'exit 0' USR1; while :; do sleep 0.05; done) & " \
             "while :; do sleep 0.05; done"
    b = rune.bundle(["sh", "-c", script])
    assert rune("run", "-d", "--bundle", str(b), cid).returncode == 0
    try:
        assert rune("kill", "--all", cid, "USR1").returncode == 0
        assert _freezer_state(rune, cid) == "THAWED"
        assert rune.state(cid)["status"] == "running"
        assert rune("pause", cid).returncode == 0
        assert rune("kill", "--all", cid, "USR1").returncode == 0
        assert rune.state(cid)["status"] == "paused" and _freezer_state(rune, cid) == "FROZEN"
        assert rune("kill", "--all", cid, "KILL").returncode == 0
        deadline = time.monotonic() + 20
        while rune.state(cid)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        rune("delete", "--force", cid)


# ------------------------------------------------------------------- g. an execve that fails after start


@needs_runc
@pytest.mark.parametrize("content,error", [("#!/nonexistent/interpreter\n", "no such file or directory"),
                                           ("not a program\0\1\2", "exec format error")], ids=["shebang", "ENOEXEC"])
def test_exec_failure_after_start_as_runc(rune, tmp_path, content, error):
    """`start` succeeds, the container stops, and its stderr says "exec PROGRAM: ERROR", as with runc; rune's own
    sentence goes to its log as a warning. `run` exits 1 as runc's does."""
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "bad").write_text(content)
    (progs / "bad").chmod(0o755)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/v", "type": "bind", "source": str(progs), "options": ["rbind", "ro"]})

    b = rune.bundle(["/v/bad"], edit=edit)
    seen = {}
    for name in ("rune", "runc"):
        cid = new_id()
        out = tmp_path / f"{name}.out"
        log = tmp_path / f"{name}.log"
        base = [rune.binary, "--root", str(rune.root)] if name == "rune" else \
            [RUNC, "--root", str(tmp_path / "runc-root")]
        with open(out, "w") as f:
            assert subprocess.run([*base, "--log", str(log), "create", "-b", str(b), cid], stdout=f, stderr=f,
                                  timeout=60).returncode == 0
        started = subprocess.run([*base, "--log", str(log), "start", cid], capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + 20
        while '"stopped"' not in subprocess.run([*base, "state", cid], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        subprocess.run([*base, "delete", cid], check=True, capture_output=True)
        ran = subprocess.run([*base, "run", "-b", str(b), new_id()], capture_output=True, text=True, timeout=60)
        seen[name] = (started.returncode, out.read_text(), ran.returncode)
        if name == "rune":
            assert f'config.json process.args[0]: exec: \\"/v/bad\\": {error[:1].upper()}{error[1:]}' in \
                log.read_text()
    assert seen["rune"] == seen["runc"] == (0, f"exec /v/bad: {error}\n", 1)
