"""The sim launch path without `cryptography`: the SIGSTRUCT's RSA-3072 e=3 check as a modular cube, the platform's
files read as they are (load_keys), no quote made at launch; checked against `cryptography`'s answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.errors import RuneError
from inclavare.tee.sgx import sigstruct as ss
from inclavare.tee.sim import bundle, platform, qe

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _signed(signing_key_pem: Path) -> ss.Sigstruct:
    key = ss.load_signing_key(signing_key_pem.read_bytes())
    return ss.sign(ss.Sigstruct(enclave_hash=bytes(range(32)), isv_prod_id=7), key)


def test_modular_cube_agrees_with_cryptography_on_every_signed_byte(signing_key_pem: Path) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    signed = _signed(signing_key_pem)
    n = int.from_bytes(signed.modulus, "little")
    s = int.from_bytes(signed.signature, "little")
    pub = rsa.RSAPublicNumbers(3, n).public_key()
    data = signed.signed_bytes()
    assert ss.rsa3_verify(n, s, data) and ss.verify(signed) == signed.mr_signer
    for i in range(len(data)):  # a flipped bit anywhere in the header or body: both refuse
        bad = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        assert not ss.rsa3_verify(n, s, bad)
        with pytest.raises(InvalidSignature):
            pub.verify(s.to_bytes(384, "big"), bad, padding.PKCS1v15(), hashes.SHA256())
    for bad_s in (s + 1, s - 1, s ^ (1 << 1000), 0, n, n + s):
        assert not ss.rsa3_verify(n, bad_s, data)
    assert not ss.rsa3_verify(n ^ 1 << 5, s, data)  # another modulus
    raw = signed.to_bytes()
    for off in (516, 516 + 200, 900, 960, 1024):  # signature, body, enclave_hash, isv_prod_id
        tampered = ss.Sigstruct.from_bytes(raw[:off] + bytes([raw[off] ^ 0x80]) + raw[off + 1:])
        with pytest.raises(ss.SigstructError, match="does not verify"):
            ss.verify(tampered)


def test_a_signature_with_another_padding_is_refused(signing_key_pem: Path) -> None:
    """PKCS#1 v1.5 exactly: a cube of a value that only ends in the digest (no 00 01 FF.. prefix) is refused."""
    from cryptography.hazmat.primitives import serialization

    signed = _signed(signing_key_pem)
    key = serialization.load_pem_private_key(signing_key_pem.read_bytes(), None)
    d, n = key.private_numbers().d, key.private_numbers().public_numbers.n
    em = ss.pkcs1_sha256(signed.signed_bytes())
    loose = em & ((1 << (8 * 51)) - 1)  # DigestInfo and hash only
    assert not ss.rsa3_verify(n, pow(loose, d, n), signed.signed_bytes())
    assert ss.rsa3_verify(n, pow(em, d, n), signed.signed_bytes())


def test_the_launch_imports_no_cryptography(tmp_path: Path, sim_dir: Path, signing_key_pem: Path,
                                            make_bundle) -> None:  # noqa: ANN001
    b = make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem)
    platform.load_keys(sim_dir)  # the first use creates the identity and its quote template (with cryptography)
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from inclavare.tee.sim.launch import launch_check; "
            "from inclavare.tee.sim import evidence, platform; "
            f"e = launch_check({str(b / 'rootfs')!r}); ev = evidence.make(platform.load_keys(), e.identity); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', '_cffi_backend')))")
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                       env={**os.environ, "INCLAVARE_SIM_DIR": str(sim_dir)})
    assert (p.returncode, p.stdout.strip()) == (0, "[]"), p.stderr


def test_the_quote_template_makes_quotes_the_sim_verifier_accepts(sim_dir: Path) -> None:
    keys = platform.load_keys()
    p = platform.load_platform()
    assert keys.quote_template == (sim_dir / platform.TEMPLATE).read_bytes()
    assert keys.secret == p.secret and keys.cpu_svn == p.cpu_svn
    from cryptography.hazmat.primitives import serialization

    assert serialization.load_der_private_key(keys.quoting_key_der, None).private_numbers() == \
        p.quoting_key.private_numbers()
    assert qe.quote_template(p)[:48] == keys.quote_template[:48]  # the header is fixed; the auth data is not


