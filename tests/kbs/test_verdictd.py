"""verdictd as a service: 50 concurrent clients with some sending garbage, killed and restarted with nothing lost,
secrets encrypted at rest, SIGHUP reload, the admin CLI, the attested-TLS listener with good and bad peers."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time

import pytest
from tests.kbs.conftest import Verdictd, allow_sim

from inclavare.attest import ratls
from inclavare.kbs.client import KbsClient, KbsError, fetch_secrets


def _garbage(kind: str, d: Verdictd) -> str:
    host, _, port = d.kbs.rpartition(":")
    rhost, _, rport = d.ratls_tcp.rpartition(":")
    s = socket.create_connection((host, int(port)) if kind.startswith("http") else (rhost, int(rport)), timeout=20)
    try:
        if kind == "http-random":
            s.sendall(os.urandom(3000))
        elif kind == "http-huge-header":
            s.sendall(b"GET /kbs/v0/auth HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n")
        elif kind == "http-huge-body":
            s.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + b"{" * 1000)
        elif kind == "http-slow":
            s.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\n")  # then nothing: dropped after io_timeout
        elif kind == "tls-random":
            s.sendall(os.urandom(2000))
        elif kind == "tls-plain-hello":
            s.sendall(b"\x16\x03\x01\x00\x05hello")
        s.settimeout(20)
        try:
            data = s.recv(1000)
        except (TimeoutError, ConnectionError):
            data = b""
        return data[:12].decode(errors="replace")
    finally:
        s.close()


def test_50_concurrent_clients_some_sending_garbage(verdictd, sim_enclave):
    allow_sim(verdictd)
    assert verdictd.verdict("set-secret", "app/key/shared", "--value", "shared-secret", "--policy", "sim").returncode == 0
    results: dict[int, object] = {}
    kinds = ["http-random", "http-huge-header", "http-huge-body", "http-slow", "tls-random", "tls-plain-hello"]

    def good(i: int) -> None:
        try:
            if i % 2:
                c = KbsClient(verdictd.kbs, sim_enclave.quote)
                c.attest()
                results[i] = c.resource("app/key/shared")
            else:
                results[i] = fetch_secrets(verdictd.ratls_unix, sim_enclave.quote, ["app/key/shared"],
                                           pin=verdictd.pin)["app/key/shared"]
        except Exception as e:  # noqa: BLE001
            results[i] = e

    def bad(i: int) -> None:
        try:
            results[i] = ("garbage", _garbage(kinds[i % len(kinds)], verdictd))
        except Exception as e:  # noqa: BLE001
            results[i] = ("garbage", repr(e))

    threads = [threading.Thread(target=good if i % 5 else bad, args=(i,)) for i in range(50)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    goods = [results.get(i) for i in range(50) if i % 5]
    assert len(goods) == 40 and all(g == b"shared-secret" for g in goods), goods
    assert time.monotonic() - t0 < 120
    assert verdictd.proc.poll() is None  # still serving
    c = KbsClient(verdictd.kbs, sim_enclave.quote)
    c.attest()
    assert c.resource("app/key/shared") == b"shared-secret"
    # no secret went to a garbage client: every release in the audit is to a good one
    releases = [a for a in verdictd.audit() if a["event"] == "release"]
    assert len(releases) == 41


def test_killed_and_restarted_with_nothing_lost(verdictd, sim_enclave):
    allow_sim(verdictd)
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 500:
            p = verdictd.verdict("set-secret", f"app/key/k{i}", "--value", f"value-{i}" * 50, "--policy", "sim")
            if p.returncode == 0:
                acked.append(f"k{i}")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    verdictd.stop(signal.SIGKILL)  # in the middle of the writes
    stop.set()
    t.join()
    assert len(acked) >= 15
    records = verdictd.base / "state" / "records"
    verdictd.start()
    assert not [f for f in os.listdir(records) if f.startswith(".tmp-")]  # a killed write's leftovers are removed
    listed = verdictd.verdict("list-secrets").stdout.decode()
    for name in acked:
        assert f"app/key/{name}\t" in listed, name
    c = KbsClient(verdictd.kbs, sim_enclave.quote)
    c.attest()
    for name in acked[:: max(1, len(acked) // 5)]:
        i = int(name[1:])
        assert c.resource(f"app/key/{name}") == f"value-{i}".encode() * 50


def test_a_token_survives_a_restart(verdictd, sim_enclave):
    allow_sim(verdictd)
    verdictd.verdict("set-secret", "app/key/t", "--value", "tok", "--policy", "sim")
    c = KbsClient(verdictd.kbs, sim_enclave.quote)
    c.attest()
    verdictd.stop()
    verdictd.start()
    c.host, _, port = verdictd.kbs.rpartition(":")
    c.port = int(port)
    assert c.resource("app/key/t", bearer=True) == b"tok"


def test_secrets_are_encrypted_at_rest_and_tampering_is_refused(verdictd, tmp_path):
    secret = b"a-very-recognisable-secret-value"
    assert verdictd.verdict("set-secret", "app/key/x", "--stdin", input=secret).returncode == 0
    state = verdictd.base / "state"
    for root, _dirs, files in os.walk(state):
        for f in files:
            data = open(os.path.join(root, f), "rb").read()
            assert secret not in data and b"YS12ZXJ5" not in data, f  # neither the value nor its base64
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    verdictd.stop()
    rec = next((state / "records").glob("secret.*"))
    data = bytearray(rec.read_bytes())
    data[-1] ^= 1
    rec.write_bytes(bytes(data))
    import subprocess

    from tests.conftest import REPO

    p = subprocess.run([str(REPO / "bin" / "verdictd"), "--config", str(verdictd.config), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "does not decrypt" in p.stderr and rec.name in p.stderr
    assert p.stderr.count("\n") == 1


def test_sighup_reloads_the_attestation_settings(verdictd, sim_enclave):
    allow_sim(verdictd)
    verdictd.verdict("set-secret", "app/key/h", "--value", "h", "--policy", "sim")
    assert fetch_secrets(verdictd.ratls_unix, sim_enclave.quote, ["app/key/h"]) == {"app/key/h": b"h"}
    verdictd.write_config([])  # no sim root any more
    os.kill(verdictd.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(a["event"] == "reload" for a in verdictd.audit()):
        time.sleep(0.05)
    with pytest.raises(KbsError, match="no simulated root was named"):
        fetch_secrets(verdictd.ratls_unix, sim_enclave.quote, ["app/key/h"])
    verdictd.config.write_text("not toml [")
    p = verdictd.verdict("reload")
    assert p.returncode == 1 and b"running configuration is kept" in p.stderr


def test_admin_cli(verdictd, tmp_path):
    v = verdictd.verdict
    assert v("set-secret", "bad path", "--value", "x").returncode == 1
    p = v("set-secret", "a/b/c", "--value", "x", "--policy", "missing")
    assert p.returncode == 0  # a secret may name a policy set later; until then it is refused
    (tmp_path / "bad.rego").write_text("package policy\nallow := \n")
    p = v("set-policy", "p1", "--rego", str(tmp_path / "bad.rego"))
    assert p.returncode == 1 and b"does not compile" in p.stderr
    (tmp_path / "ref.json").write_text(json.dumps({"mr_enclave": ["zz"]}))
    p = v("set-reference", "p1", str(tmp_path / "ref.json"))
    assert p.returncode == 1 and b"not hex" in p.stderr
    (tmp_path / "ref.json").write_text(json.dumps({"isv_svn": 2}))
    assert v("set-reference", "p1", str(tmp_path / "ref.json")).returncode == 0
    got = json.loads(v("get-policy", "p1").stdout)
    assert got["reference"] == {"isv_svn": 2} and got["rego"] is None
    assert b"p1" in v("list-policies").stdout
    assert v("set-secret", "a/b/d", "--value", "y", "--policy", "p1").returncode == 0
    p = v("delete-policy", "p1")
    assert p.returncode == 1 and b"used by the secret a/b/d" in p.stderr
    assert v("delete-secret", "a/b/d").returncode == 0 and v("delete-policy", "p1").returncode == 0
    p = v("delete-secret", "a/b/d")
    assert p.returncode == 1 and b"there is no secret a/b/d" in p.stderr
    import subprocess

    from tests.conftest import REPO

    p = subprocess.run([str(REPO / "bin" / "verdict"), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "cannot reach verdictd" in p.stderr
    assert oct(os.stat(verdictd.base / "admin.sock").st_mode & 0o777) == "0o600"


def test_attested_tls_listener_with_bad_peers(verdictd, sim_enclave):
    allow_sim(verdictd)
    verdictd.verdict("set-secret", "app/key/r", "--value", "r", "--policy", "sim")
    assert fetch_secrets(verdictd.ratls_tcp, sim_enclave.quote, ["app/key/r"], pin=verdictd.pin) == {"app/key/r": b"r"}
    with pytest.raises(ratls.AttestationError, match="not the pinned"):
        fetch_secrets(verdictd.ratls_tcp, sim_enclave.quote, ["app/key/r"], pin=bytes(32))
    with pytest.raises(KbsError, match="there is no secret"):
        fetch_secrets(verdictd.ratls_tcp, sim_enclave.quote, ["app/key/none"])
    with pytest.raises(KbsError, match="does not bind"):
        fetch_secrets(verdictd.ratls_tcp, lambda rd: sim_enclave.quote(b"other"), ["app/key/r"])
    # garbage after an attested handshake, and an oversized request
    cert, key = ratls.make_certificate(sim_enclave.quote)
    for payload, match in ((b"\xff\xfe\n", b"not JSON"), (b"[1]\n", b"JSON object"), (b"x" * 70000, b"one JSON line"),
                           (b'{"command":"Frob"}\n', b"unknown command"), (b'{"command":"version"}\n', b'"v1"')):
        tls = ratls.connect(verdictd.ratls_tcp, ratls.client_context(cert, key))
        try:
            tls.sendall(payload)
            got = b""
            while not got.endswith(b"\n"):
                chunk = tls.recv(1000)
                if not chunk:
                    break
                got += chunk
        except (ssl.SSLError, OSError):
            got = b"(closed)"
        finally:
            tls.close()
        assert match in got, (payload[:20], got)
    # no client certificate at all
    with pytest.raises((ssl.SSLError, OSError, KbsError)):
        tls = ratls.connect(verdictd.ratls_tcp, ratls.client_context())
        tls.sendall(b'{"command":"version"}\n')
        if not tls.recv(100):
            raise OSError("closed")


def test_bad_configs(tmp_path):
    import subprocess

    from tests.conftest import REPO

    def check(text: str) -> str:
        f = tmp_path / "c.toml"
        f.write_text(text)
        p = subprocess.run([str(REPO / "bin" / "verdictd"), "--config", str(f)], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        return p.stderr

    assert "not valid TOML" in check("x = [")
    assert "unknown key 'frob'" in check("frob = 1")
    assert "max_body must be positive" in check("[limits]\nmax_body = 0\n")
    assert "is not a readable PEM certificate" in check(f'state_dir = "{tmp_path}/s"\naudit_log = "{tmp_path}/log/a"\n'
                                                        '[attestation]\nsim_roots = ["nope.pem"]\n')
    assert not (tmp_path / "s").exists() and not (tmp_path / "log").exists()  # nothing left behind
    p = subprocess.run([str(REPO / "bin" / "verdictd"), "--config", str(tmp_path / "missing.toml")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "cannot read the verdictd config" in p.stderr
