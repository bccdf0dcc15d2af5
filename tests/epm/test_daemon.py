"""epm, a real daemon (bin/epm) on a private socket: the cache operations, its bounds, bad configuration, stale and
live sockets, corrupt cache files. Each daemon is stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from inclavare.epm.protocol import EpmError, call

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def write_config(d: Path, **kw: object) -> Path:
    conf = {"socket": str(d / "run" / "epm.sock"), "cache_dir": str(d / "cache"), **kw}
    p = d / "epm.json"
    p.write_text(json.dumps(conf))
    return p


class Epm:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.socket = json.loads(config.read_text())["socket"]
        self.proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", str(config)],
                                     env=_env(), stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "serving" in line, line + self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc.stderr.close()

    def __call__(self, **req: object) -> dict:
        return call(self.socket, req)


def run_epm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.epm", *args], env=_env(), capture_output=True,
                          text=True, timeout=30)


@pytest.fixture
def epm(tmp_path: Path):  # noqa: ANN201
    e = Epm(write_config(tmp_path))
    yield e
    e.stop()


def test_operations(epm: Epm) -> None:
    assert epm(op="Healthz")["ok"]
    c = {"type": "sim-launch", "id": "a" * 64, "subtype": "v1", "options": {"mr_signer": "00" * 32}}
    saved = epm(op="SaveCache", cache=c)
    assert saved["ok"] and saved["cache"]["size"] > 0 and saved["cache"]["created"] > 0
    got = epm(op="GetCache", type="sim-launch", id="a" * 64)["cache"]
    assert got["options"] == c["options"] and got["subtype"] == "v1"
    assert epm(op="GetCache", type="sim-launch", id="b" * 64) == {"ok": True, "cache": None}
    epm(op="SaveCache", cache={**c, "id": "b" * 64})
    epm(op="SaveCache", cache={**c, "type": "other", "id": "x"})
    assert [x["id"] for x in epm(op="ListCache", type="sim-launch")["caches"]] == ["a" * 64, "b" * 64]
    assert len(epm(op="ListCache")["caches"]) == 3
    assert epm(op="DeleteCache", type="sim-launch", id="a" * 64) == {"ok": True, "deleted": True}
    assert epm(op="DeleteCache", type="sim-launch", id="a" * 64) == {"ok": True, "deleted": False}
    picked = epm(op="PickCache", type="sim-launch")["cache"]
    assert picked["id"] == "b" * 64
    assert epm(op="PickCache", type="sim-launch")["cache"] is None  # single use
    assert not (Path(epm.socket).parents[1] / "cache" / "sim-launch" / ("b" * 64 + ".json")).exists()


def test_persisted_and_corrupt_files_dropped(tmp_path: Path) -> None:
    conf = write_config(tmp_path)
    e = Epm(conf)
    try:
        for i in range(3):
            e(op="SaveCache", cache={"type": "t", "id": f"id{i}", "options": {"n": i}})
    finally:
        e.stop()
    cache = tmp_path / "cache" / "t"
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == "0o700"
    (cache / "id0.json").write_text("{not json")
    (cache / "id2.json").rename(cache / "id9.json")  # a record filed under another id
    e = Epm(conf)
    try:
        assert [c["id"] for c in e(op="ListCache")["caches"]] == ["id1"]
        assert e(op="GetCache", type="t", id="id9")["cache"] is None
    finally:
        e.stop()
    assert sorted(p.name for p in cache.iterdir()) == ["id1.json"]


def test_bounds(tmp_path: Path) -> None:
    e = Epm(write_config(tmp_path, max_entries=2, max_entry_bytes=1024))
    try:
        for i in range(4):
            assert e(op="SaveCache", cache={"type": "t", "id": f"id{i}"})["ok"]
        assert [c["id"] for c in e(op="ListCache")["caches"]] == ["id2", "id3"]
        big = e(op="SaveCache", cache={"type": "t", "id": "big", "options": {"x": "y" * 2000}})
        assert not big["ok"] and "max_entry_bytes" in big["error"]
    finally:
        e.stop()


@pytest.mark.parametrize("req,word", [
    ({"op": "Nope"}, "'op'"),
    ({"op": "GetCache", "type": "../etc", "id": "x"}, "'type'"),
    ({"op": "SaveCache", "cache": {"type": "t", "id": "../../x"}}, "'cache.id'"),
    ({"op": "SaveCache", "cache": {"type": "t", "id": "x", "savePath": "/etc"}}, "'cache.savePath'"),
    ({"op": "SaveCache", "cache": {"type": "t", "id": "x", "options": []}}, "'cache.options'"),
])
def test_bad_requests(epm: Epm, req: dict, word: str) -> None:
    r = call(epm.socket, req)
    assert not r["ok"] and word in r["error"]
    assert epm(op="ListCache")["caches"] == []


def test_not_json_request(epm: Epm) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(epm.socket)
        s.sendall(b"hello\n")
        assert json.loads(s.makefile().readline()) == {"ok": False, "error": "the request is not JSON"}


def test_stale_socket_replaced_live_refused(tmp_path: Path) -> None:
    conf = write_config(tmp_path)
    sock = tmp_path / "run" / "epm.sock"
    sock.parent.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # bound, never listening, then closed: what a killed epm leaves
    s.close()
    with pytest.raises(EpmError, match="cannot be reached"):
        call(str(sock), {"op": "Healthz"})
    e = Epm(conf)
    try:
        assert e(op="Healthz")["ok"]
        r = run_epm("--config", str(conf))
        assert r.returncode == 1 and "something is listening on" in r.stderr
        assert e(op="Healthz")["ok"]
    finally:
        e.stop()
    assert not sock.exists()


def test_down() -> None:
    with pytest.raises(EpmError, match="cannot be reached"):
        call("/nonexistent-epm-dir/epm.sock", {"op": "Healthz"})


@pytest.mark.parametrize("text,name,word", [
    ("{", "c.json", "not valid JSON"),
    ("socket = ", "c.toml", "not valid TOML"),
    ('{"pool": 3}', "c.json", "'pool'"),
    ('{"max_entries": 0}', "c.json", "'max_entries'"),
    ('{"max_bytes": true}', "c.json", "'max_bytes'"),
    ('{"socket": ""}', "c.json", "'socket'"),
    ('{"io_timeout": -1}', "c.json", "'io_timeout'"),
    ('{"io_timeout": 0}', "c.json", "'io_timeout' in the epm configuration"),
    ('{"socket": 5}', "c.json", "'socket' in the epm configuration"),
    ('{"socket": "/' + "s" * 120 + '"}', "c.json", "'socket'"),
])
def test_bad_config(tmp_path: Path, text: str, name: str, word: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    for args in (["--config", str(p)], ["--check", "--config", str(p)]):
        r = run_epm(*args)
        assert r.returncode == 1 and word in r.stderr and str(p) in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1
    if "io_timeout\": 0" in text:
        assert "must be a number of seconds above 0 and at most 600" in r.stderr, r.stderr
    if "socket\": 5" in text:
        assert "must be a string (a path), not int" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == [name]


def test_toml_config(tmp_path: Path) -> None:
    p = tmp_path / "epm.toml"
    p.write_text('socket = "run/epm.sock"\ncache_dir = "cache"\nmax_bytes = 4096\n')
    r = run_epm("--check", "--config", str(p))
    assert r.returncode == 0, r.stderr
    from inclavare.epm import config

    c = config.load(p)
    assert c.socket == tmp_path / "run/epm.sock" and c.max_bytes == 4096
    e = Epm.__new__(Epm)
    e.config, e.socket = p, str(c.socket)
    e.proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", str(p)], env=_env(),
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in e.proc.stderr.readline()
        assert e(op="Healthz")["ok"]
    finally:
        e.stop()



@pytest.mark.parametrize("case", ["foreign files", "symlink", "a file in the way of the socket"])
def test_a_directory_that_is_not_epms_is_refused_and_left_as_it_was(tmp_path: Path, case: str) -> None:
    """A review: cache_dir naming a directory of other files (a typo, /etc) lost its *.json files one level down
    (epm drops what it cannot read as records) and became 0700, through a symlink too. epm takes only a new or empty
    directory, one it marked, or an older epm's (0700, its own); --check says the same."""
    shared = tmp_path / "shared"
    (shared / "app").mkdir(parents=True)
    (shared / "app" / "settings.json").write_text('{"theme": "dark"}')
    shared.chmod(0o755)
    kw: dict = {"cache_dir": str(shared)}
    want = "holds files that epm did not put there"
    if case == "symlink":
        (tmp_path / "link").symlink_to(shared)
        kw, want = {"cache_dir": str(tmp_path / "link")}, "is a symlink; name the directory itself"
    elif case == "a file in the way of the socket":
        (tmp_path / "afile").write_text("")
        kw, want = {"socket": str(tmp_path / "afile" / "epm.sock")}, "a file that is not a directory is in the way"
    cfg = write_config(tmp_path, **kw)
    for args in (["--check", "--config", str(cfg)], ["--config", str(cfg)]):
        r = run_epm(*args)
        assert r.returncode == 1 and want in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (shared / "app" / "settings.json").read_text() == '{"theme": "dark"}'
    assert shared.stat().st_mode & 0o777 == 0o755 and not (shared / ".epm-cache").exists()


