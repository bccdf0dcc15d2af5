from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors"


@pytest.fixture
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip("../shared/vectors is absent (the shared real-world test vectors)")
    return VECTORS


@pytest.fixture
def sim_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private sim platform state directory per test."""
    d = tmp_path / "sim"
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def signing_key_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA-3072 e=3 enclave signing key, generated once per test session (never committed)."""
    from cryptography.hazmat.primitives import serialization

    from inclavare.tee.sgx.sigstruct import generate_signing_key

    path = tmp_path_factory.mktemp("keys") / "signer.pem"
    key = generate_signing_key()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@pytest.fixture(scope="session")
def other_key_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryptography.hazmat.primitives import serialization

    from inclavare.tee.sgx.sigstruct import generate_signing_key

    path = tmp_path_factory.mktemp("keys2") / "other.pem"
    path.write_bytes(generate_signing_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def _make_bundle(root: Path, extra_annotations: dict | None = None) -> Path:
    """A tiny OCI bundle: /bin/app (entry), /etc/app.conf, /lib/data.bin, a symlink and a /proc to skip."""
    import json

    b = root / "bundle"
    (b / "rootfs" / "bin").mkdir(parents=True)
    (b / "rootfs" / "etc").mkdir()
    (b / "rootfs" / "lib").mkdir()
    (b / "rootfs" / "proc").mkdir()
    (b / "rootfs" / "bin" / "app").write_bytes(b"\x7fELF" + bytes(range(256)) * 20)
    (b / "rootfs" / "bin" / "app").chmod(0o755)
    (b / "rootfs" / "etc" / "app.conf").write_text("greeting = hello\n")
    (b / "rootfs" / "lib" / "data.bin").write_bytes(bytes(5000))
    (b / "rootfs" / "proc" / "junk").write_text("not measured")
    (b / "rootfs" / "etc" / "link").symlink_to("/etc/app.conf")
    spec = {"ociVersion": "1.0.2", "process": {"args": ["app", "--x"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
            "root": {"path": "rootfs"}, "annotations": dict(extra_annotations or {})}
    (b / "config.json").write_text(json.dumps(spec))
    return b


@pytest.fixture
def make_bundle():
    """make_bundle(dir, annotations=None) -> a tiny OCI bundle directory (see _make_bundle)."""
    return _make_bundle
