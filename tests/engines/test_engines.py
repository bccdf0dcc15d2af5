"""The same cases through containerd (ctr), Docker and Podman, each with rune and with runc.

Each case runs under the `engine` fixture, which after the case demands that the engine's runtime root is empty and
that no mount (under the engine's directories) or cgroup (under the engine's cgroup parent) is left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines.conftest import Docker, Engine, Opts, need

pytestmark = pytest.mark.engines

# PID 1 of a pid namespace ignores signals it has no handler for: the trap makes SIGTERM end it with status 7
WAIT_FOR_TERM = "trap 'exit 7' TERM; sleep 1000 & wait"
NOT_FOUND_EXIT = {"containerd": 1, "docker": 127, "podman": 127}


def test_run_output(engine: Engine) -> None:
    p = engine.run(["echo", "hi"])
    assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr


def test_run_exit_status(engine: Engine) -> None:
    p = engine.run(["sh", "-c", "echo out; exit 3"])
    assert (p.returncode, p.stdout) == (3, "out\n"), p.stderr


def test_run_with_tty(engine: Engine) -> None:
    p = engine.run(["tty"], Opts(tty=True))
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0].startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)


def test_detached_stop_remove(engine: Engine) -> None:
    cid = engine.run_detached(["sh", "-c", WAIT_FOR_TERM])
    try:
        assert engine.stop(cid) == 7
        engine.remove(cid)
    except BaseException:
        engine.force_remove(cid)
        raise


def test_detached_exec(engine: Engine) -> None:
    cid = engine.run_detached(["sh", "-c", WAIT_FOR_TERM])
    try:
        p = engine.exec(cid, ["sh", "-c", "echo $((6*7)); tty; cat /proc/1/cmdline | tr '\\0' ' '"])
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and lines[:2] == ["42", "not a tty"], (p.returncode, p.stdout, p.stderr)
        assert lines[2].startswith("sh -c trap"), "the exec must run beside the container's init"
        p = engine.exec(cid, ["tty"], tty=True)
        assert p.returncode == 0 and p.stdout.strip().startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)
        p = engine.exec(cid, ["sh", "-c", "exit 5"])
        assert p.returncode == 5, p.stderr
        p = engine.exec(cid, ["id", "-u"], user="1000")
        assert (p.returncode, p.stdout) == (0, "1000\n"), p.stderr
        assert engine.stop(cid) == 7
        engine.remove(cid)
    except BaseException:
        engine.force_remove(cid)
        raise


def test_env_and_workdir(engine: Engine) -> None:
    p = engine.run(["sh", "-c", 'echo "$FOO"; pwd'], Opts(env={"FOO": "bar baz"}, workdir="/home/user"))
    assert (p.returncode, p.stdout) == (0, "bar baz\n/home/user\n"), p.stderr


def test_user(engine: Engine) -> None:
    need(engine, "user")
    p = engine.run(["sh", "-c", "id -u; id -g; touch /probe 2>&1; echo rc=$?"], Opts(user="1000"))
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[:2] == ["1000", "1000"], (p.stdout, p.stderr)
    assert "Permission denied" in lines[2] and lines[3] == "rc=1", p.stdout


@pytest.mark.parametrize("read_only", [True, False])
def test_read_only_rootfs(engine: Engine, read_only: bool) -> None:
    p = engine.run(["sh", "-c", "touch /probe 2>&1; echo rc=$?"], Opts(read_only=read_only))
    assert p.returncode == 0, p.stderr
    if read_only:
        assert "Read-only file system" in p.stdout and p.stdout.endswith("rc=1\n"), p.stdout
    else:
        assert p.stdout == "rc=0\n"


# A controller's file for the container: its own cgroup mounted at /sys/fs/cgroup/CTRL (Docker, Podman), or the
# host's hierarchy (ctr) where /proc/self/cgroup names the container's cgroup.
CGROUP_FILE = """
for c in "$@"; do
  ctrl=${c%%/*}; f=${c#*/}
  p=$(grep -E "^[0-9]+:([a-z_]+,)*$ctrl(,[a-z_]+)*:" /proc/self/cgroup | cut -d: -f3)
  if [ -n "$p" ] && [ "$p" != / ] && [ -e "/sys/fs/cgroup/$ctrl$p/$f" ]; then cat "/sys/fs/cgroup/$ctrl$p/$f"
  else cat "/sys/fs/cgroup/$ctrl/$f"; fi
done
"""


def test_resources(engine: Engine) -> None:
    pids = 0 if engine.name == "containerd" else 50  # ctr run has no pids limit flag
    o = Opts(memory=64 << 20, cpus="0.5", pids=pids)
    files = ["memory/memory.limit_in_bytes", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"]
    if pids:
        files.append("pids/pids.max")
    p = engine.run(["sh", "-c", CGROUP_FILE, "sh", *files], o)
    assert p.returncode == 0, p.stderr
    want = [str(64 << 20), "50000", "100000"] + (["50"] if pids else [])
    assert p.stdout.split() == want


def test_pids_limit_enforced(engine: Engine) -> None:
    """The limit is the container's own: the shell cannot fork past pids.max."""
    need(engine, "pids")
    p = engine.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; echo all started"],
                   Opts(pids=6))
    assert p.returncode != 0 and "all started" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert "fork" in p.stderr and "Resource temporarily unavailable" in p.stderr, p.stderr


