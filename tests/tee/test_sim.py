"""The sim software TEE: platform identity, signed images and launch control, reports, sealing, quotes."""

import json
import os
import stat

import pytest

from inclavare.errors import RuneError
from inclavare.tee import marker
from inclavare.tee.sgx import quote_verify as qv
from inclavare.tee.sgx.quote import INTEL_QE_VENDOR_ID, Quote
from inclavare.tee.sgx.report import KeyRequest, TargetInfo
from inclavare.tee.sgx.sigstruct import Sigstruct
from inclavare.tee.sim import LaunchPolicy, bundle, ereport, image, launch_check, manifest, platform, qe


@pytest.fixture
def signed(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path)
    s = bundle.sign_bundle(b, signing_key_pem)
    return b, s


def test_platform_identity_created_once_private_and_overridable(tmp_path, sim_dir, monkeypatch):
    p = platform.load_platform()
    assert p.directory == sim_dir
    assert stat.S_IMODE(os.stat(sim_dir).st_mode) == 0o700
    for name in platform.FILES:
        assert stat.S_IMODE(os.stat(sim_dir / name).st_mode) == 0o600, name
    assert platform.load_platform().platform_id == p.platform_id
    other = platform.load_platform(tmp_path / "elsewhere")
    assert other.platform_id != p.platform_id and other.secret != p.secret
    assert marker.SIM_CN_MARK in p.root_ca.subject.rfc4514_string()


def test_platform_from_another_host_is_refused(tmp_path, sim_dir, monkeypatch):
    mid = tmp_path / "machine-id"
    mid.write_text("host-a\n")
    monkeypatch.setattr(platform, "MACHINE_ID", str(mid))
    platform.load_platform()
    mid.write_text("host-b\n")
    with pytest.raises(RuneError, match="created on another host"):
        platform.load_platform()


def test_sign_bundle_annotations_and_artefacts(signed):
    b, s = signed
    spec = json.loads((b / "config.json").read_text())
    assert spec["annotations"]["enclave.type"] == "sim"
    assert spec["annotations"]["enclave.sim.mrenclave"] == s.mr_enclave.hex()
    manifest = json.loads((b / "rootfs" / ".inclavare" / "enclave" / "manifest.json").read_text())
    assert manifest["enclave"]["entrypoints"] == [{"path": "/bin/app"}]
    assert sorted(manifest["enclave"]["trusted_files"]) == ["/bin/app", "/etc/app.conf", "/lib/data.bin"]  # no /proc
    assert manifest["enclave"]["symlinks"] == {"/etc/link": "/etc/app.conf"}
    assert len((b / "rootfs" / ".inclavare" / "enclave" / "sigstruct.bin").read_bytes()) == 1808


def test_sign_bundle_keeps_runtime_path_and_env_type(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path, {"enclave.runtime.path": "/usr/lib/liberpal-skeleton-v3.so",
                               "enclave.trusted_files": "/etc"})
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["env"].append("ENCLAVE_TYPE=intelSgx")
    (b / "config.json").write_text(json.dumps(spec))
    s = bundle.sign_bundle(b, signing_key_pem)
    spec = json.loads((b / "config.json").read_text())
    assert spec["annotations"]["enclave.runtime.path"] == "/usr/lib/liberpal-skeleton-v3.so"
    assert "ENCLAVE_TYPE=sim" in spec["process"]["env"]
    assert list(s.config.trusted_files) == ["/bin/app", "/etc/app.conf"]  # the entry point is always trusted


def test_launch_check_accepts_the_signed_image(signed):
    b, s = signed
    e = launch_check(b / "rootfs")
    assert e.mr_enclave == s.mr_enclave and e.mr_signer == s.mr_signer
    assert e.config.entrypoints[0].path == "/bin/app" and not e.identity.attributes.flags & 2


def test_measurement_is_deterministic_and_covers_the_manifest(signed):
    b, s = signed
    cfg = s.config
    assert image.measure_config(cfg)[0] == s.mr_enclave
    swapped = image.EnclaveConfig(entrypoints=(image.Entrypoint("/etc/app.conf"),), trusted_files=cfg.trusted_files)
    assert image.measure_config(swapped)[0] != s.mr_enclave


@pytest.mark.parametrize("path", ["bin/app", "etc/app.conf", "lib/data.bin"])
@pytest.mark.parametrize("where", [0, -1, 4096])
def test_one_changed_byte_in_any_trusted_file_is_refused(signed, path, where):
    b, _ = signed
    f = b / "rootfs" / path
    data = bytearray(f.read_bytes())
    if where >= len(data):
        data += b"\0"
    else:
        data[where] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(RuneError, match=f"the (content|size) of the trusted file /{path} changed since signing"):
        launch_check(b / "rootfs")


def test_changed_config_is_refused(signed):
    b, _ = signed
    mpath = b / "rootfs" / ".inclavare" / "enclave" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    del manifest["enclave"]["trusted_files"]["/lib/data.bin"]
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(RuneError, match="does not match its signature"):
        launch_check(b / "rootfs")


