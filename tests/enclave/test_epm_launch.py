"""rune with epm: a signed sim enclave's bundle cache comes from a real epm daemon (bin/epm's module, on a private
socket, stopped by its PID), verified before use, saved after a cold start; and every fault - epm down, its socket
stale, served by another user, a record corrupt or for another enclave, a file changed behind a warm record - ends in
a cold start with a debug line or in the launch check's refusal, never in an unchecked enclave, and leaves nothing
behind. 40 concurrent enclave starts with epm each get their own enclave."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.enclave.test_sim_enclave import sim_bundle
from tests.epm.test_daemon import Epm, write_config

from inclavare.enclave import bundle_cache


@pytest.fixture
def epm(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    d = Path(tempfile.mkdtemp(prefix="epm-"))  # short: a socket path has at most 107 bytes
    e = Epm(write_config(d))
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", e.socket)
    yield e
    e.stop()
    shutil.rmtree(d)


def run(rune, b: Path, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    cid = new_id("epm")
    p = rune("--debug", "run", "--bundle", str(b), cid, *extra)
    assert not (rune.root / cid).exists()
    assert cgroup_leftovers(cid) == []
    return p, cid


def records(epm: Epm) -> list[dict]:
    return epm(op="ListCache", type=bundle_cache.TYPE)["caches"]


def no_mounts_of(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return str(path) not in f.read()


def test_cold_start_saves_warm_start_uses_and_no_host_cache(rune, sim_dir, signing_key, tmp_path, epm):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert "epm has no bundle cache for this enclave" in p.stderr
    assert "saved the bundle cache" in p.stderr
    [rec] = records(epm)
    n = len(json.loads((b / "rootfs/.inclavare/enclave/manifest.json").read_text())["enclave"]["trusted_files"])
    assert len(rec["options"]["keys"]) == 32 * n and "0" * 32 not in rec["options"]["keys"][::32]
    assert rec["options"]["manifest_measured"] is True  # the next launch does not measure these bytes again
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert f"is this enclave's: {n} of {n} trusted files recorded" in p.stderr
    assert "saved the bundle cache" not in p.stderr  # nothing new to save
    assert not list(sim_dir.glob("measurements*/*.json")) and not (sim_dir / "measurements.json").exists()  # epm's
    assert no_mounts_of(b / "rootfs")


def test_a_process_the_manifest_refuses_saves_no_record_and_is_not_said_to_pass(rune, sim_dir, signing_key,
                                                                                tmp_path, epm):
    """A review: a bundle whose program is not an entry point of the signed enclave was refused, after a debug line
    saying the launch check passed and a record saved to epm."""
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    c["process"]["args"] = ["/bin/ls"]
    (b / "config.json").write_text(json.dumps(c))
    p, _ = run(rune, b)
    assert p.returncode == 1 and "is not an entry point of the signed enclave" in p.stderr, p.stderr
    assert "sim launch check passed" not in p.stderr and "saved the bundle cache" not in p.stderr, p.stderr
    assert records(epm) == []


def test_changed_file_behind_a_warm_record_is_refused(rune, sim_dir, signing_key, tmp_path, epm):
    """The record names inodes at a change time: content changed with its mtime restored is another ctime."""
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert run(rune, b)[0].returncode == 0
    target = b / "rootfs" / "bin" / "busybox"
    target = target if target.exists() and not target.is_symlink() else next(
        p for p in (b / "rootfs").rglob("*") if p.is_file() and not p.is_symlink() and ".inclavare" not in str(p))
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    p, _ = run(rune, b)
    assert p.returncode == 1
    assert "changed since signing" in p.stderr and "is this enclave's" in p.stderr
    assert no_mounts_of(b / "rootfs")


def test_epm_down_or_off_starts_cold(rune, sim_dir, signing_key, tmp_path, monkeypatch):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", str(tmp_path / "no-epm" / "epm.sock"))
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert "no epm socket at" in p.stderr and "starts cold" in p.stderr
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", "")
    p, _ = run(rune, b)
    assert p.returncode == 0 and "epm is off" in p.stderr
    assert list((sim_dir / "measurements").glob("*.json"))  # without epm, the host's measurement cache as before
    p = rune("run", "--bundle", str(b), new_id("epm"))  # not at the default level
    assert p.returncode == 0 and "epm" not in p.stderr


def test_stale_socket_starts_cold(rune, sim_dir, signing_key, tmp_path, monkeypatch):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: a killed epm's socket
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", str(path))
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert "is stale (nobody listens on it)" in p.stderr


def test_epm_that_never_answers_starts_cold(rune, sim_dir, signing_key, tmp_path, monkeypatch):
    """A socket that takes connections into its backlog and never answers (a hung epm): rune gives up after its
    timeout and starts cold."""
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    path = tmp_path / "hung.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(8)
    try:
        monkeypatch.setenv("INCLAVARE_EPM_SOCKET", str(path))
        p, _ = run(rune, b)
    finally:
        s.close()
    assert p.returncode == 0, p.stderr
    assert "did not answer Healthz within 2 s: the enclave starts cold" in p.stderr


def test_epm_of_another_user_is_not_used(rune, sim_dir, signing_key, tmp_path, epm, monkeypatch):
    """A socket served by uid 65534 that answers every request with a record made for this very enclave (taken
    from the real epm): rune does not use it, whatever it says."""
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert run(rune, b)[0].returncode == 0
    [rec] = records(epm)
    d = Path(tempfile.mkdtemp(prefix="epm-nobody-"))
    try:
        d.chmod(0o777)
        path = d / "epm.sock"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the fake epm, as nobody
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                srv = socket.socket(socket.AF_UNIX)
                srv.bind(str(path))
                os.chmod(path, 0o666)
                srv.listen(8)
                os.write(w, b"x")
                while True:
                    c, _ = srv.accept()
                    f = c.makefile("rwb")
                    for _line in f:
                        f.write(json.dumps({"ok": True, "cache": rec}).encode() + b"\n")
                        f.flush()
                    c.close()
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"x"
        os.close(r)
        try:
            monkeypatch.setenv("INCLAVARE_EPM_SOCKET", str(path))
            p, _ = run(rune, b)
            assert p.returncode == 0, p.stderr
            assert "served by uid 65534, neither root nor rune's user: not used" in p.stderr
            assert "is this enclave's" not in p.stderr
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("damage", ["not an object", "wrong format", "keys cut", "keys not hex", "binding changed",
                                    "another manifest"])
def test_corrupt_record_is_not_used(rune, sim_dir, signing_key, tmp_path, epm, damage):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert run(rune, b)[0].returncode == 0
    [rec] = records(epm)
    opts = rec["options"]
    if damage == "not an object":
        opts = "x"
    elif damage == "wrong format":
        opts["format"] = 1  # a record made before the cache's rules for what may be recorded (not trusted)
    elif damage == "keys cut":
        opts["keys"] = opts["keys"][:-32]
    elif damage == "keys not hex":
        opts["keys"] = "g" * len(opts["keys"])
    elif damage == "another manifest":
        opts["binding"]["manifest"] = "00" * 32  # a record of other manifest bytes, said to have measured right
    else:
        opts["binding"]["mrsigner"] = "00" * 32
    epm(op="SaveCache", cache={"type": rec["type"], "id": rec["id"], "options": opts if isinstance(opts, dict)
                               else {"x": opts}})
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert f"epm's bundle cache {rec['id'][:16]}" in p.stderr and "not used, cold start" in p.stderr
    assert "saved the bundle cache" in p.stderr  # made right again
    p, _ = run(rune, b)
    assert "is this enclave's" in p.stderr


def test_record_of_another_enclave_is_not_used(rune, sim_dir, signing_key, tmp_path, epm):
    """Image A's record filed under image B's id (B's rootfs, its own signature): not B's, so B starts cold, and a
    tampered B is refused although A's record lists the same kind of files."""
    a = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    bb = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert run(rune, a)[0].returncode == 0
    assert run(rune, bb)[0].returncode == 0
    ra, rb = sorted(records(epm), key=lambda r: r["created"])
    epm(op="SaveCache", cache={"type": rb["type"], "id": rb["id"], "options": ra["options"]})
    p, _ = run(rune, bb)
    assert p.returncode == 0, p.stderr
    assert "is for another rootfs, manifest, enclave or signer: not used" in p.stderr
    epm(op="SaveCache", cache={"type": rb["type"], "id": rb["id"], "options": ra["options"]})
    victim = next(p for p in (bb / "rootfs").rglob("*") if p.is_file() and not p.is_symlink()
                  and ".inclavare" not in str(p))
    victim.write_bytes(victim.read_bytes() + b"x")
    p, _ = run(rune, bb)
    assert p.returncode == 1 and "changed since signing" in p.stderr


def test_pal_over_a_signed_image_uses_epm(rune, sim_dir, signing_key, tmp_path, epm, pal_libs):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    c["process"]["env"] += [f"ENCLAVE_RUNTIME_PATH={pal_libs[2]}"]
    (b / "config.json").write_text(json.dumps(c))
    p, _ = run(rune, b)
    assert p.returncode == 0, p.stderr
    assert "saved the bundle cache" in p.stderr
    p, _ = run(rune, b)
    assert p.returncode == 0 and "is this enclave's" in p.stderr


REPORT_SCRIPT = 'printf "$HOSTNAME" | dd of=/dev/attestation/user_report_data 2>/dev/null; cat /dev/attestation/report'


@pytest.mark.parametrize("with_epm", [True, False], ids=["epm up", "epm off"])
def test_40_concurrent_enclave_starts_with_epm(rune, sim_dir, signing_key, tmp_path, epm, monkeypatch, with_epm):
    """40 `rune run` at once of one signed image on a new sim platform, epm up: each container gets its own enclave
    (its own REPORT: its report data, its own key id), all succeed, none is left, and epm ends with one record for
    the image. With epm off, the same, and the host's measurement cache is whole (the launch children, pid 2 each in
    their namespaces, once wrote it and the platform's quote template through one temporary name)."""
    if not with_epm:
        monkeypatch.setenv("INCLAVARE_EPM_SOCKET", "")
    b = sim_bundle(tmp_path, ["sh", "-c", REPORT_SCRIPT], signing_key, rune.binary, readonly=False)
    base = json.loads((b / "config.json").read_text())
    bundles = []
    for i in range(40):
        d = tmp_path / f"b{i}"
        d.mkdir()
        c = json.loads(json.dumps(base))
        c["root"]["path"] = str(b / "rootfs")
        c["process"]["env"].append(f"HOSTNAME=enclave-{i}")
        (d / "config.json").write_text(json.dumps(c))
        bundles.append(d)
    lock = threading.Lock()
    cids: list[str] = []

    def one(i: int) -> tuple[int, bytes, bytes]:
        cid = new_id(f"c{i}")
        with lock:
            cids.append(cid)
        p = rune("run", "--bundle", str(bundles[i]), cid, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=False, timeout=120)
        return p.returncode, p.stdout, p.stderr

    with ThreadPoolExecutor(40) as ex:
        results = list(ex.map(one, range(40)))
    for code, _out, err in results:
        assert code == 0, err
    reports = [out for _c, out, _e in results]
    assert all(len(r) == 432 for r in reports)
    for i, r in enumerate(reports):
        assert r[320:384] == f"enclave-{i}".encode().ljust(64, b"\0")  # REPORT body: report_data at 320
    assert len({r[384:416] for r in reports}) == 40  # KEYID: one per report, made by each enclave
    assert len({r[64:96] for r in reports}) == 1  # one image: one MRENCLAVE
    assert not os.listdir(rune.root) if rune.root.exists() else True
    assert all(cgroup_leftovers(c) == [] for c in cids)
    assert len(records(epm)) == (1 if with_epm else 0)
    if not with_epm:
        assert rune("run", "--bundle", str(bundles[0]), new_id("c"), stdout=subprocess.PIPE, text=False).returncode == 0
        (cache,) = (sim_dir / "measurements").glob("*.json")  # one cache per signed image
        assert json.loads(cache.read_text())["entries"]
        assert not [f for d in (sim_dir, cache.parent) for f in os.listdir(d) if ".tmp" in f]


def test_epm_adds_no_heavy_import_to_the_launch(rune, sim_dir, signing_key, tmp_path, epm, monkeypatch):
    from tests.conftest import imported

    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert run(rune, b)[0].returncode == 0  # the first launch makes the sim platform, with cryptography
    with_epm = imported(rune, "run", "--bundle", str(b), new_id("epm"))
    monkeypatch.setenv("INCLAVARE_EPM_SOCKET", "")
    without = imported(rune, "run", "--bundle", str(b), new_id("epm"))
    assert with_epm - without <= {"inclavare.enclave.bundle_cache"}
    assert not {"json", "socket", "dataclasses", "typing", "cryptography", "hashlib", "_hashlib"} & with_epm
