"""sgx-tools: the stable interfaces (measure --flat, dump --json, sign, sign-bundle, verify-quote) end to end."""

import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from inclavare.cli import sgx_tools
from inclavare.tee.sgx import protobuf as pb
from inclavare.tee.sgx.aesm import AesmClient, AesmError
from inclavare.tee.sgx.einittoken import EInitToken
from inclavare.tee.sgx.report import TargetInfo

ENARX = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = sgx_tools.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_measure_flat_enarx(vectors, capsys):
    rc, out, _ = run(capsys, "measure", "--flat", str(vectors / "enarx-sgx" / "encl.bin"), "--enclave-size", "0x8000",
                     "--ssa-frame-size", "1", "--tcs-pages", "0")
    assert rc == 0 and out.strip() == ENARX


def test_sign_from_existing_reproduces_encl_ss(vectors, tmp_path, capsys):
    out_file = tmp_path / "encl.ss"
    e = vectors / "enarx-sgx"
    rc, out, err = run(capsys, "sign", "--key", str(e / "encl.pem"), "--from", str(e / "encl.ss"), "--flat",
                       str(e / "encl.bin"), "--enclave-size", "0x8000", "--tcs-pages", "0", "--out", str(out_file))
    assert rc == 0, err
    assert out_file.read_bytes() == (e / "encl.ss").read_bytes()


def test_sign_fields_and_dump(tmp_path, signing_key_pem, capsys):
    out_file = tmp_path / "ss.bin"
    rc, _, err = run(capsys, "sign", "--key", str(signing_key_pem), "--enclave-hash", "ab" * 32, "--isv-prod-id", "7",
                     "--isv-svn", "3", "--date", "20240131", "--debug", "--out", str(out_file))
    assert rc == 0, err
    rc, out, _ = run(capsys, "dump", "--json", str(out_file))
    d = json.loads(out)
    assert d["structure"] == "sigstruct" and d["enclave_hash"] == "ab" * 32
    assert d["isv_prod_id"] == 7 and d["isv_svn"] == 3 and d["date"] == 0x20240131
    assert d["attributes"] == "0600000000000000" + "0300000000000000"
    rc, out, _ = run(capsys, "dump", str(out_file))
    assert "SIGSTRUCT" in out and "DEBUG" in out


