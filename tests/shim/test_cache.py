"""The conversion cache: what changes its key (the rootfs, the manifest's inputs, the signer) and what does not (the
engine's per-container variables, the process's arguments), and its bounded store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inclavare.shim import api, cache, sync


def spec(**process: object) -> dict:
    p = {"args": ["/bin/sh", "-c", "true"], "env": ["PATH=/bin", "HOSTNAME=a"], "cwd": "/"}
    p.update(process)
    return {"process": p, "mounts": [{"destination": "/proc"}]}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    (r / "bin" / "sh").write_bytes(b"sh")
    (r / "proc").mkdir()
    return r


SIGNER = {"type": "key", "path": "/k.pem", "id": "/k.pem:1:2:3"}


def test_what_the_key_depends_on(rootfs: Path) -> None:
    k = cache.key(str(rootfs), spec(), [], SIGNER, False)
    assert k == cache.key(str(rootfs), spec(args=["/bin/sh", "-c", "other"], env=["PATH=/bin", "HOSTNAME=b"]), [],
                          SIGNER, False), "arguments and the engine's HOSTNAME are outside the manifest"
    assert k != cache.key(str(rootfs), spec(args=["/bin/true"]), [], SIGNER, False)
    assert k != cache.key(str(rootfs), spec(env=["PATH=/usr/bin"]), [], SIGNER, False)
    assert k != cache.key(str(rootfs), spec(), [], dict(SIGNER, id="/k.pem:1:2:4"), False)
    assert k != cache.key(str(rootfs), spec(), [], SIGNER, True)
    (rootfs / "proc" / "ignored").write_text("x")  # /proc is never measured
    assert k == cache.key(str(rootfs), spec(), [], SIGNER, False)
    (rootfs / "bin" / "sh").write_bytes(b"SH")
    os.utime(rootfs / "bin" / "sh", ns=(1, 1))
    assert k != cache.key(str(rootfs), spec(), [], SIGNER, False)


def test_overlay_key_uses_the_snapshots(tmp_path: Path, rootfs: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    m = [api.Mount(type="overlay", source="overlay", options=[f"upperdir={upper}", f"lowerdir={lower}"])]
    k = cache.key(str(rootfs), spec(), m, SIGNER, False)
    (rootfs / "bin" / "new").write_text("x")  # the mounted view is not walked: the snapshots identify it
    assert k == cache.key(str(rootfs), spec(), m, SIGNER, False)
    (upper / "added").write_text("x")  # the container's own layer is
    assert k != cache.key(str(rootfs), spec(), m, SIGNER, False)


def test_store_get_put_and_eviction(tmp_path: Path) -> None:
    c = cache.Cache(str(tmp_path / "c"), 2)
    assert c.get("a") is None
    for i, k in enumerate("abc"):
        c.put(k, b"m" + k.encode(), b"s", {"mr_enclave": str(i), "mr_signer": "x"})
        os.utime(tmp_path / "c" / k, (i + 1, i + 1))
    assert c.get("a") is None and c.get("c") == (b"mc", b"s", c.get("c")[2])  # type: ignore[index]
    assert sorted(os.listdir(tmp_path / "c")) == ["b", "c"]
    (tmp_path / "c" / "b" / "meta.json").write_text("not json")
    assert c.get("b") is None


def test_event_latch() -> None:
    e = sync.Event()
    assert not e.wait(0.01) and not e.is_set()
    e.set()
    e.set()
    assert e.wait() and e.wait(0) and e.is_set()
    e.clear()
    assert not e.wait(0.01)


@pytest.mark.parametrize("shape", ["symlink out", "symlinked enclave dir", "a file"])
def test_the_signature_directory_of_an_untrusted_image(tmp_path: Path, shape: str) -> None:
    """The shim writes the signature into the container's rootfs as root: an image whose /.inclavare (or
    /.inclavare/enclave) is a symlink or a file is refused, and nothing is written outside the rootfs."""
    from inclavare.errors import RuneError
    from inclavare.shim import convert

    rootfs, outside = tmp_path / "rootfs", tmp_path / "outside"
    rootfs.mkdir()
    outside.mkdir()
    if shape == "symlink out":
        (rootfs / ".inclavare").symlink_to(outside)
    elif shape == "symlinked enclave dir":
        (rootfs / ".inclavare").mkdir()
        (rootfs / ".inclavare" / "enclave").symlink_to(outside)
    else:
        (rootfs / ".inclavare").write_text("x")
    for call in (lambda: convert.write_signature(str(rootfs), b"m", b"s"), lambda: convert.read_signature(str(rootfs))):
        with pytest.raises(RuneError, match="is a symlink or not a directory"):
            call()
    assert list(outside.iterdir()) == []


def test_signature_written_and_read_back(tmp_path: Path) -> None:
    from inclavare.shim import convert

    assert convert.read_signature(str(tmp_path)) is None
    convert.write_signature(str(tmp_path), b"manifest", b"sigstruct")
    assert convert.read_signature(str(tmp_path)) == (b"manifest", b"sigstruct")
    assert (tmp_path / ".inclavare" / "enclave" / "manifest.json").read_bytes() == b"manifest"


def test_the_cache_follows_the_signing_model() -> None:
    """cache.py keeps copies (the shim must not import the signing library): they must stay equal."""
    from inclavare.shim import convert_worker
    from inclavare.tee.sim import image

    assert cache.UNTRUSTED_ENV == image.UNTRUSTED_ENV and cache.MODEL == convert_worker.MODEL