@pytest.mark.parametrize("damage", ["quoting.key", "platform.secret", "quote.template", "platform.json"])
def test_damaged_platform_files_refuse_the_launch(sim_dir: Path, damage: str) -> None:
    platform.load_keys()
    path = sim_dir / damage
    path.write_bytes(b"{}" if damage == "platform.json" else path.read_bytes()[:20])
    with pytest.raises(RuneError, match=f"sim platform (keys|identity) in {sim_dir}"):
        platform.load_keys()


def test_a_platform_of_another_host_is_refused_by_load_keys(sim_dir: Path) -> None:
    platform.load_keys()
    meta = json.loads((sim_dir / "platform.json").read_text())
    (sim_dir / "platform.json").write_text(json.dumps({**meta, "host": "0" * 64}))
    with pytest.raises(RuneError, match="created on another host"):
        platform.load_keys()


def test_a_missing_template_is_made_again(sim_dir: Path) -> None:
    first = platform.load_keys()
    (sim_dir / platform.TEMPLATE).unlink()
    again = platform.load_keys()
    assert again.quote_template[:48] == first.quote_template[:48] and (sim_dir / platform.TEMPLATE).exists()


def test_canonical_json_is_json_dumps_byte_for_byte(tmp_path: Path, signing_key_pem: Path, make_bundle) -> None:  # noqa: ANN001
    from inclavare.oci import jsonlite
    from inclavare.tee.sim import image

    b = make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem)
    doc = json.loads((b / "rootfs" / image.ENCLAVE_DIR / image.MANIFEST).read_text())
    for value in (doc, doc["enclave"], {"b": [1, 2.5, None, True], "a": "é\u2028\x00", "c": {"z": 1, "y": -0.0}}):
        assert jsonlite.dumps_canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                                             ensure_ascii=True)


def test_records_behave_as_frozen_dataclasses() -> None:
    from inclavare.tee import records

    @records.record
    class Point:
        x: int
        y: int = 2
        tags: dict = records.field(default_factory=dict)

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x must not be negative")

    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, {}) and p == Point(1, 2, {}) and p != Point(1, 3)
    assert Point(1).tags is not Point(1).tags
    assert records.replace(p, y=5) == Point(x=1, y=5) and repr(p).endswith("Point(x=1, y=2, tags={})")
    assert [f.name for f in records.fields(Point)] == ["x", "y", "tags"]
    with pytest.raises(records.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative"):
        records.replace(p, x=-1)
    with pytest.raises(TypeError, match="missing the argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected argument 'z'"):
        Point(1, z=3)
    with pytest.raises(TypeError, match="multiple values"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="no field"):
        records.replace(p, z=1)
    with pytest.raises(TypeError, match="without a default follows"):
        @records.record
        class Bad:
            a: int = 1
            b: int
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))  # type: ignore[arg-type]


def test_memoized_host_paths_resolve_as_the_full_resolution(tmp_path: Path) -> None:
    from inclavare.tee.sim import image

    root = tmp_path / "root"
    (root / "usr" / "lib" / "x").mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink("usr/lib", root / "lib")  # relative
    os.symlink("/usr/lib/x", root / "usr" / "abs")  # absolute: inside the rootfs
    os.symlink("../../..", root / "usr" / "lib" / "up")  # climbs to the root, not above it
    os.symlink("/etc", root / "usr" / "lib" / "x" / "etc")
    memo: dict[str, str] = {}
    for p in ["/lib/x/f", "/usr/abs/f", "/usr/lib/up/etc/f", "/usr/lib/up/up/lib/f", "/usr/abs/etc/f", "/etc/f",
              "/usr/./lib/f", "/usr/lib/../lib/x/f", "/f", "/lib/x/etc/../f", "/nowhere/f"]:
        assert image.host_path(root, p, memo) == image.host_path(root, p), p