def test_bad_signature_is_refused(signed):
    b, _ = signed
    p = b / "rootfs" / ".inclavare" / "enclave" / "sigstruct.bin"
    raw = bytearray(p.read_bytes())
    raw[960] ^= 1  # enclave_hash: signed, so the signature breaks first
    p.write_bytes(bytes(raw))
    with pytest.raises(RuneError, match="SIGSTRUCT .* is refused: the SIGSTRUCT signature does not verify"):
        launch_check(b / "rootfs")


def test_resigned_by_another_key_is_refused_by_policy(signed, other_key_pem):
    b, s = signed
    pol = LaunchPolicy(allowed_mrsigners=frozenset([s.mr_signer]))
    launch_check(b / "rootfs", policy=pol)
    manifest.sign_rootfs(b / "rootfs", s.config, manifest.key_signer(other_key_pem))
    with pytest.raises(RuneError, match="signer .* is not allowed by"):
        launch_check(b / "rootfs", policy=pol)


def test_policy_file_in_sim_dir(signed, sim_dir):
    b, s = signed
    sim_dir.mkdir(parents=True, exist_ok=True)
    (sim_dir / "launch-policy.json").write_text(json.dumps({"allowed_mrsigners": ["00" * 32]}))
    with pytest.raises(RuneError, match="launch-policy.json"):
        launch_check(b / "rootfs")
    (sim_dir / "launch-policy.json").write_text(json.dumps({"allowed_mrsigners": [s.mr_signer.hex()],
                                                            "allow_debug": False}))
    launch_check(b / "rootfs")
    with pytest.raises(RuneError, match="violate"):
        launch_check(b / "rootfs", debug=True)


def test_attributes_violating_the_mask_are_refused(signed):
    b, _ = signed
    with pytest.raises(RuneError, match="attributes .*DEBUG.* violate the SIGSTRUCT"):
        launch_check(b / "rootfs", debug=True)


def test_debug_enclave_refused_when_policy_forbids(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem, debug=True)
    assert launch_check(b / "rootfs").identity.attributes.flags & 2
    with pytest.raises(RuneError, match="debug enclaves are not allowed"):
        launch_check(b / "rootfs", policy=LaunchPolicy(allow_debug=False))


def test_missing_signed_image(tmp_path, sim_dir, make_bundle):
    b = make_bundle(tmp_path)
    with pytest.raises(RuneError, match="no signed sim enclave .*sign-image"):
        launch_check(b / "rootfs")


def test_symlinks_resolve_inside_the_rootfs(tmp_path):
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside")
    (root / "evil").symlink_to("/etc/passwd")
    (root / "up").symlink_to("../../../../etc/passwd")
    assert image.resolve_in_rootfs(root, "/evil").read_text() == "inside"
    assert image.resolve_in_rootfs(root, "/up").read_text() == "inside"


def test_ereport_mac_and_target(signed, sim_dir):
    b, _ = signed
    e = launch_check(b / "rootfs")
    p = platform.load_platform()
    target = qe.qe_target_info()
    rep = e.ereport(target, b"nonce")
    body = ereport.verify_report(p, rep, target)
    assert body.mr_enclave == e.mr_enclave and body.report_data.startswith(b"nonce")
    with pytest.raises(RuneError, match="MAC does not verify"):
        ereport.verify_report(p, rep, TargetInfo(mr_enclave=bytes(32)))
    tampered = rep.replace(body=rep.body[:320] + b"X" + rep.body[321:])
    with pytest.raises(RuneError, match="MAC does not verify"):
        ereport.verify_report(p, tampered, target)


def test_sealing_keys_follow_mrenclave_and_mrsigner(signed, sim_dir, signing_key_pem):
    b, s = signed
    e1 = launch_check(b / "rootfs")
    (b / "rootfs" / "etc" / "app.conf").write_text("v2\n")
    bundle.sign_bundle(b, signing_key_pem)
    e2 = launch_check(b / "rootfs")
    assert e1.mr_enclave != e2.mr_enclave and e1.mr_signer == e2.mr_signer
    assert e1.seal_key("mrsigner") == e2.seal_key("mrsigner")
    assert e1.seal_key("mrenclave") != e2.seal_key("mrenclave")
    assert e1.seal_key("mrenclave") == e1.seal_key("mrenclave")
    assert len(e1.seal_key()) == 16
    p = platform.load_platform()
    with pytest.raises(RuneError, match="ISVSVN 1 is above"):
        ereport.egetkey(p, e1.identity, KeyRequest(key_name=4, key_policy=1, isv_svn=1))
    with pytest.raises(RuneError, match="PROVISION_KEY"):
        ereport.egetkey(p, e1.identity, KeyRequest(key_name=1))


def test_seal_key_differs_per_platform(signed, tmp_path):
    b, _ = signed
    e = launch_check(b / "rootfs")
    other = launch_check(b / "rootfs", sim_dir=tmp_path / "other-host")
    assert e.seal_key() != other.seal_key()


