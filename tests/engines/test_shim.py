"""containerd-shim-rune-v2 through the real containerd 1.6: `ctr run --runtime io.containerd.rune.v2` of plain
containers and of an ordinary busybox image that comes up as a signed sim enclave, never signed by hand.

containerd is the engine suite's shim_containerd (tests/engines/shimd.py): its PATH finds this tree's shim, whose configuration
(rune root, sim platform, signing key, cache) lives under the module's directory. After every case nothing may be
left: no rune state, no mount, no shim process, no shim socket, no cgroup of the case's containers, no console
socket directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from tests.engines import daemons as d
from tests.engines import shimd
from tests.engines.conftest import cgroups_under, run_in_pty

pytestmark = pytest.mark.engines

WAIT_FOR_TERM = "trap 'exit 7' TERM; sleep 1000 & wait"
PID1 = "tr '\\0' ' ' < /proc/1/cmdline; echo"
CREATE_FAILED = "ctr: failed to create shim task: "


def _state(c: shimd.ShimContainerd) -> dict[str, set[str]]:
    root = c.rune_root / c.namespace
    return {
        "rune state": set(os.listdir(root)) if root.is_dir() else set(),
        "mounts": set(d.mounts_under(c.base)),
        "shims": {str(p) for p in c.shim_processes()},  # and their fork servers
        "cgroups": cgroups_under([c.namespace]),
        "console dirs": {p.name for p in Path(tempfile.gettempdir()).glob("rune-shim-pty-*")},
        "tasks": set(c.ctr("task", "ls", "-q").stdout.split()),
    }


@pytest.fixture
def shim(shim_containerd: shimd.ShimContainerd) -> Iterator[shimd.ShimContainerd]:
    """The module's containerd; afterwards nothing of the case may be left."""
    c = shim_containerd
    before = _state(c)
    yield c
    deadline = time.monotonic() + 15
    while True:
        now = _state(c)
        left = {k: sorted(v - before[k]) for k, v in now.items() if v - before[k]}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        for cid in now["tasks"]:
            c.ctr("task", "delete", "--force", cid, check=False)
        for cid in c.ctr("containers", "ls", "-q", check=False).stdout.split():
            c.ctr("containers", "delete", cid, check=False)
    assert not left, f"left behind: {left}"


