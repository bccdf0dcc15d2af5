"""inclavare.linux.seccomp against the real kernel: every filter is loaded in a forked child and observed from outside.

The Docker-like profile below is written here from our own lists, in the shape of a container engine's default
profile: defaultAction SCMP_ACT_ERRNO, a large allow-list, companion architectures, and argument filters on
personality and clone.
"""

from __future__ import annotations

import ast
import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import traceback

import pytest

from inclavare.errors import RuneError
from inclavare.linux import seccomp
from inclavare.linux.seccomp import libseccomp, notify

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38
CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# Our own allow-list, by topic. A few names exist only on 32-bit companions (socketcall, _llseek ...), one is unknown
# to libseccomp altogether: compile() must keep the former and skip the latter.
FILES = """access faccessat faccessat2 chdir fchdir chmod fchmod fchmodat chown fchown fchownat lchown close
close_range creat dup dup2 dup3 fcntl fcntl64 flock fstat fstat64 fstatat64 newfstatat fstatfs fstatfs64 statfs
statfs64 stat stat64 lstat lstat64 statx fsync fdatasync sync syncfs sync_file_range ftruncate ftruncate64 truncate
truncate64 getcwd getdents getdents64 link linkat symlink symlinkat readlink readlinkat rename renameat renameat2
unlink unlinkat rmdir mknod mknodat open openat openat2 read readv pread64 preadv preadv2 write writev pwrite64
pwritev pwritev2 lseek _llseek sendfile sendfile64 copy_file_range splice tee vmsplice fallocate fadvise64
fadvise64_64 umask utime utimes utimensat futimesat getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr
listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr inotify_init inotify_init1
inotify_add_watch inotify_rm_watch fanotify_mark memfd_create name_to_handle_at ioctl pipe pipe2 io_setup
io_destroy io_getevents io_submit io_cancel io_uring_setup io_uring_enter io_uring_register""".split()
MEMORY = """brk mmap mmap2 munmap mremap mprotect madvise mlock mlock2 munlock mlockall munlockall mincore msync
membarrier remap_file_pages get_mempolicy set_mempolicy mbind pkey_alloc pkey_free pkey_mprotect""".split()
PROCESS = """arch_prctl prctl execve execveat exit exit_group fork vfork wait4 waitid getpid getppid gettid getpgid
getpgrp getsid setsid setpgid getuid getgid geteuid getegid getuid32 getgid32 geteuid32 getegid32 getresuid
getresgid getresuid32 getresgid32 getgroups getgroups32 setuid setgid setreuid setregid setresuid setresgid
setuid32 setgid32 setfsuid setfsgid setgroups setgroups32 capget capset set_tid_address set_robust_list
get_robust_list rseq kill tkill tgkill getpriority setpriority sched_yield sched_getaffinity sched_setaffinity
sched_getparam sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
sched_get_priority_min sched_rr_get_interval sched_getattr sched_setattr getrlimit setrlimit prlimit64
ugetrlimit getrusage times sysinfo uname olduname ioprio_get ioprio_set pidfd_open pidfd_send_signal
pidfd_getfd process_mrelease futex futex_time64 futex_waitv restart_syscall getrandom get_thread_area
set_thread_area""".split()
SIGNALS = """rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo sigaction sigprocmask sigreturn sigaltstack signalfd
signalfd4 pause alarm""".split()
TIME = """clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep clock_nanosleep_time64
gettimeofday time nanosleep timer_create timer_delete timer_gettime timer_settime timer_getoverrun
timer_gettime64 timer_settime64 timerfd_create timerfd_gettime timerfd_settime timerfd_gettime64
timerfd_settime64 getitimer setitimer""".split()
EVENTS = """select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1
epoll_ctl epoll_wait epoll_pwait epoll_pwait2 eventfd eventfd2""".split()
NET = """socket socketpair socketcall bind connect listen accept accept4 getsockname getpeername sendto sendmsg
sendmmsg recvfrom recvmsg recvmmsg recvmmsg_time64 shutdown setsockopt getsockopt""".split()
IPC = """shmget shmat shmdt shmctl semget semop semtimedop semctl msgget msgsnd msgrcv msgctl mq_open mq_unlink
mq_timedsend mq_timedreceive mq_notify mq_getsetattr ipc""".split()
UNKNOWN = ["inclavare_no_such_syscall"]
ALLOW = FILES + MEMORY + PROCESS + SIGNALS + TIME + EVENTS + NET + IPC + UNKNOWN