@pytest.mark.parametrize("name", ["dcap-qvl/sgx_quote", "mobilecoin-attestation/hw_quote.dat"])
def test_dump_json_real_quote(vectors, name, capsys):
    rc, out, _ = run(capsys, "dump", "--json", str(vectors / name))
    d = json.loads(out)
    assert rc == 0 and d["structure"] == "quote" and d["simulated"] is False
    assert d["header"]["vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"
    assert len(d["report_body"]["mr_enclave"]) == 64 and d["report_body"]["mr_enclave"] == d["report_body"]["mr_enclave"].lower()
    assert d["signature_data"]["certification_data"]["cert_key_type"] == 5
    assert "Intel SGX Root CA" in d["signature_data"]["certification_data"]["pck_chain"][-1]["subject"]


def test_dump_recognises_report_and_targetinfo(tmp_path, capsys):
    ti = tmp_path / "ti"
    ti.write_bytes(TargetInfo(mr_enclave=b"\x11" * 32, misc_select=5).to_bytes())
    d = json.loads(run(capsys, "dump", "--json", str(ti))[1])
    assert d["structure"] == "targetinfo" and d["mr_enclave"] == "11" * 32 and d["misc_select"] == 5
    bad = tmp_path / "bad"
    bad.write_bytes(b"123")
    rc, _, err = run(capsys, "dump", str(bad))
    assert rc == 1 and "not an SGX quote v3, TDX quote v4/v5, SIGSTRUCT" in err


def test_verify_quote_real(vectors, capsys, tmp_path):
    q, c = str(vectors / "dcap-qvl" / "sgx_quote"), str(vectors / "dcap-qvl" / "sgx_quote_collateral.json")
    rc, out, err = run(capsys, "verify-quote", "--quote", q)
    assert rc == 1 and "check 'collateral': no collateral for this SGX platform" in err and err.count("\n") == 1
    rc, out, err = run(capsys, "verify-quote", "--quote", q, "--collateral", c, "--now", "2025-06-27T05:33:20Z")
    assert rc == 1 and "mr_enclave 33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb" in out
    assert "verdict REFUSED by policy default" in out and "rule tcb_status" in out
    assert "refused by rule 'tcb_status'" in err
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"tcb_status": ["ConfigurationAndSWHardeningNeeded"], "mr_enclave":
                               ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]}))
    rc, out, err = run(capsys, "verify-quote", "--quote", q, "--collateral", c, "--now", "1751000000", "--policy",
                       str(ref), "--json")
    d = json.loads(out)
    assert rc == 0 and d["verdict"]["allowed"] and d["claims"]["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    rc, out, err = run(capsys, "verify-quote", "--quote", q, "--collateral", c, "--now", "1800000000")
    assert rc == 1 and "check 'dcap'" in err and "CrlExpired" in err
    rc, out, err = run(capsys, "verify-quote", "--quote", str(vectors / "dcap-qvl" / "tdx_quote"), "--collateral",
                       str(vectors / "dcap-qvl" / "tdx_quote_collateral.json"), "--now", "1751000000")
    assert rc == 0 and "tee tdx" in out and "tcb_status UpToDate" in out and "verdict ACCEPTED" in out


def test_sim_pipeline_and_sim_quote_refused_as_hardware(tmp_path, sim_dir, signing_key_pem, capsys, make_bundle):
    b = make_bundle(tmp_path)
    rc, out, err = run(capsys, "sign-bundle", "--key", str(signing_key_pem), str(b))
    assert rc == 0, err
    mr = out.split()[1]
    rc, out, _ = run(capsys, "measure", "--rootfs", str(b / "rootfs"))
    assert out.strip() == mr
    ti, rep, quote = tmp_path / "ti", tmp_path / "rep", tmp_path / "quote"
    assert run(capsys, "gen-qe-target-info", "--sim", "--targetinfo", str(ti))[0] == 0
    assert run(capsys, "gen-report", "--rootfs", str(b / "rootfs"), "--targetinfo", str(ti), "--report", str(rep),
               "--report-data", "cafe")[0] == 0
    assert run(capsys, "gen-quote", "--sim", "--report", str(rep), "--quote", str(quote))[0] == 0
    d = json.loads(run(capsys, "dump", "--json", str(quote))[1])
    assert d["simulated"] is True and d["report_body"]["mr_enclave"] == mr
    assert d["report_body"]["report_data"].startswith("cafe00")
    rc, out, err = run(capsys, "verify-quote", "--quote", str(quote))
    assert rc == 1 and "SIMULATED evidence and no simulated root was named" in err
    rc, out, err = run(capsys, "verify-quote", "--sim", "--quote", str(quote))
    assert rc == 1 and "simulated True" in out and "refused by rule 'simulated'" in err
    allow = tmp_path / "allow-sim.json"
    allow.write_text(json.dumps({"allow_simulated": True, "mr_enclave": [mr]}))
    rc, out, err = run(capsys, "verify-quote", "--sim-root", str(sim_dir / "root_ca.pem"), "--quote", str(quote),
                       "--policy", str(allow))
    assert rc == 0 and "verdict ACCEPTED" in out, err
    (b / "rootfs" / "etc" / "app.conf").write_text("tampered\n")
    rc, _, err = run(capsys, "gen-report", "--rootfs", str(b / "rootfs"), "--targetinfo", str(ti), "--report",
                     str(rep))
    assert rc == 1 and "/etc/app.conf changed since signing" in err and err.count("\n") == 1


def test_gen_key_is_private(tmp_path, capsys):
    k = tmp_path / "k.pem"
    rc, out, _ = run(capsys, "gen-key", str(k))
    assert rc == 0 and out.startswith("mr_signer ")
    assert os.stat(k).st_mode & 0o777 == 0o600


def test_gen_key_refuses_an_existing_file_and_an_unwritable_place(tmp_path, capsys):
    k = tmp_path / "k.pem"
    k.write_text("a key already")
    rc, out, err = run(capsys, "gen-key", str(k))
    assert (rc, out) == (1, "")
    assert err == f"sgx-tools: {k} exists already: gen-key never overwrites a key; remove it or name another file\n"
    assert k.read_text() == "a key already"
    rc, out, err = run(capsys, "gen-key", str(tmp_path / "no" / "k.pem"))
    assert (rc, out) == (1, "")
    assert err == f"sgx-tools: the key file {tmp_path / 'no' / 'k.pem'} cannot be created: No such file or directory\n"
    assert sorted(os.listdir(tmp_path)) == ["k.pem"]


# --- aesmd ---------------------------------------------------------------------------------------------------------

class FakeAesmd:
    """A fake aesmd (NOT Intel's): answers the length-prefixed protobuf protocol on a Unix socket from a table."""

    def __init__(self, path: Path, answers: dict[int, list]) -> None:
        self.path = str(path)
        self.answers = answers
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                (n,) = struct.unpack("<I", conn.recv(4, socket.MSG_WAITALL))
                req = pb.decode(conn.recv(n, socket.MSG_WAITALL))
                kind = next(iter(req))
                self.requests.append({kind: pb.decode(req[kind][0])})
                resp = pb.encode([(kind, self.answers.get(kind, [(1, 23)]))])
                conn.sendall(struct.pack("<I", len(resp)) + resp)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_aesmd(tmp_path):
    servers = []

    def start(answers):
        s = FakeAesmd(tmp_path / "aesm.socket", answers)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def test_protobuf_round_trip():
    msg = pb.encode([(1, b"abc"), (3, True), (4, 300), (15, [(1, b"x"), (9, 5000)])])
    d = pb.decode(msg)
    assert d[1] == [b"abc"] and d[3] == [1] and d[4] == [300]
    assert pb.decode(d[15][0]) == {1: [b"x"], 9: [5000]}
    assert pb.varint(300) == b"\xac\x02"
    with pytest.raises(pb.ProtobufError):
        pb.decode(b"\x0a\x05ab")


def test_ecdsa_quote_flow_against_fake_aesmd(fake_aesmd, tmp_path, capsys):
    ti = TargetInfo(mr_enclave=b"\x42" * 32).to_bytes()
    srv = fake_aesmd({19: [(1, 0), (2, b"KEYID")], 15: [(1, 0), (2, ti)], 16: [(1, 0), (2, 4600)],
                      17: [(1, 0), (2, b"QUOTE-BYTES")]})
    out_ti = tmp_path / "ti"
    rc, _, err = run(capsys, "gen-qe-target-info", "--aesmd-socket", srv.path, "--targetinfo", str(out_ti))
    assert rc == 0, err
    assert out_ti.read_bytes() == ti
    rep = tmp_path / "rep"
    rep.write_bytes(bytes(432))
    q = tmp_path / "q"
    assert run(capsys, "gen-quote", "--aesmd-socket", srv.path, "--report", str(rep), "--quote", str(q))[0] == 0
    assert q.read_bytes() == b"QUOTE-BYTES"
    get_quote_ex = [r[17] for r in srv.requests if 17 in r][0]
    assert get_quote_ex[1] == [bytes(432)] and get_quote_ex[2] == [b"KEYID"] and get_quote_ex[4] == [4600]
    assert [r[15] for r in srv.requests if 15 in r][0][1] == [b"KEYID"]


def test_launch_token_against_fake_aesmd(fake_aesmd, tmp_path, vectors, capsys, monkeypatch):
    token = EInitToken(valid=1, mr_enclave=b"\x01" * 32).to_bytes()
    srv = fake_aesmd({3: [(1, 0), (2, token)]})
    monkeypatch.setattr(sgx_tools, "_has_flc", lambda: False)
    out = tmp_path / "token"
    rc, _, err = run(capsys, "gen-token", "--aesmd-socket", srv.path, "--signature",
                     str(vectors / "enarx-sgx" / "encl.ss"), "--token", str(out))
    assert rc == 0, err
    assert out.read_bytes() == token
    req = srv.requests[0][3]
    assert req[1] == [bytes.fromhex(ENARX)] and len(req[2][0]) == 384 and len(req[3][0]) == 16
    monkeypatch.setattr(sgx_tools, "_has_flc", lambda: True)
    rc, _, err = run(capsys, "gen-token", "--aesmd-socket", srv.path, "--signature",
                     str(vectors / "enarx-sgx" / "encl.ss"), "--token", str(out))
    assert rc == 1 and "Flexible Launch Control" in err


def test_epid_target_info_and_errors_from_fake_aesmd(fake_aesmd, tmp_path):
    srv = fake_aesmd({1: [(1, 0), (2, bytes(512)), (3, b"\x00\x00\x0b\x00")], 2: [(1, 28)]})
    c = AesmClient(srv.path, timeout=2)
    assert c.init_quote() == (bytes(512), b"\x00\x00\x0b\x00")
    with pytest.raises(AesmError, match="error 28"):
        c.get_quote(bytes(432), 0, bytes(16))
    with pytest.raises(AesmError, match="not reachable"):
        AesmClient(tmp_path / "nope.socket").init_quote()
