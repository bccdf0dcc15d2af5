"""verdictd's KBS protocol from a test client written to the published protocol (inclavare.kbs.client.KbsClient,
checked here field by field against ../shared/reference/kbs.md), and its refusals."""

from __future__ import annotations

import base64
import http.client
import json

import pytest
from tests.kbs.conftest import allow_sim

from inclavare.kbs.client import KbsClient, KbsError
from inclavare.kbs.rcar import report_data_for


def raw_call(addr: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, _, port = addr.rpartition(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def test_rcar_session_end_to_end(verdictd, sim_enclave):
    allow_sim(verdictd, mr_enclave=[sim_enclave.mr_enclave.hex()])
    assert verdictd.verdict("set-secret", "default/key/one", "--value", "k1", "--policy", "sim").returncode == 0
    # the challenge, as the protocol says
    st, hdr, body = raw_call(verdictd.kbs, "POST", "/kbs/v0/auth", json.dumps(
        {"version": "0.4.0", "tee": "sgx", "extra-params": {"supported-hash-algorithms": ["sha384"]}}).encode(),
        {"Content-Type": "application/json"})
    ch = json.loads(body)
    assert st == 200 and set(ch) == {"nonce", "extra-params"} and ch["extra-params"] == ""
    assert len(base64.b64decode(ch["nonce"], validate=True)) == 32
    assert hdr["Set-Cookie"].startswith("kbs-session-id=") and "Expires=" in hdr["Set-Cookie"]
    sid = hdr["Set-Cookie"].split(";")[0].split("=")[1]
    assert len(sid) == 32 and int(sid, 16) >= 0  # a UUIDv4 in simple hex
    # the whole session with the client
    for key_type in ("EC", "RSA"):
        c = KbsClient(verdictd.kbs, sim_enclave.quote, key_type=key_type)
        token = c.attest()
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "==")) for p in token.split(".")[:2])
        assert header["alg"] == "ES256" and payload["exp"] > payload["iat"]
        ev = payload["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
        assert ev["runtime_data_claims"]["tee-pubkey"] == c.pubkey and ev["sgx"]["simulated"] is True
        assert c._call("POST", "/kbs/v0/attest", {})["token"] == token  # re-posting /attest: the stored token
        assert c.resource("default/key/one") == b"k1"
        assert c.resource("default/key/one", bearer=True) == b"k1"


def test_rcar_refusals(verdictd, sim_enclave):
    assert verdictd.verdict("set-secret", "default/key/plain", "--value", "x").returncode == 0
    addr = verdictd.kbs
    st, _, body = raw_call(addr, "POST", "/kbs/v0/auth", json.dumps({"version": "0.1.1", "tee": "sgx"}).encode())
    err = json.loads(body)
    assert st == 401 and err["type"].endswith("/ProtocolVersion") and "Version Mismatch" in err["detail"]
    st, _, body = raw_call(addr, "POST", "/kbs/v0/auth", json.dumps({"version": "0.4.0", "tee": "sample"}).encode())
    assert st == 401 and "not supported" in json.loads(body)["detail"]
    st, _, body = raw_call(addr, "POST", "/kbs/v0/attest", b"{}")
    assert st == 401 and "POST /kbs/v0/auth first" in json.loads(body)["detail"]
    st, _, _ = raw_call(addr, "GET", "/kbs/v0/resource/default/key/plain")
    assert st == 401
    st, _, body = raw_call(addr, "GET", "/kbs/v0/resource/default/key/plain", headers={"Authorization": "Bearer x.y.z"})
    assert st == 401 and json.loads(body)["type"].endswith("/TokenInvalid")
    st, _, _ = raw_call(addr, "GET", "/kbs/v0/nothing")
    assert st == 404
    st, _, _ = raw_call(addr, "GET", "/kbs/v0/resource/../../etc")
    assert st == 404
    # simulated evidence, refused by the default policy of the secret, naming the rule
    c = KbsClient(addr, sim_enclave.quote)
    c.attest()
    with pytest.raises(KbsError) as e:
        c.resource("default/key/plain")
    assert e.value.status == 401 and e.value.kind == "PolicyDeny" and "rule 'simulated'" in str(e.value)
    with pytest.raises(KbsError) as e:
        c.resource("default/key/none")
    assert e.value.status == 404
    # a quote whose report_data does not bind the nonce and key
    bad = KbsClient(addr, lambda rd: sim_enclave.quote(b"\x00" * 64))
    with pytest.raises(KbsError, match="report_data") as e:
        bad.attest()
    # a nonce other than the session's
    c2 = KbsClient(addr, sim_enclave.quote)
    c2._call("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sgx", "extra-params": ""})
    att = {"runtime-data": {"nonce": base64.b64encode(bytes(32)).decode(), "tee-pubkey": c2.pubkey},
           "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(
               sim_enclave.quote(report_data_for(base64.b64encode(bytes(32)).decode(), c2.pubkey, ""))).decode()},
               "additional_evidence": ""}}
    with pytest.raises(KbsError, match="nonce"):
        c2._call("POST", "/kbs/v0/attest", att)
    # a quote that does not verify
    c3 = KbsClient(addr, lambda rd: b"\x03\x00\x02\x00" + bytes(600))
    with pytest.raises(KbsError, match="AttestationFailed"):
        c3.attest()
    kinds = {(a["event"], a.get("rule")) for a in verdictd.audit()}
    assert ("refuse", "simulated") in kinds and ("refuse", "report_data") in kinds and ("refuse", "format") in kinds


def test_oversized_and_malformed_http(verdictd):
    addr = verdictd.kbs
    st, _, body = raw_call(addr, "POST", "/kbs/v0/auth", b"x" * 70000)
    assert st == 413
    st, _, body = raw_call(addr, "POST", "/kbs/v0/auth", b"\xff\xfe not json")
    assert st == 401 and "not JSON" in json.loads(body)["detail"]
    st, _, _ = raw_call(addr, "DELETE", "/kbs/v0/auth")
    assert st in (404, 405)