def test_an_older_epms_cache_directory_is_taken_over(tmp_path: Path) -> None:
    """An epm before the marker left a 0700 directory of records: it is epm's (marked now), its records kept."""
    cfg = write_config(tmp_path)
    epm = Epm(cfg)
    try:
        epm(op="SaveCache", cache={"type": "t", "id": "a", "options": {}})
    finally:
        epm.stop()
    (tmp_path / "cache" / ".epm-cache").unlink()
    assert run_epm("--check", "--config", str(cfg)).returncode == 0
    epm = Epm(cfg)
    try:
        assert [c["id"] for c in epm(op="ListCache", type="t")["caches"]] == ["a"]
        assert (tmp_path / "cache" / ".epm-cache").exists()
    finally:
        epm.stop()


def test_other_users_refused(tmp_path: Path) -> None:
    """SO_PEERCRED: even with the socket opened to everyone, a process of another user gets no answer."""
    assert os.geteuid() == 0
    open_dir = Path(tempfile.mkdtemp(prefix="epm-peer-"))  # pytest's tmp_path is 0700 above: unreachable for nobody
    try:
        open_dir.chmod(0o755)
        epm = Epm(write_config(tmp_path, socket=str(open_dir / "run" / "epm.sock")))
        try:
            os.chmod(epm.socket, 0o666)
            os.chmod(os.path.dirname(epm.socket), 0o755)
            _as_nobody(epm)
        finally:
            epm.stop()
    finally:
        shutil.rmtree(open_dir)