def run(c: shimd.ShimContainerd, cmd: list[str], *flags: str, config: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return c.ctr("run", "--rm", *c.run_flags(config), *flags, d.IMAGE, shimd.name(), *cmd, check=False,
                 timeout=timeout)


def run_detached(c: shimd.ShimContainerd, cmd: list[str], *flags: str) -> str:
    cid = shimd.name()
    c.ctr("run", "-d", "--null-io", *c.run_flags(), *flags, d.IMAGE, cid, *cmd)
    return cid


def task_status(c: shimd.ShimContainerd, cid: str) -> tuple[int, str] | None:
    for line in c.ctr("task", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return int(parts[1]), parts[2]
    return None


def wait_status(c: shimd.ShimContainerd, cid: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (st := task_status(c, cid)) is None or st[1] != want:
        assert time.monotonic() < deadline, f"{cid}: {st} is not {want}"
        time.sleep(0.05)


def delete_task(c: shimd.ShimContainerd, cid: str) -> int:
    """`ctr task delete` of a stopped task; its exit status (ctr prints it when it is not 0)."""
    p = c.ctr("task", "delete", cid, check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    c.ctr("containers", "delete", cid)
    return int(text.rsplit("exit code", 1)[1].split()[0].strip('"')) if "exit code" in text else 0


def stop_task(c: shimd.ShimContainerd, cid: str) -> int:
    """SIGTERM, wait for the task to stop, delete it: its exit status."""
    c.ctr("task", "kill", "-s", "SIGTERM", cid)
    wait_status(c, cid, "STOPPED")
    return delete_task(c, cid)


def run_to_exit(c: shimd.ShimContainerd, flags: list[str], cmd: list[str]) -> tuple[str, int]:
    """ctr run -d, wait for the task to stop, delete it: (container id, exit status)."""
    cid = shimd.name()
    c.ctr("run", "-d", *flags, *c.run_flags(), d.IMAGE, cid, *cmd)
    try:
        wait_status(c, cid, "STOPPED")
        return cid, delete_task(c, cid)
    except BaseException:
        remove(c, cid)
        raise


def remove(c: shimd.ShimContainerd, cid: str) -> None:
    c.ctr("task", "delete", "--force", cid, check=False)
    c.ctr("containers", "delete", cid, check=False)


def exec_(c: shimd.ShimContainerd, cid: str, cmd: list[str], exec_id: str = "") -> subprocess.CompletedProcess:
    return d.run(["ctr", "-a", c.sock, "-n", c.namespace, "task", "exec", "--exec-id", exec_id or shimd.name("e"),
                  cid, *cmd], check=False)


def bundle(c: shimd.ShimContainerd, cid: str) -> Path:
    return c.base / "state" / "io.containerd.runtime.v2.task" / c.namespace / cid


# ---- plain containers ---------------------------------------------------------------------------------------------

def test_run_output_and_exit_status(shim: shimd.ShimContainerd) -> None:
    p = run(shim, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n"), (p.returncode, p.stdout, p.stderr)
    cid = run_detached(shim, ["sleep", "1000"])
    try:
        shim.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_status(shim, cid, "STOPPED")
        assert delete_task(shim, cid) == 137  # killed by a signal: 128 + 9
    except BaseException:
        remove(shim, cid)
        raise


def test_run_stdin(shim: shimd.ShimContainerd, tmp_path: Path) -> None:
    """The client's stdin reaches the process, and its end (ctr's CloseIO) ends `cat`."""
    out = tmp_path / "out"
    cmd = (f"(sleep 1; echo piped; sleep 1) | ctr -a {shim.sock} -n {shim.namespace} run --rm "
           f"{' '.join(shim.run_flags())} {d.IMAGE} {shimd.name()} sh -c 'cat; echo done'")
    with open(out, "w") as f:
        p = subprocess.run(cmd, shell=True, stdout=f, stderr=subprocess.STDOUT, timeout=60)
    assert (p.returncode, out.read_text()) == (0, "piped\ndone\n")


def test_run_with_tty(shim: shimd.ShimContainerd) -> None:
    """A terminal, sized by ResizePty with the client's window size."""
    p = run_in_pty(["ctr", "-a", shim.sock, "-n", shim.namespace, "run", "--rm", "-t", *shim.run_flags(), d.IMAGE,
                    shimd.name(), "sh", "-c", "sleep 0.5; tty; stty size; exit 4"], size=(37, 91))
    lines = p.stdout.splitlines()
    assert p.returncode == 4 and lines[0].startswith("/dev/pts/") and lines[1] == "37 91", (p.returncode, p.stdout)


def test_detached_exec_ps_pause_metrics_kill(shim: shimd.ShimContainerd) -> None:
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
    try:
        pid, status = task_status(shim, cid) or (0, "")
        assert status == "RUNNING" and pid > 0
        p = exec_(shim, cid, ["sh", "-c", "echo $((6*7)); echo e >&2; exit 5"])
        assert (p.returncode, p.stdout, p.stderr) == (5, "42\n", "e\n"), (p.returncode, p.stdout, p.stderr)
        p = run_in_pty(["ctr", "-a", shim.sock, "-n", shim.namespace, "task", "exec", "-t", "--exec-id",
                        shimd.name("e"), cid, "sh", "-c", "tty; exit 6"])
        assert p.returncode == 6 and p.stdout.startswith("/dev/pts/"), (p.returncode, p.stdout)
        # an exec'd process is listed with its exec id
        long = subprocess.Popen(["ctr", "-a", shim.sock, "-n", shim.namespace, "task", "exec", "--exec-id",
                                 "sleeper", cid, "sleep", "1000"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while "sleeper" not in (ps := shim.ctr("task", "ps", cid).stdout):
                assert time.monotonic() < deadline, ps
                time.sleep(0.1)
            assert str(pid) in ps
            shim.ctr("task", "kill", "--exec-id", "sleeper", "-s", "SIGKILL", cid)
            assert long.wait(timeout=30) == 137
        finally:
            if long.poll() is None:
                long.kill()
                long.wait()
        shim.ctr("task", "pause", cid)
        assert task_status(shim, cid) == (pid, "PAUSED")
        shim.ctr("task", "resume", cid)
        assert task_status(shim, cid) == (pid, "RUNNING")
        metrics = shim.ctr("task", "metrics", cid).stdout
        usage = [ln.split()[1] for ln in metrics.splitlines() if ln.startswith("memory.usage_in_bytes")]
        assert usage and int(usage[0]) > 0, metrics
        assert any(ln.startswith("pids.current") and ln.split()[1] == "2" for ln in metrics.splitlines()), metrics
        p = shim.ctr("task", "checkpoint", cid, check=False)
        assert p.returncode != 0 and "does not checkpoint containers" in p.stderr, p.stderr
        assert stop_task(shim, cid) == 7
    except BaseException:
        remove(shim, cid)
        raise


@contextlib.contextmanager
def watching_events(c: shimd.ShimContainerd, out: Path) -> Iterator[None]:
    """`ctr events` into out while the block runs (and a moment after, for the last events)."""
    with open(out, "w") as f:
        ev = subprocess.Popen(["ctr", "-a", c.sock, "events"], stdout=f, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        yield
        time.sleep(1)
    finally:
        ev.terminate()
        ev.wait()


def test_events(shim: shimd.ShimContainerd, tmp_path: Path) -> None:
    """Every task event reaches containerd's subscribers, decoded (bare type URLs), in order for each process."""
    out = tmp_path / "events"
    with watching_events(shim, out):
        cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
        try:
            exec_(shim, cid, ["true"], exec_id="ev-exec")
            shim.ctr("task", "pause", cid)
            shim.ctr("task", "resume", cid)
            shim.ctr("task", "kill", "-s", "SIGTERM", cid)
            wait_status(shim, cid, "STOPPED")
            delete_task(shim, cid)
        except BaseException:
            remove(shim, cid)
            raise
    events = []
    for line in out.read_text().splitlines():
        parts = line.split(None, 6)  # DATE TIME +0000 UTC NAMESPACE TOPIC JSON
        if len(parts) == 7 and parts[5].startswith("/tasks/") and cid in parts[6]:
            events.append((parts[5], json.loads(parts[6])))
    topics = [t for t, _ in events]
    for want in ("/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/paused",
                 "/tasks/resumed", "/tasks/exit", "/tasks/delete"):
        assert want in topics, (want, topics)
    assert topics.index("/tasks/create") < topics.index("/tasks/start") < topics.index("/tasks/exec-started")
    exits = {e.get("id"): e for t, e in events if t == "/tasks/exit"}
    assert exits["ev-exec"].get("exit_status", 0) == 0 and exits[cid]["exit_status"] == 7, exits
    assert [e for t, e in events if t == "/tasks/delete"][0]["exit_status"] == 7


def test_oom_event(shim: shimd.ShimContainerd, tmp_path: Path) -> None:
    out = tmp_path / "events"
    with watching_events(shim, out):
        hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
        p = run(shim, ["sh", "-c", hog], "--memory-limit", str(32 << 20))
    assert p.returncode == 137 and "survived" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert "/tasks/oom" in out.read_text(), out.read_text()


def test_containerd_restart_reconnects(shim: shimd.ShimContainerd) -> None:
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM])
    try:
        before = task_status(shim, cid)
        shim_pids = shim.shim_pids()
        shim.restart()
        assert task_status(shim, cid) == before, "the task is not found running after the restart"
        assert shim.shim_pids() == shim_pids, "the shim did not survive containerd's restart"
        p = exec_(shim, cid, ["sh", "-c", "echo after-restart"])
        assert (p.returncode, p.stdout) == (0, "after-restart\n"), (p.returncode, p.stdout, p.stderr)
        assert stop_task(shim, cid) == 7
    except BaseException:
        remove(shim, cid)
        raise


def test_shim_killed(shim: shimd.ShimContainerd) -> None:
    """A shim killed with SIGKILL: containerd's cleanup (the delete subcommand) removes the container's state."""
    cid = run_detached(shim, ["sleep", "1000"])
    pid = task_status(shim, cid)[0]  # type: ignore[index]
    socket = Path((bundle(shim, cid) / "address").read_text().removeprefix("unix://"))
    assert socket.is_socket()
    ours = [p for p in shim.shim_pids() if f" -id {cid} " in d._cmdline(p) + " "]
    assert len(ours) == 1, shim.shim_pids()
    os.kill(ours[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while task_status(shim, cid) not in (None,) and task_status(shim, cid)[1] != "STOPPED":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and d._state(pid) != "Z":
        assert time.monotonic() < deadline, "the container's process outlived its killed shim"
        time.sleep(0.1)
    shim.ctr("task", "delete", cid, check=False)
    shim.ctr("containers", "delete", cid)
    assert not socket.exists(), "the dead shim's socket was left"


# ---- enclave containers -----------------------------------------------------------------------------------------

def _mrsigner_of(key: Path) -> str:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    n = serialization.load_pem_private_key(key.read_bytes(), None).public_key().public_numbers().n  # type: ignore
    return hashlib.sha256(n.to_bytes(384, "little")).hexdigest()


def assert_runelet_is_pid1(cmdline: str) -> None:
    assert cmdline.startswith("init-runelet"), f"PID 1 is not rune's init-runelet: {cmdline!r}"


def test_ordinary_image_runs_as_signed_enclave(shim: shimd.ShimContainerd) -> None:
    p = run(shim, ["sh", "-c", f"echo hi; {PID1}; echo self=$$; exit 3"], "--env", "ENCLAVE_TYPE=sim")
    lines = p.stdout.splitlines()
    assert p.returncode == 3 and lines[0] == "hi", (p.returncode, p.stdout, p.stderr)
    assert_runelet_is_pid1(lines[1])
    assert lines[2] != "self=1"
    cid = run_detached(shim, ["sh", "-c", WAIT_FOR_TERM], "--env", "ENCLAVE_TYPE=sim")
    try:
        state = json.loads((shim.rune_root / shim.namespace / cid / "state.json").read_text())
        assert state["enclave"]["type"] == "sim", state.get("enclave")
        ann = json.loads((bundle(shim, cid) / "config.json").read_text())["annotations"]
        assert ann["enclave.sim.mrsigner"] == _mrsigner_of(shim.base / "owner.pem"), ann
        p = exec_(shim, cid, ["sh", "-c", f"echo in-enclave; {PID1}"])
        assert p.returncode == 0 and p.stdout.startswith("in-enclave\n"), (p.returncode, p.stdout, p.stderr)
        assert_runelet_is_pid1(p.stdout.splitlines()[1])
        p = exec_(shim, cid, ["sh", "-c", "echo x > /bin/new"])  # the signed root is read-only
        assert p.returncode != 0
        assert stop_task(shim, cid) == 7
    except BaseException:
        remove(shim, cid)
        raise


def _snapshot_files(shim: shimd.ShimContainerd, path: str) -> list[Path]:
    """path in the committed snapshots of the image (one per containerd namespace that imported it)."""
    found = sorted(shim.base.glob(f"root/io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs{path}"))
    assert found
    return found


def test_conversion_cache_and_a_changed_file(shim: shimd.ShimContainerd) -> None:
    """The second conversion of the same image comes from the cache; a file of the image changed afterwards (in
    containerd's snapshot, size and time kept) still fails rune's launch check, which measures at every create."""
    cmd = ["sh", "-c", "cat /etc/group"]
    first = run(shim, cmd, "--env", "ENCLAVE_TYPE=sim", "--env", "CACHE_CASE=1")
    assert first.returncode == 0, first.stderr
    n = len(list((shim.base / "cache").iterdir()))
    log_before = shim.log.read_text().count("enclave signature from the cache")
    second = run(shim, cmd, "--env", "ENCLAVE_TYPE=sim", "--env", "CACHE_CASE=1")
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    assert len(list((shim.base / "cache").iterdir())) == n
    assert shim.log.read_text().count("enclave signature from the cache") == log_before + 1
    saved = [(f, f.read_bytes(), f.stat()) for f in _snapshot_files(shim, "/etc/group")]
    try:
        for f, original, st in saved:
            f.write_bytes(original.replace(b"root", b"toor"))
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        p = run(shim, cmd, "--env", "ENCLAVE_TYPE=sim", "--env", "CACHE_CASE=1")
    finally:
        for f, original, st in saved:
            f.write_bytes(original)
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith(CREATE_FAILED) and "the content of the trusted file /etc/group changed since signing" in p.stderr, (
        p.stderr)
    assert p.stderr.count("does not match its signature") == 1


# ---- the signing server -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_server(shim_containerd: shimd.ShimContainerd) -> Iterator[tuple[str, Path]]:
    base = shim_containerd.base
    key = shimd.owner_key(base / "server-owner.pem")
    log = open(base / "signing-server.log", "w+")  # noqa: SIM115
    p = subprocess.Popen([str(shimd.BIN / "rune-signing-server"), "--private-key", str(key), "--listen",
                          "127.0.0.1:0"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        d.wait_for(lambda: "serving on" in (base / "signing-server.log").read_text() or p.poll() is not None, 30,
                   "rune-signing-server", base / "signing-server.log")
        url = (base / "signing-server.log").read_text().split("serving on ")[1].split()[0]
        yield url, key
    finally:
        d.stop_pid(p.pid)
        log.close()


def test_signing_server_api_and_shim(shim: shimd.ShimContainerd, signing_server: tuple[str, Path],
                                     tmp_path: Path) -> None:
    import urllib.request

    url, key = signing_server
    assert urllib.request.urlopen(url + "/ping").read() == b"ping"
    assert urllib.request.urlopen(url + "/healthz").read() == b"ok"
    pem = json.loads(urllib.request.urlopen(url + "/api/v1/signature/public-key").read())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    config = shimd.write_config(tmp_path / "server.toml", shim.base, signature={"server_address": url})
    cid = shimd.name()
    shim.ctr("run", "-d", "--null-io", *shim.run_flags(config), "--env", "ENCLAVE_TYPE=sim", d.IMAGE, cid,
             "sleep", "1000")
    try:
        ann = json.loads((bundle(shim, cid) / "config.json").read_text())["annotations"]
        assert ann["enclave.sim.mrsigner"] == _mrsigner_of(key), "not signed with the signing server's key"
    finally:
        remove(shim, cid)
    assert "signed 256 bytes" in (shim.base / "signing-server.log").read_text()


# ---- bad input: one sentence, nothing left ----------------------------------------------------------------------

class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(_PEM[0]).encode() if "public" in self.path else b"<html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"signature": "bm90IGEgc2lnbmF0dXJl"}'  # base64, but not a signature
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_a: object) -> None:
        pass


_PEM: list[str] = []


@pytest.fixture(scope="module")
def garbage_server(shim_containerd: shimd.ShimContainerd) -> Iterator[str]:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((shim_containerd.base / "owner.pem").read_bytes(), None)
    _PEM.append(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    srv = HTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


BAD = {
    "unknown type": ({}, {"ENCLAVE_TYPE": "sgx2"}, "unknown enclave type 'sgx2' in ENCLAVE_TYPE / enclave.type"),
    "server down": ({"signature": {"server_address": "http://127.0.0.1:{port}"}}, {},
                    "the signing server http://127.0.0.1:{port} cannot be reached"),
    "server garbage": ({"signature": {"server_address": "{garbage}"}}, {},
                       "the signing server {garbage} answered a signature that is not usable"),
    "key refused by the launch policy": ({"enclave_runtime": {"sim_dir": "{tmp}/sim"}}, {},
                                         "is not allowed by the launch policy {tmp}/sim/launch-policy.json"),
    "no signing key": ({"signature": {"private_key": "{tmp}/missing.pem"}}, {},
                       "the enclave signing key {tmp}/missing.pem ([signature] private_key in"),
    "client signing, unsigned image": ({"enclave_runtime": {"signature_method": "client"}}, {},
                                       'sets signature_method = "client"'),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(shim: shimd.ShimContainerd, garbage_server: str, tmp_path: Path, case: str) -> None:
    overrides, env, sentence = BAD[case]
    subst = {"port": str(_closed_port()), "garbage": garbage_server, "tmp": str(tmp_path)}

    def fill(v: object) -> object:
        return v.format(**subst) if isinstance(v, str) else v

    tables = {t: {k: fill(v) for k, v in vals.items()} for t, vals in overrides.items()}
    if case == "key refused by the launch policy":
        (tmp_path / "sim").mkdir()
        (tmp_path / "sim" / "launch-policy.json").write_text(json.dumps({"allowed_mrsigners": ["ab" * 32]}))
    config = shimd.write_config(tmp_path / "bad.toml", shim.base, **tables)
    flags = [x for k, v in {"ENCLAVE_TYPE": "sim", **env}.items() for x in ("--env", f"{k}={v}")]
    p = run(shim, ["true"], *flags, config=config)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    sentence = fill(sentence)
    assert p.stderr.startswith(CREATE_FAILED) and sentence in p.stderr, p.stderr
    assert p.stderr.count(sentence) == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_unmeasurable_rootfs(shim: shimd.ShimContainerd, image: d.Image, tmp_path: Path) -> None:
    """An image whose trusted tree cannot be measured (a FIFO in /etc: neither a file, a directory nor a symlink)."""
    rootfs = tmp_path / "rootfs"
    d.run(["cp", "-a", str(image.rootfs), str(rootfs)])
    os.mkfifo(rootfs / "etc" / "fifo")
    ref = "docker.io/library/rune-fifo:latest"
    lay = tmp_path / "oci"
    d.run(["umoci", "init", "--layout", str(lay)])
    d.run(["umoci", "new", "--image", f"{lay}:h"])
    d.run(["umoci", "insert", "--image", f"{lay}:h", str(rootfs), "/"])
    d.run(["umoci", "config", "--image", f"{lay}:h", "--config.cmd", "/bin/true", "--config.env", "PATH=/bin"])
    d.run(["skopeo", "copy", "-q", f"oci:{lay}:h", f"oci-archive:{tmp_path}/h.tar:{ref}"])
    shim.ctr("images", "import", str(tmp_path / "h.tar"))
    try:
        p = shim.ctr("run", "--rm", *shim.run_flags(), "--env", "ENCLAVE_TYPE=sim", ref, shimd.name(), check=False)
        sentence = "the trusted tree holds /etc/fifo, which is not a regular file, directory or symlink"
        assert p.returncode == 1 and sentence in p.stderr, (p.returncode, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    finally:
        shim.ctr("images", "rm", ref, check=False)


def test_image_signed_with_sign_image_is_launched_as_signed(shim: shimd.ShimContainerd, image: d.Image,
                                                            tmp_path: Path) -> None:
    """An image that carries its signature (`sgx-tools sign-image`) runs as signed: with signature_method =
    "client" the shim signs nothing, and the enclave's signer is the image owner's."""
    key = shimd.owner_key(tmp_path / "image-owner.pem")
    ref = "docker.io/library/rune-signed-by-owner:latest"
    d.run([str(shimd.BIN / "sgx-tools"), "sign-image", "--key", str(key), f"oci-archive:{image.oci_archive}",
           f"oci-archive:{tmp_path}/signed.tar:{ref}"])
    shim.ctr("images", "import", str(tmp_path / "signed.tar"))
    config = shimd.write_config(tmp_path / "client.toml", shim.base,
                                enclave_runtime={"signature_method": "client", "sim_dir": str(shim.base / "sim")})
    cid = shimd.name()
    try:
        shim.ctr("run", "-d", "--null-io", *shim.run_flags(config), ref, cid, "sh", "-c", WAIT_FOR_TERM)
        p = exec_(shim, cid, ["sh", "-c", PID1])
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert_runelet_is_pid1(p.stdout)
        st = json.loads((shim.rune_root / shim.namespace / cid / "state.json").read_text())
        assert st["enclave"]["type"] == "sim"
        manifest = json.loads((bundle(shim, cid) / "rootfs/.inclavare/enclave/manifest.json").read_text())
        assert manifest["mr_signer"] == _mrsigner_of(key)
        assert f"{cid}: the image carries its own enclave signature" in shim.log.read_text()
        assert stop_task(shim, cid) == 7
    except BaseException:
        remove(shim, cid)
        raise
    finally:
        shim.ctr("images", "rm", ref, check=False)


def test_log_uris_file_and_binary(shim: shimd.ShimContainerd, tmp_path: Path) -> None:
    """`ctr run --log-uri`: file:// appends both streams to a file; binary:// starts a logger with the process's
    stdout and stderr as fds 3 and 4, fd 5 to close when ready, and the query's pairs as arguments."""
    log = tmp_path / "c.log"
    assert run_to_exit(shim, ["--log-uri", f"file://{log}"], ["sh", "-c", "echo to-out; echo to-err >&2"])[1] == 0
    assert sorted(log.read_text().splitlines()) == ["to-err", "to-out"]
    logger = tmp_path / "logger.sh"
    logger.write_text('#!/bin/sh\nexec 5>&-\ncat <&3 > "$2.out" &\ncat <&4 > "$2.err" &\n'
                      'echo "$CONTAINER_ID $CONTAINER_NAMESPACE $1" > "$2.env"\nwait\n')
    logger.chmod(0o755)
    out = tmp_path / "bin"
    cid, status = run_to_exit(shim, ["--log-uri", f"binary://{logger}?dest={out}"],
                              ["sh", "-c", "echo b-out; echo b-err >&2"])
    assert status == 0
    d.wait_for(lambda: Path(f"{out}.err").exists() and Path(f"{out}.err").read_text() == "b-err\n", 10, "the logger")
    assert Path(f"{out}.out").read_text() == "b-out\n"
    assert Path(f"{out}.env").read_text() == f"{cid} {shim.namespace} dest\n"


def test_epm_socket_from_the_shim_configuration(shim: shimd.ShimContainerd, tmp_path: Path) -> None:
    """[epm] socket reaches rune: the enclave's launch saves its bundle cache in that epm (a real daemon, stopped by
    its PID). Each `ctr run` mounts a new overlay for its rootfs, so each is a cold start with a record of its own."""
    import shutil

    from tests.epm.test_daemon import Epm
    from tests.epm.test_daemon import write_config as epm_config

    base = Path(tempfile.mkdtemp(prefix="epm-shim-"))  # short: a socket path has at most 107 bytes
    epm = Epm(epm_config(base))
    try:
        config = shimd.write_config(tmp_path / "shim-epm.toml", shim.base, epm={"socket": epm.socket})
        p = run(shim, ["true"], "--env", "ENCLAVE_TYPE=sim", config=config)
        assert p.returncode == 0, p.stderr
        recs = epm(op="ListCache", type="bundle-cache.sim")["caches"]
        assert len(recs) == 1 and recs[0]["options"]["keys"]
    finally:
        epm.stop()
        shutil.rmtree(base)