def test_sim_quote_layout_marker_and_verification(signed, sim_dir, tmp_path):
    b, _ = signed
    e = launch_check(b / "rootfs")
    raw = e.quote(b"user data")
    q = Quote.from_bytes(raw)
    assert q.to_bytes() == raw
    assert q.header.vendor_id == marker.SIM_QE_VENDOR_ID and q.cert_data_type == 5
    assert q.report_body.mr_enclave == e.mr_enclave and q.report_body.report_data.startswith(b"user data")
    p = platform.load_platform()
    v = qe.verify_sim_quote(raw, p.root_ca_pem)
    assert v.simulated
    with pytest.raises(RuneError, match="does not verify.*trusted root"):
        qe.verify_sim_quote(raw, platform.load_platform(tmp_path / "other").root_ca_pem)
    tampered = bytearray(raw)
    tampered[48 + 320] ^= 1
    with pytest.raises(RuneError, match="ISV enclave report signature"):
        qe.verify_sim_quote(bytes(tampered), p.root_ca_pem)


def test_sim_quote_never_accepted_as_hardware(signed, sim_dir):
    b, _ = signed
    raw = launch_check(b / "rootfs").quote(b"x")
    with pytest.raises(qv.QuoteError, match="simulated evidence is never accepted"):
        qv.verify_hardware_quote(raw)
    # even disguised: Intel's vendor id, no user_data marker, re-signed with the sim quoting key
    p = platform.load_platform()
    q = Quote.from_bytes(raw)
    hdr = q.header.replace(vendor_id=INTEL_QE_VENDOR_ID, user_data=bytes(20))
    forged = Quote(hdr, q.report_body, bytes(64), q.attest_pub_key, q.qe_report, q.qe_report_signature,
                   q.qe_auth_data, q.cert_data_type, q.cert_data)
    forged = Quote(hdr, q.report_body, qv.p256_raw_signature(p.quoting_key, forged.signed_bytes()),
                   q.attest_pub_key, q.qe_report, q.qe_report_signature, q.qe_auth_data, q.cert_data_type,
                   q.cert_data)
    with pytest.raises(qv.QuoteError, match="simulated"):
        qv.verify_hardware_quote(forged.to_bytes())
    # and with the sim chain stripped of its marker it still does not reach Intel's root
    with pytest.raises(qv.QuoteError, match="trusted root key"):
        qv.verify_chain(qv.load_chain(forged), qv.INTEL_SGX_ROOT_SPKI_SHA256)


def test_gen_quote_refuses_a_report_not_for_the_qe(signed, sim_dir):
    b, _ = signed
    e = launch_check(b / "rootfs")
    rep = e.ereport(TargetInfo(mr_enclave=bytes(32)), b"x")
    with pytest.raises(RuneError, match="MAC"):
        qe.gen_quote(platform.load_platform(), rep)


def test_sigstruct_in_bundle_parses(signed):
    b, s = signed
    ss = Sigstruct.from_bytes((b / "rootfs" / ".inclavare" / "enclave" / "sigstruct.bin").read_bytes())
    assert ss.enclave_hash == s.mr_enclave


def test_trusted_path_that_does_not_exist_is_refused(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path)
    with pytest.raises(RuneError, match="trusted path '/nope' does not exist"):
        bundle.sign_bundle(b, signing_key_pem, trusted=["/etc", "/nope"])
    with pytest.raises(RuneError, match="trusted path '/proc/none' does not exist"):
        bundle.sign_bundle(b, signing_key_pem, trusted=["/proc/none"])


@pytest.mark.parametrize("text", ["[]", "\"x\"", "3", "null"])
def test_launch_policy_that_is_not_an_object_is_refused(signed, sim_dir, text):
    b, _ = signed
    sim_dir.mkdir(parents=True, exist_ok=True)
    (sim_dir / "launch-policy.json").write_text(text)
    with pytest.raises(RuneError, match=r"^the launch policy .*launch-policy.json must be a JSON object$"):
        launch_check(b / "rootfs")


@pytest.mark.parametrize("name,content", [("quoting.key", "garbage"), ("pck.key", ""), ("root_ca.pem", "x"),
                                          ("platform.json", "{}"), ("platform.json", "[]"),
                                          ("platform.json", '{"platform_id": "a", "cpu_svn": "zz"}')])
def test_corrupt_platform_keys_are_refused_in_one_sentence(sim_dir, name, content):
    platform.load_platform()
    (sim_dir / name).write_text(content)
    with pytest.raises(RuneError, match=r"sim platform keys in .* are unreadable; remove the directory"):
        platform.load_platform()


def test_hard_linked_measured_files_are_refused_at_sign_and_launch(tmp_path, sim_dir, signing_key_pem, make_bundle):
    b = make_bundle(tmp_path)
    os.link(b / "rootfs" / "lib" / "data.bin", tmp_path / "other-name")
    with pytest.raises(RuneError, match="trusted file /lib/data.bin has 2 hard links but only 1 of its names"):
        bundle.sign_bundle(b, signing_key_pem)
    os.unlink(tmp_path / "other-name")
    bundle.sign_bundle(b, signing_key_pem)
    os.link(b / "rootfs" / "bin" / "app", tmp_path / "app2")
    with pytest.raises(RuneError, match="trusted file /bin/app has 2 hard links but only 1 of its names"):
        launch_check(b / "rootfs")