@pytest.mark.parametrize("profile", ["default", "unconfined"])
def test_seccomp(engine: Engine, profile: str) -> None:
    """The engine's default profile is in force (Docker's and containerd's deny unshare(CLONE_NEWUSER) to a
    container without CAP_SYS_ADMIN; Podman's allows it, so there the filter mode is the evidence)."""
    p = engine.run(["sh", "-c", "grep ^Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?"],
                   Opts(seccomp=profile))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    if profile == "default":
        assert lines[0].split() == ["Seccomp:", "2"], p.stdout
        if engine.name != "podman":
            assert "Operation not permitted" in p.stdout and lines[-1] == "rc=1", p.stdout
    else:
        assert lines == ["Seccomp:\t0", "rc=0"]


def test_bad_command(engine: Engine) -> None:
    p = engine.run(["/nonexistent"])
    assert p.returncode == NOT_FOUND_EXIT[engine.name], (p.returncode, p.stderr)
    assert '"/nonexistent"' in p.stderr and "no such file or directory" in p.stderr, p.stderr
    if engine.runtime == "rune":  # rune's own sentence reaches the user through the engine
        assert "process.args[0]" in p.stderr, p.stderr


def test_docker_pause_update_restart(docker: Docker) -> None:
    """What `docker pause/unpause/update/top/restart` ask of the runtime (pause, resume, update, ps, kill, start)."""
    cid = docker.run_detached(["sh", "-c", WAIT_FOR_TERM])
    try:
        docker.k.docker("pause", cid)
        assert docker.k.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "paused"
        docker.k.docker("unpause", cid)
        assert "sleep 1000" in docker.k.docker("top", cid).stdout
        docker.k.docker("update", "--memory", "100m", "--memory-swap", "200m", cid)
        p = docker.exec(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
        assert p.stdout.strip() == str(100 << 20), (p.stdout, p.stderr)
        docker.k.docker("restart", "-t", "5", cid)
        assert docker.k.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        assert docker.stop(cid) == 7
        docker.remove(cid)
    except BaseException:
        docker.force_remove(cid)
        raise


def test_docker_logs_and_inspect(docker: Docker) -> None:
    """docker logs keeps both streams apart and docker inspect has the exit code, with the container removed after."""
    cid = docker.run_detached(["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4"])
    try:
        assert docker.k.docker("wait", cid).stdout.strip() == "4"
        assert docker.k.docker("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", cid).stdout.split() == [
            "4", "exited"]
        logs = docker.k.docker("logs", cid)
        assert (logs.stdout, logs.stderr) == ("to-stdout\n", "to-stderr\n")
        docker.remove(cid)
    except BaseException:
        docker.force_remove(cid)
        raise


def test_docker_oom_killed(docker: Docker) -> None:
    """The shim sees the OOM kill in the cgroup rune made: docker inspect says OOMKilled."""
    # the shim watches the cgroup for OOM only once the task started: allocate a moment later, or the event can be
    # missed (seen with runc as with rune)
    cid = docker.run_detached_with(["--memory", "8m", "--memory-swap", "8m"],
                                   ["sh", "-c", "sleep 1; x=a; while :; do x=$x$x; done"])
    try:
        assert docker.k.docker("wait", cid).stdout.strip() == "137"
        assert docker.k.docker("inspect", "-f", "{{.State.OOMKilled}}", cid).stdout.strip() == "true"
        docker.remove(cid)
    except BaseException:
        docker.force_remove(cid)
        raise


def test_docker_volume_tmpfs_init(docker: Docker, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from the host\n")
    p = docker.k.docker("run", "--rm", *docker.flags(), "--init", "-v", f"{tmp_path}:/data:ro", "--tmpfs", "/scratch",
                        d.IMAGE, "sh", "-c", "cat /data/f; touch /data/x 2>&1; touch /scratch/y && echo scratch ok; "
                        "cat /proc/1/cmdline | tr '\\0' ' '", check=False)
    lines = p.stdout.splitlines()
    assert p.returncode == 0, p.stderr
    assert lines[0] == "from the host" and "Read-only file system" in lines[1] and lines[2] == "scratch ok", lines
    assert lines[3].startswith("/sbin/docker-init -- sh -c"), lines


def test_docker_program_that_cannot_be_exec_d(docker: Docker, tmp_path: Path) -> None:
    """A program whose execve fails once the container started (here a script naming a missing interpreter): with
    runc, `start` succeeds and the container exits 1 with "exec PROGRAM: ERROR" on its stderr; rune did fail
    `start` (docker: "OCI runtime start failed", exit 125, the container left in Created)."""
    bad = tmp_path / "bad"
    bad.write_text("#!/nonexistent/interpreter\necho never\n")
    bad.chmod(0o755)
    tmp_path.chmod(0o755)
    p = docker.k.docker("run", "--rm", *docker.flags(), "-v", f"{tmp_path}:/v:ro", d.IMAGE, "/v/bad", check=False)
    assert (p.returncode, p.stdout) == (1, ""), p.stderr
    assert "exec /v/bad: no such file or directory" in p.stderr, p.stderr
    assert "OCI runtime" not in p.stderr