def _as_nobody(epm: Epm) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            call(epm.socket, {"op": "ListCache"})
            msg = b"answered"
        except EpmError as e:
            msg = str(e).encode()
        except BaseException as e:  # noqa: BLE001
            msg = repr(e).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    got = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    # closed without an answer: seen as no JSON, or as a reset or broken pipe when the close beats the request
    assert got.startswith("epm at") and ("not JSON" in got or "cannot be reached" in got), got
    assert epm(op="Healthz")["ok"]


def test_concurrent_clients(epm: Epm) -> None:
    """40 clients at once, each saving, reading back and picking its own record."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[str, str]:
        epm(op="SaveCache", cache={"type": "t", "id": f"c{i}", "subtype": f"s{i}", "options": {"i": i}})
        got = epm(op="GetCache", type="t", id=f"c{i}")["cache"]
        picked = epm(op="PickCache", type="t", subtype=f"s{i}")["cache"]
        return got["options"]["i"], picked["id"]

    with ThreadPoolExecutor(40) as ex:
        results = list(ex.map(one, range(40)))
    assert results == [(i, f"c{i}") for i in range(40)]
    assert epm(op="ListCache")["caches"] == []


def _session(path: str, *reqs: dict) -> list[tuple[dict, list[int]]]:
    out = []
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        buf = b""
        for req in reqs:
            s.sendall(json.dumps(req).encode() + b"\n")
            fds: list[int] = []
            while b"\n" not in buf:
                data, got, _flags, _addr = socket.recv_fds(s, 65536, 4)
                assert data, "epm closed the connection"
                buf += data
                fds += got
            line, _, buf = buf.partition(b"\n")
            out.append((json.loads(line), fds))
    return out


def test_several_requests_on_one_connection(epm: Epm) -> None:
    c = {"type": "t", "id": "one", "options": {}}
    answers = _session(epm.socket, {"op": "SaveCache", "cache": c}, {"op": "GetCache", "type": "t", "id": "one"},
                       {"op": "Nope"}, {"op": "Healthz"})
    assert [a["ok"] for a, _ in answers] == [True, True, False, True]
    assert answers[1][0]["cache"]["id"] == "one" and answers[3][0]["pool"] is None


def test_pool_of_pre_initialised_enclaves(tmp_path: Path) -> None:
    import fcntl

    from inclavare.epm import pool

    lib = tmp_path / "libpal.so"
    lib.write_bytes(b"a PAL library stand-in")
    digest = pool.runtime_id(str(lib))
    e = Epm(write_config(tmp_path, pool_runtimes=[str(lib)], pool_size=2, enclave_size=65536))
    try:
        deadline = time.monotonic() + 20
        while e(op="Healthz")["pool"]["ready"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e(op="Healthz")["pool"] == {"ready": 2, "idle_bytes": 131072, "made": 2}
        got = _session(e.socket, *[{"op": "PickEnclave", "runtime": digest.hex()}] * 3,
                       {"op": "PickEnclave", "runtime": "00" * 32}, {"op": "PickEnclave", "runtime": "x"})
        nonces = set()
        for resp, fds in got[:2]:
            assert resp == {"ok": True, "enclave": {"size": 65536}} and len(fds) == 1
            fd = fds[0]
            assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:epm-enclave")
            assert fcntl.fcntl(fd, pool.F_GET_SEALS) & 0xF == 0xF and os.fstat(fd).st_size == 65536
            head = os.pread(fd, 80, 0)
            assert head[:8] == pool.MAGIC and head[16:48] == digest
            nonces.add(head[48:80])
            with pytest.raises(OSError):
                os.pwrite(fd, b"x", 0)  # sealed
            os.close(fd)
        assert len(nonces) == 2
        assert got[2][0] in ({"ok": True, "enclave": None}, {"ok": True, "enclave": {"size": 65536}})
        for fd in got[2][1]:
            os.close(fd)
        assert got[3] == ({"ok": True, "enclave": None}, [])
        assert not got[4][0]["ok"] and "'runtime' must be" in got[4][0]["error"]
        deadline = time.monotonic() + 20
        while e(op="Healthz")["pool"]["ready"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e(op="Healthz")["pool"]["ready"] == 2  # refilled in the background, never above its size
    finally:
        e.stop()


@pytest.mark.parametrize("socket_at,cache_at,key", [
    ("file/epm.sock", "cache", "'socket'"),        # the socket's directory would be under a regular file
    ("run/epm.sock", "file", "'cache_dir'"),       # cache_dir is a regular file
    ("run/epm.sock", "file/cache", "'cache_dir'"),  # cache_dir would be under one
    ("a/b/epm.sock", "c/d/file/x", "'cache_dir'"),  # after the socket's directories were made
])
def test_unusable_directories_named_and_nothing_left(tmp_path: Path, socket_at: str, cache_at: str,
                                                      key: str) -> None:
    (tmp_path / "file").write_text("")
    if cache_at.startswith("c/d/"):
        (tmp_path / "c/d").mkdir(parents=True)
        (tmp_path / "c/d/file").write_text("")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    conf = write_config(tmp_path, socket=str(tmp_path / socket_at), cache_dir=str(tmp_path / cache_at))
    r = run_epm("--config", str(conf))
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and key in r.stderr and str(conf) in r.stderr, r.stderr
    assert "not a directory is in the way" in r.stderr, r.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == sorted([*before, conf.name])


def test_a_pool_runtime_not_found_is_named_at_start(tmp_path: Path) -> None:
    """A pool_runtimes entry that does not exist (not installed yet, or a typo) is said in the start line; the
    daemon serves (the pool makes enclaves for it once it appears)."""
    missing = tmp_path / "liberpal-typo.so"
    conf = write_config(tmp_path, pool_runtimes=[str(missing)], pool_size=1, enclave_size=65536)
    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.epm", "--config", str(conf)], env=_env(),
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "serving" in line and f"not found yet, no enclaves made for them: {missing}" in line, line
        assert call(str(tmp_path / "run" / "epm.sock"), {"op": "Healthz"})["ok"]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def test_peers_in_another_mount_namespace_refused(epm: Epm) -> None:
    """A container's root (uid 0 too) that reaches the socket gets nothing but a refusal saying why: epm talks only
    to processes in its own mount and user namespaces (rune talks to it before it enters the container's)."""
    code = ("import ctypes, json, sys\n"
            "from inclavare.epm.protocol import EpmError, call\n"
            "assert ctypes.CDLL(None, use_errno=True).unshare(0x20000) == 0  # CLONE_NEWNS\n"
            "try:\n    print(json.dumps(call(sys.argv[1], {'op': 'ListCache'})))\n"
            "except EpmError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code, epm.socket], env=_env(), capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    answer = json.loads(p.stdout)
    assert answer == {"ok": False, "error": answer["error"]}, answer  # no caches, nothing else
    assert answer["error"].startswith("epm serves only processes in its own mount and user namespaces"), answer
    assert epm(op="Healthz")["ok"]  # the same request from epm's namespaces is answered
