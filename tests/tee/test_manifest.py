"""The enclave-image signing model (inclavare.tee.sim.manifest): the manifest built from an image config, signed with a
local key or an external signer, and the launch check against it - every manifest field measured, every property of
a trusted file checked, engine-managed paths and mounts outside the measurement, the process checked against the
entry points and the environment policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inclavare.errors import RuneError
from inclavare.tee import records
from inclavare.tee.sim import image, manifest
from inclavare.tee.sim.launch import check_env, check_process, launch_check

IMAGE_CONFIG = {"architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "Entrypoint": ["/bin/app"],
                           "Cmd": ["--serve"], "WorkingDir": "/"}}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    for d in ("bin", "etc", "lib", "proc", "dev", "tmp", "data", "usr/bin"):
        (r / d).mkdir(parents=True)
    (r / "bin" / "app").write_bytes(b"\x7fELF" + bytes(range(256)) * 20)
    (r / "bin" / "app").chmod(0o755)
    (r / "usr" / "bin" / "tool").write_bytes(b"#!/bin/app\n")
    (r / "usr" / "bin" / "tool").chmod(0o755)
    (r / "bin" / "tool").symlink_to("../usr/bin/tool")
    (r / "etc" / "app.conf").write_text("greeting = hello\n")
    (r / "etc" / "hostname").write_text("image-host\n")
    (r / "lib" / "data.bin").write_bytes(bytes(5000))
    return r


@pytest.fixture
def signed(rootfs: Path, signing_key_pem: Path, sim_dir: Path) -> manifest.SignedEnclave:
    cfg = manifest.from_image_config(rootfs, IMAGE_CONFIG, untrusted_env=("PORT", "OTEL_*"))
    return manifest.sign_rootfs(rootfs, cfg, manifest.key_signer(signing_key_pem))


def test_manifest_from_an_image_config(signed: manifest.SignedEnclave, rootfs: Path) -> None:
    c = signed.config
    assert c.entrypoints == (image.Entrypoint("/bin/app"),)
    assert c.env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert set(c.untrusted_env) >= {"HOSTNAME", "TERM", "HOME", "container", "PORT", "OTEL_*"}
    assert sorted(c.trusted_files) == ["/bin/app", "/etc/app.conf", "/lib/data.bin", "/usr/bin/tool"]
    assert c.symlinks == {"/bin/tool": "../usr/bin/tool"}  # /etc/hostname, /proc, /dev, /tmp: engines' paths
    assert c.trusted_files["/bin/app"].mode & 0o777 == 0o755
    doc = json.loads((rootfs / ".inclavare" / "enclave" / "manifest.json").read_text())
    assert doc["version"] == 2 and doc["mr_enclave"] == signed.mr_enclave.hex()
    assert launch_check(rootfs).mr_enclave == signed.mr_enclave == image.measure_config(c)[0]


def test_external_signer_gets_the_signed_bytes_and_its_answer_is_checked(rootfs, signing_key_pem, sim_dir) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(signing_key_pem.read_bytes(), None)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    seen: list[bytes] = []

    def server(data: bytes) -> bytes:  # what a signing server's POST /api/v1/signature/pkcs1 does
        seen.append(data)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    cfg = manifest.from_image_config(rootfs, IMAGE_CONFIG)
    remote = manifest.sign(cfg, manifest.callback_signer(pem, server))
    local = manifest.sign(cfg, manifest.key_signer(signing_key_pem))
    assert len(seen) == 1 and len(seen[0]) == 256
    assert (remote.mr_enclave, remote.mr_signer) == (local.mr_enclave, local.mr_signer)
    manifest.write(remote, rootfs)
    assert launch_check(rootfs).mr_signer == local.mr_signer
    for answer in (b"\0" * 384, b"short", server(b"other bytes")):
        with pytest.raises(RuneError, match="^signing the enclave failed: the signer"):
            manifest.sign(cfg, manifest.callback_signer(pem, lambda _d, a=answer: a))
    with pytest.raises(RuneError, match="RSA-3072 with exponent 3"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        manifest.callback_signer(other.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo), server)


@pytest.mark.parametrize("change", [
    {"entrypoints": (image.Entrypoint("/bin/app", ("/bin/app",)),)}, {"env": {"PATH": "/bin"}},
    {"untrusted_env": ("HOSTNAME",)}, {"untrusted_paths": ("/proc",)}, {"trusted_roots": ("/bin",)},
    {"symlinks": {}}, {"debug": True}, {"isv_svn": 1}, {"isv_prod_id": 7}, {"misc_select": 1}, {"xfrm": 7},
    {"ssa_frame_size": 2}, {"extra": {"name": "x"}},
    *({"file": (prop, value)} for prop, value in (("sha256", "00" * 32), ("size", 1), ("mode", 0o104755),
                                                  ("uid", 1), ("gid", 1)))])
def test_mrenclave_changes_with_every_manifest_field(signed: manifest.SignedEnclave, change: dict) -> None:
    c = signed.config
    if "file" in change:
        prop, value = change["file"]
        files = dict(c.trusted_files)
        files["/bin/app"] = image.TrustedFile(**{**files["/bin/app"].to_json(), prop: value})
        other = records.replace(c, trusted_files=files)
    else:
        other = records.replace(c, **change)
    assert image.measure_config(other)[0] != signed.mr_enclave


def test_an_edited_manifest_is_refused(signed, rootfs) -> None:
    path = rootfs / ".inclavare" / "enclave" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["enclave"]["untrusted_env"].append("LD_PRELOAD")
    path.write_text(json.dumps(doc))
    with pytest.raises(RuneError, match=r"the enclave manifest .*manifest.json changed since signing \(MRENCLAVE"):
        launch_check(rootfs)


def _tamper(rootfs: Path, how: str) -> str:
    app = rootfs / "bin" / "app"
    if how == "content":
        data = bytearray(app.read_bytes())
        data[100] ^= 1
        app.write_bytes(bytes(data))
        return "the content of the trusted file /bin/app changed since signing"
    if how == "size":
        app.write_bytes(app.read_bytes() + b"\0")
        return "the size of the trusted file /bin/app changed since signing"
    if how == "mode":
        app.chmod(0o4755)
        return r"the mode of the trusted file /bin/app changed since signing \(-rwxr-xr-x -> -rwsr-xr-x\)"
    if how == "owner":
        os.chown(app, 1000, -1)
        return r"the owner of the trusted file /bin/app changed since signing \(0 -> 1000\)"
    if how == "group":
        os.chown(app, -1, 1000)
        return r"the group of the trusted file /bin/app changed since signing \(0 -> 1000\)"
    if how == "removed":
        (rootfs / "etc" / "app.conf").unlink()
        return "the trusted file /etc/app.conf was removed since signing"
    if how == "symlink":
        (rootfs / "etc" / "app.conf").unlink()
        (rootfs / "etc" / "app.conf").symlink_to("/tmp/evil")
        return "the trusted file /etc/app.conf was replaced by a symlink since signing"
    if how == "hard link":
        os.link(app, rootfs / "tmp" / "writable-name")
        return "the trusted file /bin/app has 2 hard links but only 1 of its names is a trusted file"
    if how == "added file":
        (rootfs / "lib" / "evil.so").write_bytes(b"x")
        return "the file /lib/evil.so was added under the trusted path / since signing"
    if how == "added symlink":
        (rootfs / "lib" / "libc.so").symlink_to("/tmp/evil")
        return "the symlink /lib/libc.so -> /tmp/evil was added since signing"
    if how == "retargeted symlink":
        (rootfs / "bin" / "tool").unlink()
        (rootfs / "bin" / "tool").symlink_to("/tmp/evil")
        return "the symlink /bin/tool -> /tmp/evil was retargeted since signing"
    if how == "removed symlink":
        (rootfs / "bin" / "tool").unlink()
        return "the symlink /bin/tool was removed since signing"
    assert how == "special file"
    os.mkfifo(rootfs / "etc" / "fifo")
    return "the special file /etc/fifo was added since signing"


@pytest.mark.parametrize("how", ["content", "size", "mode", "owner", "group", "removed", "symlink", "hard link",
                                 "added file", "added symlink", "retargeted symlink", "removed symlink",
                                 "special file"])
def test_every_file_property_of_the_trusted_tree_is_checked(signed, rootfs, how) -> None:
    sentence = _tamper(rootfs, how)
    with pytest.raises(RuneError, match=sentence):
        launch_check(rootfs)


def test_engine_managed_paths_and_mounts_are_outside_the_measurement(signed, rootfs) -> None:
    (rootfs / ".dockerenv").write_text("")
    (rootfs / "etc" / "hostname").write_text("node-7\n")
    (rootfs / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (rootfs / "etc" / "mtab").symlink_to("/proc/mounts")
    (rootfs / "dev" / "null").write_text("")
    (rootfs / "data" / "volume-file").write_text("user data")
    (rootfs / "etc" / "conf.d").mkdir()
    (rootfs / "etc" / "conf.d" / "x").write_text("a file mount")
    with pytest.raises(RuneError, match="the file /data/volume-file was added"):
        launch_check(rootfs)
    launch_check(rootfs, mounts=("/data", "/etc/conf.d/"))
    # a mount over trusted files does not hide them: they are still checked one by one
    (rootfs / "etc" / "app.conf").write_text("swapped by a volume\n")
    with pytest.raises(RuneError, match="the (content|size) of the trusted file /etc/app.conf changed"):
        launch_check(rootfs, mounts=("/etc",))


def test_the_process_is_checked_against_entry_points_and_environment(signed, rootfs) -> None:
    c = signed.config
    proc = {"args": ["/bin/app", "--other", "args"], "cwd": "/",
            "env": ["HOSTNAME=abc", "ENCLAVE_TYPE=sim", "TERM=xterm", "PATH=/usr/bin:/bin", "PORT=80", "OTEL_X=1"]}
    env = check_process(c, proc, rootfs)
    assert env == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOSTNAME=abc", "TERM=xterm", "PORT=80", "OTEL_X=1"]
    assert check_process(c, {**proc, "env": list(reversed(proc["env"]))}, rootfs)[:2] == env[:2]  # order is free
    assert check_process(c, {**proc, "args": ["app"], "env": []}, rootfs) == env[:2]  # PATH lookup; defaults added
    with pytest.raises(RuneError, match=r"^the environment variable LANG \(process.env in config.json\) overrides "
                                        r"the enclave's measured default LANG=C.UTF-8"):
        check_process(c, {**proc, "env": ["LANG=fr_FR"]}, rootfs)
    with pytest.raises(RuneError, match=r"^the environment variable LD_PRELOAD \(process.env in config.json\) is "
                                        r"not allowed by the enclave manifest"):
        check_process(c, {**proc, "env": ["LD_PRELOAD=/tmp/x.so"]}, rootfs)
    with pytest.raises(RuneError, match=r"^the program /usr/bin/tool \(process.args\[0\] 'tool' in config.json\) is "
                                        r"not an entry point of the signed enclave \(entry points: /bin/app\)"):
        check_process(c, {**proc, "args": ["tool"]}, rootfs)
    with pytest.raises(RuneError, match=r'process.args\[0\]: exec: "nope": executable file not found in \$PATH'):
        check_process(c, {**proc, "args": ["nope"]}, rootfs)
    with pytest.raises(RuneError, match="not NAME=VALUE"):
        check_env(c, ["JUSTANAME"])


def test_fixed_arguments_and_more_entry_points(rootfs, signing_key_pem, sim_dir) -> None:
    (rootfs / "sbin").symlink_to("usr/bin")  # a usrmerged directory
    cfg = manifest.from_image_config(rootfs, IMAGE_CONFIG, fixed_args=True, entrypoints=["/usr/bin/tool"])
    assert cfg.entrypoints == (image.Entrypoint("/bin/app", ("/bin/app", "--serve")),
                               image.Entrypoint("/usr/bin/tool"))
    proc = {"args": ["/bin/app", "--serve"], "env": []}
    check_process(cfg, proc, rootfs)
    with pytest.raises(RuneError, match=r"the argument process.args\[1\] '--debug' in config.json differs from the "
                                        r"one the enclave manifest fixes \('--serve'\)"):
        check_process(cfg, {**proc, "args": ["/bin/app", "--debug"]}, rootfs)
    with pytest.raises(RuneError, match="have 1 arguments, the enclave manifest fixes 2"):
        check_process(cfg, {**proc, "args": ["/bin/app"]}, rootfs)
    # the other entry point, through its real or its symlinked directory, arguments free; but /bin/tool is another
    # name (a multi-call binary tells its applets by name)
    check_process(cfg, {**proc, "args": ["/usr/bin/tool", "x"]}, rootfs)
    check_process(cfg, {**proc, "args": ["/sbin/tool", "y"]}, rootfs)
    with pytest.raises(RuneError, match="the program /bin/tool .* is not an entry point"):
        check_process(cfg, {**proc, "args": ["/bin/tool"]}, rootfs)


def test_signing_refuses_what_it_cannot_measure(rootfs, signing_key_pem) -> None:
    with pytest.raises(RuneError, match="the image has no Entrypoint or Cmd"):
        manifest.from_image_config(rootfs, {"config": {"Env": []}})
    with pytest.raises(RuneError, match="entry point \\(argv\\[0\\]\\) 'nope' is not found in the rootfs"):
        manifest.from_image_config(rootfs, {"config": {"Cmd": ["nope"]}})
    os.mkfifo(rootfs / "lib" / "fifo")
    with pytest.raises(RuneError, match="the trusted tree holds /lib/fifo, which is not a regular file"):
        manifest.from_image_config(rootfs, IMAGE_CONFIG)
    cfg = manifest.from_image_config(rootfs, IMAGE_CONFIG, untrusted_paths=["/lib/fifo"])
    assert "/lib/fifo" in cfg.untrusted_paths
    with pytest.raises(RuneError, match="not NAME=VALUE"):
        manifest.from_image_config(rootfs, IMAGE_CONFIG, extra_env=["X"])
    with pytest.raises(RuneError, match="signing key .* cannot be read"):
        manifest.key_signer(rootfs / "missing.pem")


def _signed_rootfs(tmp_path: Path, signing_key_pem: Path, make_bundle) -> Path:  # noqa: ANN001
    from inclavare.tee.sim import bundle

    b = make_bundle(tmp_path / "b")
    bundle.sign_bundle(b, signing_key_pem)
    return b / "rootfs"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "too large"])
def test_a_signed_file_that_is_not_a_regular_file_is_refused_without_reading_it(
        tmp_path: Path, signing_key_pem: Path, make_bundle, kind: str) -> None:  # noqa: ANN001
    """A FIFO would hang the launch, /dev/zero would fill its memory: the manifest and SIGSTRUCT are read only as
    regular files (not followed, not blocking, bounded; found by review)."""
    from inclavare.tee.sim import launch

    rootfs = _signed_rootfs(tmp_path, signing_key_pem, make_bundle)
    m = rootfs / ".inclavare" / "enclave" / "manifest.json"
    m.unlink()
    if kind == "fifo":
        os.mkfifo(m)
    elif kind == "symlink":
        m.symlink_to("/dev/zero")
    elif kind == "directory":
        m.mkdir()
    else:
        with open(m, "wb") as f:
            f.truncate(launch.MAX_MANIFEST + 1)
    want = {"fifo": "is not a regular file", "symlink": "is a symlink", "directory": "is not a regular file",
            "too large": f"has {launch.MAX_MANIFEST + 1} bytes, more than the {launch.MAX_MANIFEST}"}[kind]
    with pytest.raises(RuneError, match=want):
        launch.read_signed_image(rootfs)


def test_a_signed_file_that_is_not_a_regular_file_is_never_opened(tmp_path: Path, signing_key_pem: Path,
                                                                    make_bundle) -> None:  # noqa: ANN001
    """A review: an image may hold device nodes, and opening one runs its driver's open as the host's root (a
    watchdog's arms it). The manifest and the SIGSTRUCT, which nothing looked at before, are looked at through an
    O_PATH handle first: inotify sees no open of a FIFO put in their place (an O_PATH open makes no event). (A
    trusted file is opened only after the launch check's lstat found a regular file there.)"""
    import ctypes
    import select

    from inclavare.tee.sim import launch

    rootfs = _signed_rootfs(tmp_path, signing_key_pem, make_bundle)
    libc = ctypes.CDLL(None, use_errno=True)
    targets = [rootfs / ".inclavare" / "enclave" / "manifest.json"]
    for t in targets:
        t.unlink()
        os.mkfifo(t)
    ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert ino >= 0
    try:
        for t in targets:
            assert libc.inotify_add_watch(ino, os.fsencode(t), 0x20) >= 0  # IN_OPEN
        with pytest.raises(RuneError, match="is not a regular file"):
            launch.read_signed_image(rootfs)
        assert not select.select([ino], [], [], 0.2)[0]  # no IN_OPEN event
    finally:
        os.close(ino)


def test_the_signed_image_is_found_inside_the_rootfs_through_its_symlinks(tmp_path: Path, signing_key_pem: Path,
                                                                          make_bundle) -> None:  # noqa: ANN001
    """/.inclavare/enclave as an absolute symlink leads inside the rootfs, not to the host's directory of that name."""
    from inclavare.tee.sim import launch

    rootfs = _signed_rootfs(tmp_path, signing_key_pem, make_bundle)
    outside = _signed_rootfs(tmp_path / "other", signing_key_pem, make_bundle)  # a signed image on the host
    enclave = rootfs / ".inclavare" / "enclave"
    (rootfs / "signed").mkdir()
    enclave.rename(rootfs / "signed" / "enclave")
    enclave.symlink_to("/signed/enclave")  # inside: found
    assert launch.read_signed_image(rootfs)[0].entrypoints
    enclave.unlink()
    enclave.symlink_to(outside / ".inclavare" / "enclave")  # the host's path, resolved in the rootfs: not there
    with pytest.raises(RuneError, match="has no signed sim enclave"):
        launch.read_signed_image(rootfs)
