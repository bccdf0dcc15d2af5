"""Confinement seen from inside and outside real containers: memory and pids limits, seccomp, and `rune update`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import new_id
from tests.runtime.test_exec import running, wait_for, with_tmp

MB = 1 << 20


def cgroup_dir(rune, cid: str, ctrl: str) -> Path:
    paths = json.loads((rune.root / cid / "state.json").read_text())["cgroup_paths"]
    return Path(paths[ctrl] if ctrl in paths else paths["unified"])


def limits(c: dict, **resources: dict) -> None:
    c["linux"].setdefault("resources", {}).update(resources)


def test_memory_limit_kills_an_allocator(rune):
    # busybox tail keeps all of its input when there is no newline: on /dev/zero it allocates without end, and it is
    # the only process that grows (the OOM killer could pick a feeding `head` instead)
    b = rune.bundle(["sh", "-c", "tail /dev/zero > /dev/null; echo tail=$?"],
                    edit=lambda c: limits(c, memory={"limit": 32 * MB, "swap": 32 * MB}))
    p = rune("run", "--bundle", str(b), new_id("m"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "tail=137"  # SIGKILL from the OOM killer


def test_memory_oom_seen_outside_and_as_an_event(rune):
    cid = new_id("m")
    b = rune.bundle(["sh", "-c", "tail /dev/zero > /dev/null; sleep 300"],
                    edit=lambda c: limits(c, memory={"limit": 32 * MB, "swap": 32 * MB}))
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    events = subprocess.Popen([rune.binary, "--root", str(rune.root), "events", "--interval", "10s", cid],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(events.stdout.readline())  # the stream is set up: the OOM cannot be missed
        assert first["type"] == "stats" and first["id"] == cid
        assert rune("start", cid).returncode == 0
        mem = cgroup_dir(rune, cid, "memory")
        assert int((mem / "memory.limit_in_bytes").read_text()) == 32 * MB
        line = events.stdout.readline()
        while json.loads(line)["type"] != "oom":
            line = events.stdout.readline()
        assert json.loads(line) == {"type": "oom", "id": cid}

        def oom_kills() -> int:
            return int(dict(ln.split() for ln in (mem / "memory.oom_control").read_text().splitlines())["oom_kill"])

        wait_for(lambda: oom_kills() >= 1, what="the kill to be counted")  # the event comes before the kill
        stats = json.loads(rune("events", "--stats", cid).stdout)["data"]["memory"]
        assert stats["usage"]["limit"] == 32 * MB and stats["usage"]["max"] > 16 * MB  # it did reach the limit
    finally:
        rune("delete", "--force", cid)
        events.wait(timeout=30)  # the stream ends when the container is gone
        events.stdout.close()


def test_pids_limit_stops_a_fork_loop(rune):
    script = "for i in $(seq 40); do sleep 300 & done 2>/dev/null; echo forked; sleep 300"
    with running(rune, ["sh", "-c", script], edit=lambda c: limits(c, pids={"limit": 10})) as cid:
        pids = cgroup_dir(rune, cid, "pids")
        assert (pids / "pids.max").read_text().strip() == "10"
        wait_for(lambda: int((pids / "pids.events").read_text().split()[1]) > 0, what="a refused fork")
        assert int((pids / "pids.current").read_text()) <= 10
        # from inside: the limit is full, so even an exec'd process cannot start
        p = rune("exec", cid, "true")
        assert p.returncode != 0


def _seccomp_mkdir_eacces(c: dict) -> None:
    with_tmp(c)
    c["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }


def test_seccomp_rule_returns_the_configured_errno(rune):
    b = rune.bundle(["sh", "-c", "mkdir /tmp/d; echo mkdir=$?; touch /tmp/f && echo touch=ok"],
                    edit=_seccomp_mkdir_eacces)
    p = rune("run", "--bundle", str(b), new_id("s"))
    assert p.returncode == 0, p.stderr
    assert "Permission denied" in p.stderr
    assert p.stdout.split() == ["mkdir=1", "touch=ok"]


# A profile shaped like Docker's default (moby profiles/seccomp/default.json): deny by default with EPERM, an allow
# list of names, and argument-filtered rules; written for these tests.
_ALLOWED = """accept accept4 access alarm arch_prctl bind brk capget capset chdir chmod chown clock_getres
clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_pwait epoll_wait eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchown fchownat fcntl fdatasync flock fork fstat fstatfs
fsync ftruncate futex getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid
getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage getsid
getsockname getsockopt gettid gettimeofday getuid getxattr ioctl kill lchown link linkat listen lseek lstat
madvise membarrier mkdir mkdirat mmap mprotect mremap munmap nanosleep newfstatat open openat openat2 pause pipe
pipe2 poll ppoll prctl pread64 preadv prlimit64 pselect6 pwrite64 pwritev read readahead readlink readlinkat readv
recvfrom recvmsg rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait sched_getaffinity sched_yield select sendmsg sendto
set_robust_list set_tid_address setgid setgroups setitimer setpgid setresgid setresuid setsid setsockopt setuid
shutdown sigaltstack socket socketpair stat statfs statx symlink symlinkat sync sysinfo tgkill time timer_create
timer_delete timer_settime times tkill truncate umask uname unlink unlinkat utime utimensat utimes vfork wait4
waitid write writev""".split()


def docker_like_profile() -> dict:
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": _ALLOWED, "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["not_a_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
        ],
    }


def test_docker_like_profile_lets_busybox_run(rune):
    def edit(c: dict) -> None:
        with_tmp(c)
        c["linux"]["seccomp"] = docker_like_profile()

    script = "echo hello; ls / >/dev/null && echo ls=ok; (echo sub) | cat; hostname >/dev/null; echo sethost; " \
             "hostname newname; echo hostname=$?"
    b = rune.bundle(["sh", "-c", script], edit=edit)
    p = rune("run", "--bundle", str(b), new_id("s"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["hello", "ls=ok", "sub", "sethost", "hostname=1"]  # sethostname is not allowed
    assert "Operation not permitted" in p.stderr


def test_update_changes_the_limit_files(rune):
    with running(rune, edit=lambda c: limits(c, memory={"limit": 64 * MB}, pids={"limit": 50})) as cid:
        mem = cgroup_dir(rune, cid, "memory")
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * MB
        p = rune("update", "--memory", "128m", "--memory-swap", "256M", "--pids-limit", "20", "--cpu-quota", "50000",
                 "--cpu-period", "100000", "--cpu-shares", "512", cid)
        assert p.returncode == 0, p.stderr
        assert int((mem / "memory.limit_in_bytes").read_text()) == 128 * MB
        assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == 256 * MB
        assert (cgroup_dir(rune, cid, "pids") / "pids.max").read_text().strip() == "20"
        cpu = cgroup_dir(rune, cid, "cpu")
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.shares").read_text().strip() == "512"
        # seen from inside too: the container's own cgroup mount shows the new limit
        inside = rune("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        if inside.returncode == 0:
            assert int(inside.stdout) == 128 * MB
        # stored in the container's config.json, so a later update or events sees the current values
        res = json.loads((rune.root / cid / "config.json").read_text())["linux"]["resources"]
        assert res["memory"] == {"limit": 128 * MB, "swap": 256 * MB} and res["pids"] == {"limit": 20}
        # -r FILE and -r - (stdin, as containerd's shim passes it)
        rf = rune.tmp / "res.json"
        rf.write_text(json.dumps({"pids": {"limit": 33}}))
        assert rune("update", "-r", str(rf), cid).returncode == 0
        assert (cgroup_dir(rune, cid, "pids") / "pids.max").read_text().strip() == "33"
        p = subprocess.run([rune.binary, "--root", str(rune.root), "update", "--resources", "-", cid],
                           input=json.dumps({"memory": {"limit": 96 * MB}}), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert int((mem / "memory.limit_in_bytes").read_text()) == 96 * MB
        assert rune("update", cid).returncode == 0  # nothing to change, as runc


def test_update_errors(rune):
    p = rune("update", "--memory", "1m", "nosuch")
    assert p.returncode == 1 and "'nosuch' does not exist" in p.stderr
    with running(rune) as cid:
        for args, words in ((("--memory", "abc"), "--memory"), (("--cpu-shares", "x"), "--cpu-shares"),
                            (("--cpu-shares", "-5"), "cpu.shares"), (("--l3-cache-schema", "L3:0=f"), "Intel RDT"),
                            (("--blkio-weight", "5000"), "blockIO.weight"), (("-r", "/nonexistent.json"), "nonexistent")):
            p = rune("update", *args, cid)
            assert p.returncode == 1 and words in p.stderr, (args, p.stderr)
        bad = rune.tmp / "bad.json"
        bad.write_text("[1, 2]")
        p = rune("update", "-r", str(bad), cid)
        assert p.returncode == 1 and "JSON object" in p.stderr
        assert rune("kill", cid, "KILL").returncode == 0
        wait_for(lambda: rune.state(cid)["status"] == "stopped", what="the container to stop")
        p = rune("update", "--memory", "64m", cid)
        assert p.returncode == 1 and "not running" in p.stderr


def test_cgroups_removed_after_the_container(rune):
    cid = new_id("m")
    with running(rune, cid=cid, edit=lambda c: limits(c, memory={"limit": 64 * MB})):
        assert cgroup_dir(rune, cid, "memory").is_dir()
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{cid}")