def native_arches() -> list[str]:
    machine = os.uname().machine
    if machine == "x86_64":
        return ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    if machine == "aarch64":
        return ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    return []


def docker_like(*, exclude: tuple[str, ...] = (), extra: tuple[dict, ...] = (), **top: object) -> dict:
    """A default-deny profile shaped like an engine's default: allow-list, personality and clone filters."""
    profile: dict = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": native_arches(),
        "syscalls": [
            {"names": [n for n in ALLOW if n not in exclude], "action": "SCMP_ACT_ALLOW"},
            *[{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
              for v in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)],
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            *extra,
        ],
    }
    profile.update(top)
    return profile


def allow_all(*rules: dict, **top: object) -> dict:
    profile: dict = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules)}
    profile.update(top)
    return profile


def nr(name: str) -> int:
    number = libseccomp.resolve_syscall(name)
    assert number >= 0, name
    return number


def sys_call(name: str, *args: int) -> tuple[int, int]:
    """The raw syscall: (return value, errno)."""
    ctypes.set_errno(0)
    rv = libc.syscall(ctypes.c_long(nr(name)), *(ctypes.c_long(a) for a in args))
    return rv, (ctypes.get_errno() if rv == -1 else 0)


def run_child(body, *, timeout: float = 20.0) -> tuple[int, object]:
    """Fork; the child runs body() (which loads a filter) and reports repr(result) through a pipe.

    Returns (wait status, result); result is None when the child died before reporting.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS deaths must not leave core files
            out = "OK" + repr(body())
            code = 0
        except BaseException:
            out = "ERR" + traceback.format_exc()
        try:
            os.write(w, out.encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("child did not finish in time")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    if text.startswith("ERR"):
        pytest.fail("child failed:\n" + text[3:])
    return status, (ast.literal_eval(text[2:]) if text.startswith("OK") else None)


def load_nnp(f: seccomp.Filter) -> int | None:
    """What the container init does: no_new_privs, then load."""
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    return f.load()


# ---------------------------------------------------------------- Docker-like default profile


def test_docker_like_profile_compiles_fast_and_skips_unknown_names():
    profile = docker_like()
    assert len(profile["syscalls"][0]["names"]) > 300
    seccomp.compile(profile).release()  # warm: library loaded, prototypes declared
    t0 = time.perf_counter()
    f = seccomp.compile(profile)
    elapsed = time.perf_counter() - t0
    try:
        assert f.skipped == UNKNOWN  # socketcall, _llseek ... are known to libseccomp for other arches: kept
        assert not f.notify
        assert f.rules > 300
        bpf = f.export_bpf()
        assert bpf and len(bpf) % 8 == 0  # struct sock_filter[]
    finally:
        f.release()
    assert elapsed < 0.25, f"compile took {elapsed * 1000:.1f} ms"


@pytest.mark.parametrize("argv", [["/bin/true"], ["/bin/sh", "-c", "echo hello; ls / >/dev/null; cat /proc/self/status >/dev/null"]])
def test_docker_like_profile_runs_a_real_binary(argv):
    f = seccomp.compile(docker_like())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.dup2(w, 1)
            load_nnp(f)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as out:
        output = out.read()
    _, status = os.waitpid(pid, 0)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    if len(argv) > 1:
        assert output == b"hello\n"


def test_docker_like_profile_errnos_and_argument_filters(tmp_path):
    f = seccomp.compile(docker_like())

    def body():
        load_nnp(f)
        out = {}
        try:
            os.mkdir(tmp_path / "denied")
        except OSError as err:
            out["mkdir"] = err.errno
        out["unshare"] = sys_call("unshare", 0)[1]  # not listed: the default action, EPERM
        out["clone3"] = sys_call("clone3", 0, 0)[1]
        out["personality_query"] = sys_call("personality", 0xFFFFFFFF)
        out["personality_other"] = sys_call("personality", 0x0400000)[1]
        # clone with a namespace flag is denied; plain fork (clone with SIGCHLD) passes the MASKED_EQ filter
        out["clone_newns"] = sys_call("clone", 0x00020000 | signal.SIGCHLD, 0, 0, 0, 0)[1]
        child = os.fork()
        if child == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        return out

    status, out = run_child(body)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out["mkdir"] == errno.EACCES
    assert out["unshare"] == errno.EPERM
    assert out["clone3"] == errno.ENOSYS
    rv, err = out["personality_query"]
    assert err == 0 and rv >= 0
    assert out["personality_other"] == errno.EPERM
    assert out["clone_newns"] == errno.EPERM
    assert out["fork"] == 7
    assert not (tmp_path / "denied").exists()


def test_default_errno_ret(tmp_path):
    # defaultErrnoRet ENOSYS; clone3's own ERRNO(ENOSYS) then equals the default and is skipped, not refused.
    f = seccomp.compile(docker_like(defaultErrnoRet=errno.ENOSYS))

    def body():
        load_nnp(f)
        return [sys_call("unshare", 0)[1], sys_call("clone3", 0, 0)[1], sys_call("getpid")[1]]

    status, out = run_child(body)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == [errno.ENOSYS, errno.ENOSYS, 0]


# ---------------------------------------------------------------- operators


OPS = [  # (syscall, op, arg index, value, valueTwo, [(arg value, matches)])
    ("getuid", "SCMP_CMP_NE", 0, 10, 0, [(10, False), (11, True), (0, True)]),
    ("getgid", "SCMP_CMP_LT", 1, 10, 0, [(9, True), (0, True), (10, False), (11, False)]),
    ("geteuid", "SCMP_CMP_LE", 2, 10, 0, [(10, True), (9, True), (11, False)]),
    ("getegid", "SCMP_CMP_EQ", 3, 10, 0, [(10, True), (11, False), (9, False)]),
    ("getpgrp", "SCMP_CMP_GE", 4, 10, 0, [(10, True), (1 << 40, True), (9, False)]),
    ("sched_yield", "SCMP_CMP_GT", 5, 10, 0, [(11, True), (10, False), (0, False)]),
    ("getppid", "SCMP_CMP_MASKED_EQ", 0, 0xFF00, 0x1200, [(0x12AB, True), (0x1200, True), (0x13AB, False)]),
    ("gettid", "SCMP_CMP_EQ", 5, 0x100000005, 0, [(0x100000005, True), (5, False)]),  # 64-bit compare
]


def test_every_operator():
    rules = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 100 + i,
              "args": [{"index": idx, "value": value, "valueTwo": two, "op": op}]}
             for i, (name, op, idx, value, two, _) in enumerate(OPS)]
    f = seccomp.compile(allow_all(*rules))

    def body():
        load_nnp(f)
        out = []
        for name, _, idx, _, _, cases in OPS:
            for arg, _ in cases:
                args = [0] * 6
                args[idx] = arg
                out.append(sys_call(name, *args)[1])
        return out

    status, out = run_child(body)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    expected = [100 + i if match else 0 for i, (*_, cases) in enumerate(OPS) for _, match in cases]
    assert out == expected


def test_args_are_anded_unless_an_index_repeats():
    f = seccomp.compile(allow_all(
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ERANGE,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
    ))

    def body():
        load_nnp(f)
        return [sys_call("getpid", a, b)[1] for a, b in ((1, 2), (1, 3), (0, 2))] + \
               [sys_call("getppid", a)[1] for a in (1, 2, 3)]

    status, out = run_child(body)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == [errno.EDOM, 0, 0, errno.ERANGE, errno.ERANGE, 0]


# ---------------------------------------------------------------- actions


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"])
def test_kill_actions_kill_with_sigsys(action):
    f = seccomp.compile(allow_all({"names": ["getppid"], "action": action}))

    def body():
        load_nnp(f)
        sys_call("getppid")
        return "survived"

    status, out = run_child(body)
    f.release()
    assert out is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_as_default_action():
    f = seccomp.compile({"defaultAction": "SCMP_ACT_KILL_PROCESS",
                         "syscalls": [{"names": ALLOW, "action": "SCMP_ACT_ALLOW"}]})

    def body():
        load_nnp(f)
        sys_call("unshare", 0)
        return "survived"

    status, out = run_child(body)
    f.release()
    assert out is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trap_delivers_sigsys():
    f = seccomp.compile(allow_all({"names": ["getppid"], "action": "SCMP_ACT_TRAP"}))

    def body():
        caught = []
        signal.signal(signal.SIGSYS, lambda signum, frame: caught.append(signum))
        load_nnp(f)
        sys_call("getppid")
        return caught

    status, out = run_child(body)
    f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == [signal.SIGSYS]


def test_log_allows_under_default_deny():
    f = seccomp.compile(docker_like(exclude=("getppid",),
                                    extra=({"names": ["getppid"], "action": "SCMP_ACT_LOG"},)))
    g = seccomp.compile(docker_like(exclude=("getppid",)))

    def body(flt):
        def run():
            load_nnp(flt)
            return sys_call("getppid")
        return run

    status, out = run_child(body(f))
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == (os.getpid(), 0)
    status, out = run_child(body(g))  # the same profile without the LOG rule denies it
    assert out == (-1, errno.EPERM)
    f.release()
    g.release()


def test_trace_without_tracer_fails_with_enosys():
    f = seccomp.compile(allow_all({"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}))

    def body():
        load_nnp(f)
        return sys_call("getppid")

    status, out = run_child(body)
    f.release()
    assert out == (-1, errno.ENOSYS)  # the kernel's answer when no tracer is attached


def test_flags_are_applied():
    f = seccomp.compile(allow_all({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
                                  flags=seccomp.supported_flags()))

    def body():
        load_nnp(f)
        return sys_call("getppid")

    status, out = run_child(body)
    f.release()
    assert out == (-1, errno.EPERM)


# ---------------------------------------------------------------- NOTIFY and the listener socket


def test_notify_through_listener_socket(tmp_path):
    agent_path = str(tmp_path / "agent.sock")
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(agent_path)
    agent.listen(1)
    profile = allow_all({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                        listenerPath=agent_path, listenerMetadata="MKNOD=/dev/null")
    f = seccomp.compile(profile)
    assert f.notify and f.listener_path == agent_path and f.listener_metadata == "MKNOD=/dev/null"
    runtime_end, init_end = socket.socketpair()

    def init():  # the container init: load, hand the fd to the runtime, then run the workload
        runtime_end.close()
        fd = load_nnp(f)
        assert isinstance(fd, int) and fd >= 0
        socket.send_fds(init_end, [b"fd"], [fd])
        os.close(fd)
        return [sys_call("getppid", 7), sys_call("getppid", 8)]

    pid = os.fork()
    if pid == 0:
        status_code = 1
        try:
            res = init()
            init_end.sendall(repr(res).encode())
            status_code = 0
        finally:
            os._exit(status_code)
    init_end.close()
    try:
        # the runtime: receives the fd from its init and sends it to the agent with the container state
        msg, fds, _, _ = socket.recv_fds(runtime_end, 16, 1)
        assert msg == b"fd" and len(fds) == 1
        state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": pid, "bundle": "/bundle"}
        seccomp.send_listener_fd(f.listener_path, fds[0], state, f.listener_metadata)
        os.close(fds[0])

        # the agent
        conn, _ = agent.accept()
        data, agent_fds, _, _ = socket.recv_fds(conn, 65536, 4)
        conn.close()
        assert len(agent_fds) == 1
        sent = json.loads(data)
        assert sent == {"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": pid,
                        "metadata": "MKNOD=/dev/null", "state": state}
        lfd = agent_fds[0]
        poller = select.poll()
        poller.register(lfd, select.POLLIN)

        assert poller.poll(10000), "no notification arrived"
        n = notify.receive(lfd)
        assert (n.pid, n.nr, n.args[0]) == (pid, nr("getppid"), 7)
        assert notify.id_valid(lfd, n.id)
        notify.respond(lfd, n.id, error=errno.EOWNERDEAD)

        assert poller.poll(10000), "no second notification arrived"
        n = notify.receive(lfd)
        assert n.args[0] == 8
        notify.respond(lfd, n.id, flags=notify.FLAG_CONTINUE)  # let the kernel run it
        os.close(lfd)

        runtime_end.settimeout(10)
        result = ast.literal_eval(runtime_end.recv(4096).decode())
    finally:
        runtime_end.close()
        agent.close()
        _, status = os.waitpid(pid, 0)
        f.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == [(-1, errno.EOWNERDEAD), (os.getpid(), 0)]


def test_send_listener_fd_names_the_path_on_failure(tmp_path):
    missing = str(tmp_path / "nobody-listens.sock")
    with pytest.raises(RuneError) as exc:
        seccomp.send_listener_fd(missing, 0, {"pid": 1})
    assert str(exc.value) == f"linux.seccomp.listenerPath {missing!r}: cannot connect to the seccomp agent: " \
                             "No such file or directory"
    with pytest.raises(RuneError, match="listenerPath.*too long"):
        seccomp.send_listener_fd("/" + "x" * 200, 0, {"pid": 1})


def test_notify_rules_need_a_listener_path():
    with pytest.raises(RuneError, match=r"^linux\.seccomp\.listenerPath: must be set"):
        seccomp.compile(allow_all({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}))


# ---------------------------------------------------------------- load errors and lifecycle


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_load_without_nnp_or_cap_sys_admin_is_a_clear_error():
    f = seccomp.compile(allow_all({"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}))

    def body():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # all capabilities gone, no_new_privs not set
        try:
            f.load()
        except RuneError as err:
            return str(err)
        return "loaded"

    status, out = run_child(body)
    f.release()
    assert "no_new_privs" in out and "CAP_SYS_ADMIN" in out and out.startswith("linux.seccomp:")


def test_release_is_idempotent_and_load_after_release_fails():
    f = seccomp.compile(allow_all())
    f.release()
    f.release()
    with pytest.raises(RuneError, match="released"):
        f.load()
    with seccomp.compile(allow_all()) as g:
        assert g.load is not None
    assert g._ctx is None


# ---------------------------------------------------------------- validation: one sentence naming the field


def _rule(**kw: object) -> dict:
    rule: dict = {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}
    rule.update(kw)
    return rule


BAD = [
    ("not an object", [], "linux.seccomp: must be an object"),
    ("no defaultAction", {"syscalls": []}, "linux.seccomp.defaultAction: is required"),
    ("unknown defaultAction", {"defaultAction": "SCMP_ACT_NOPE"},
     "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_NOPE'"),
    ("NOTIFY as default", {"defaultAction": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    ("defaultErrnoRet on ALLOW", {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno"),
    ("defaultErrnoRet negative", {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1},
     "linux.seccomp.defaultErrnoRet: an errno must be an integer from 0 to 4095, not -1"),
    ("defaultErrnoRet a string", {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"},
     "linux.seccomp.defaultErrnoRet: an errno must be an integer"),
    ("unknown arch", allow_all(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
     "linux.seccomp.architectures[1]: unknown architecture 'SCMP_ARCH_Z80'"),
    ("architectures not a list", allow_all(architectures="SCMP_ARCH_X86_64"),
     "linux.seccomp.architectures: must be an array"),
    ("unknown flag", allow_all(flags=["SECCOMP_FILTER_FLAG_FAST"]),
     "linux.seccomp.flags[0]: unknown flag 'SECCOMP_FILTER_FLAG_FAST'"),
    ("syscalls not a list", allow_all() | {"syscalls": {"names": ["read"]}},
     "linux.seccomp.syscalls: must be an array of syscall rules, not an object"),
    ("syscall not an object", allow_all("read"), "linux.seccomp.syscalls[0]: must be an object"),
    ("names missing", allow_all({"action": "SCMP_ACT_ERRNO"}), "linux.seccomp.syscalls[0].names: must be a non-empty"),
    ("names empty", allow_all({"names": [], "action": "SCMP_ACT_ERRNO"}),
     "linux.seccomp.syscalls[0].names: must be a non-empty array of syscall names, not an empty array"),
    ("name not a string", allow_all(_rule(names=["read", 42])),
     "linux.seccomp.syscalls[0].names[1]: must be a non-empty syscall name, not a number"),
    ("name empty", allow_all(_rule(), _rule(names=[""])),
     "linux.seccomp.syscalls[1].names[0]: must be a non-empty syscall name, not ''"),
    ("unknown action", allow_all(_rule(), _rule(), _rule(), _rule(action="SCMP_ACT_FOO")),
     "linux.seccomp.syscalls[3].action: unknown action 'SCMP_ACT_FOO'"),
    ("action missing", allow_all({"names": ["read"]}), "linux.seccomp.syscalls[0].action: is required"),
    ("errnoRet on KILL", allow_all(_rule(action="SCMP_ACT_KILL", errnoRet=1)),
     "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_KILL takes no errno"),
    ("errnoRet too big", allow_all(_rule(errnoRet=70000)),
     "linux.seccomp.syscalls[0].errnoRet: an errno must be an integer from 0 to 4095, not 70000"),
    ("args not a list", allow_all(_rule(args={"index": 0})), "linux.seccomp.syscalls[0].args: must be an array"),
    ("arg not an object", allow_all(_rule(args=[1])), "linux.seccomp.syscalls[0].args[0]: must be an object"),
    ("bad arg index", allow_all(_rule(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                                             {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[1].index: a syscall argument index must be an integer from 0 to 5, not 6"),
    ("arg index missing", allow_all(_rule(args=[{"value": 1, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[0].index: a syscall argument index must be an integer from 0 to 5, not null"),
    ("arg value too big", allow_all(_rule(args=[{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}])),
     "linux.seccomp.syscalls[0].args[0].value: a 64-bit unsigned value must be an integer"),
    ("arg valueTwo negative", allow_all(_rule(args=[{"index": 0, "value": 1, "valueTwo": -1,
                                                     "op": "SCMP_CMP_MASKED_EQ"}])),
     "linux.seccomp.syscalls[0].args[0].valueTwo: a 64-bit unsigned value must be an integer"),
    ("unknown operator", allow_all(_rule(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}])),
     "linux.seccomp.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_LIKE'"),
    ("operator missing", allow_all(_rule(args=[{"index": 0, "value": 1}])),
     "linux.seccomp.syscalls[0].args[0].op: must be a string such as 'SCMP_CMP_EQ', not null"),
    ("metadata without path", allow_all(listenerMetadata="x"),
     "linux.seccomp.listenerMetadata: is set but listenerPath is not"),
    ("listenerPath not a string", allow_all(listenerPath=3), "linux.seccomp.listenerPath: must be a string"),
]


@pytest.mark.parametrize("profile,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_profiles_name_the_field(profile, message):
    with pytest.raises(RuneError) as exc:
        seccomp.compile(profile)
    text = str(exc.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_unsupported_flag_of_this_libseccomp_is_named():
    if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" in seccomp.supported_flags():
        pytest.skip("this libseccomp supports WAIT_KILLABLE_RECV")
    with pytest.raises(RuneError, match=r"^linux\.seccomp\.flags\[1\]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is "
                                        r"not supported by libseccomp \d+\.\d+\.\d+"):
        seccomp.compile(allow_all(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]))


def test_rule_equal_to_default_is_skipped():
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                         "syscalls": [_rule(names=["getppid", "getpid"])]})
    g = seccomp.compile({"defaultAction": "SCMP_ACT_ERRNO",
                         "syscalls": [_rule(names=["getppid"], errnoRet=2)]})
    assert (f.rules, g.rules) == (0, 1)
    f.release()
    g.release()


def test_missing_libseccomp_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(libseccomp, "_lib", None)
    monkeypatch.setattr(libseccomp, "LIBRARY", "libseccomp-not-here.so.2")
    with pytest.raises(RuneError, match=r"^libseccomp-not-here\.so\.2 not found: install libseccomp2$"):
        seccomp.compile(allow_all())


# ---------------------------------------------------------------- features


def test_supported_lists():
    assert set(seccomp.supported_operators()) == {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                                   "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
    actions = seccomp.supported_actions()
    for action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                   "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"):
        assert action in actions
    archs = seccomp.supported_archs()
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_S390X"} <= set(archs)
    assert {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"} <= set(seccomp.supported_flags())
    for arch in archs:  # every architecture it claims compiles, unless its byte order differs from the native one
        try:
            seccomp.compile(allow_all(architectures=[arch])).release()
        except RuneError as err:
            assert str(err).startswith(f"linux.seccomp.architectures[0]: {arch} has another byte order"), str(err)


# ---------------------------------------------------------------- the hot path stays cheap


def test_import_pulls_in_no_heavy_module():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from inclavare.linux import seccomp; "
            "seccomp.compile({'defaultAction': 'SCMP_ACT_ALLOW'}).release(); "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, SRC], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    heavy = {"re", "json", "enum", "dataclasses", "signal", "subprocess", "typing", "pathlib", "logging", "socket",
             "_socket"}
    assert not heavy & loaded, heavy & loaded
