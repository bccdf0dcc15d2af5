"""The built-in `sim` enclave runtime: sgx-tools sign-bundle, then rune run in the sim enclave; /dev/attestation
from inside; rune attest; a tampered trusted file refused at launch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import build_rootfs, cgroup_leftovers, default_config, new_id
from tests.security.conftest import PROC_OVER, wait_proc_over


@contextlib.contextmanager
def shared_mount(d: Path):  # noqa: ANN201
    """The new directory `d` as a shared mount (a peer group of its own, as / on a systemd host: mounts made in it
    propagate to its binds), unmounted at the end."""
    from inclavare.linux import syscalls

    d.mkdir()
    syscalls.mount(str(d), str(d), None, syscalls.MS_BIND)
    try:
        syscalls.mount(None, str(d), None, syscalls.MS_SHARED)
        yield d
    finally:
        syscalls.umount2(str(d), syscalls.MNT_DETACH)


def sim_bundle(tmp: Path, args: list[str], key: Path, rune_bin: str, readonly: bool = True,
               files: dict[str, str] | None = None) -> Path:
    b = tmp / f"simb-{new_id()}"
    (b / "rootfs").mkdir(parents=True)
    build_rootfs(b / "rootfs", shutil.which("busybox") or "/bin/busybox")
    for name, text in (files or {}).items():  # signed with the rest
        (b / "rootfs" / name).parent.mkdir(parents=True, exist_ok=True)
        (b / "rootfs" / name).write_text(text)
    c = default_config(b / "rootfs", args)
    c["root"]["readonly"] = readonly
    (b / "config.json").write_text(json.dumps(c))
    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    p = subprocess.run([sgx_tools, "sign-bundle", "--key", str(key), str(b)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return b


QUOTE_SCRIPT = (
    "printf inside-report-data | dd of=/dev/attestation/user_report_data 2>/dev/null; "
    "cat /dev/attestation/quote > /dev/shm/quote; cat /dev/attestation/quote > /dev/shm/quote2; "
    "cat /dev/attestation/report > /dev/shm/report; cat /dev/attestation/attestation_type; echo; "
    "wc -c < /dev/attestation/keys/_sgx_mrenclave; wc -c < /dev/attestation/my_target_info; "
    "cat /dev/shm/quote"
)


def test_signed_bundle_runs_in_sim_and_quotes_from_inside(rune, sim_dir, signing_key, tmp_path):
    from inclavare.tee.sgx.quote import Quote
    from inclavare.tee.sgx.quote_verify import sim_marks
    from inclavare.tee.sim import qe
    from inclavare.tee.sim.platform import load_platform

    b = sim_bundle(tmp_path, ["sh", "-c", QUOTE_SCRIPT], signing_key, rune.binary, readonly=False)
    annotations = json.loads((b / "config.json").read_text())["annotations"]
    p = rune("run", "--bundle", str(b), new_id(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    assert p.returncode == 0, p.stderr
    head, _, raw = p.stdout.partition(b"\n512\n")
    assert head.split(b"\n") == [b"dcap", b"16"]
    quote = Quote.from_bytes(raw)
    assert quote.report_body.report_data == b"inside-report-data".ljust(64, b"\0")
    assert quote.report_body.mr_enclave.hex() == annotations["enclave.sim.mrenclave"]
    assert quote.report_body.mr_signer.hex() == annotations["enclave.sim.mrsigner"]
    assert len(sim_marks(quote)) == 3
    verified = qe.verify_sim_quote(raw, load_platform(str(sim_dir)).root_ca)
    assert verified.simulated


# an image's OpenSSL configuration that loads a provider module of the image's own: were it read by the
# init-runelet (PID 1, which holds the platform's quoting key) that module would run in it; with
# config_diagnostics a provider that does not load fails every libcrypto call, so a quote read through
# /dev/attestation shows whether the runelet read it
EVIL_OPENSSL_CNF = """openssl_conf = openssl_init
config_diagnostics = 1
[openssl_init]
providers = provider_sect
[provider_sect]
evil = evil_sect
[evil_sect]
module = /evil-provider.so
activate = 1
"""


def test_the_images_openssl_config_never_reaches_the_runelet(rune, sim_dir, signing_key, tmp_path):
    files = {"usr/lib/ssl/openssl.cnf": EVIL_OPENSSL_CNF, "etc/ssl/openssl.cnf": EVIL_OPENSSL_CNF}
    b = sim_bundle(tmp_path, ["sh", "-c", "cat /dev/attestation/quote | wc -c; cat /dev/attestation/report | wc -c"],
                   signing_key, rune.binary, files=files)
    p = rune("run", "--bundle", str(b), new_id(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    quote, report = (int(n) for n in p.stdout.split())
    assert quote > 1000 and report == 432, (p.stdout, p.stderr)


def test_sim_tampered_trusted_file_is_refused(rune, sim_dir, signing_key, tmp_path):
    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert rune("run", "--bundle", str(b), new_id()).returncode == 0
    passwd = b / "rootfs" / "etc" / "passwd"
    data = bytearray(passwd.read_bytes())
    data[5] ^= 1
    passwd.write_bytes(bytes(data))
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1
    assert "does not match its signature: the content of the trusted file /etc/passwd changed since signing" in p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    # removing the signed image does not skip the launch check: the config still says it is signed
    shutil.rmtree(b / "rootfs" / ".inclavare")
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and "has no signed sim enclave" in p.stderr


def test_sim_unsigned_rootfs_is_refused(rune, sim_dir):
    b = rune.bundle(["true"], edit=lambda c: c["process"]["env"].append("ENCLAVE_TYPE=sim"))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and "sgx-tools sign-bundle" in p.stderr


def test_sim_exec_attest_and_protections(rune, sim_dir, signing_key, tmp_path):
    from inclavare.tee.sgx.quote import Quote
    from inclavare.tee.sgx.report import Report

    b = sim_bundle(tmp_path, ["sleep", "60"], signing_key, rune.binary)
    annotations = json.loads((b / "config.json").read_text())["annotations"]
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(b), cid).returncode == 0
    try:
        p = rune("exec", cid, "sh", "-c", 'echo "$1"; ulimit -c; exit 6', "sh", "a b")
        assert (p.returncode, p.stdout) == (6, "a b\n0\n"), p.stderr
        # the verified files are read-only mounts, even in a writable rootfs... and the runelet is not dumpable
        p = rune("exec", cid, "sh", "-c", "echo x >> /etc/passwd")
        assert p.returncode != 0 and "Read-only file system" in p.stderr
        pid = rune.state(cid)["pid"]
        assert _dumpable(pid) is False
        p = rune("attest", "--isRA", "--reportFile", str(tmp_path / "q.bin"), cid)
        assert (p.returncode, p.stdout) == (0, ""), p.stderr  # the file, not also stdout
        p = rune("attest", "--isRA", cid)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert doc["quote"]["simulated"] is True
        assert doc["report"]["body"]["mr_enclave"] == annotations["enclave.sim.mrenclave"]
        q = Quote.from_bytes((tmp_path / "q.bin").read_bytes())
        assert q.report_body.mr_enclave.hex() == annotations["enclave.sim.mrenclave"]
        p = rune("attest", "--reportFile", str(tmp_path / "r.bin"), cid)
        assert p.returncode == 0 and len(Report.from_bytes((tmp_path / "r.bin").read_bytes()).body) == 384
        p = rune("attest", "--isRA", "--quote-type", "epidLinkable", cid)
        assert p.returncode == 1 and "EPID" in p.stderr
        p = rune("attest", "nope-" + cid)
        assert p.returncode == 1 and "pass the engine's root with --root (Docker: " in p.stderr
    finally:
        rune("delete", "--force", cid)


def _dumpable(pid: int) -> bool:
    """ptrace's rules: a same-uid process without CAP_SYS_PTRACE reads /proc/PID/environ only if PID is dumpable."""
    p = subprocess.run(["setpriv", "--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=-all",
                        "--bounding-set=-all", "cat", f"/proc/{pid}/environ"], capture_output=True)
    if p.returncode != 0 and b"setpriv" in p.stderr and b"not found" in p.stderr:
        pytest.skip("setpriv is missing")
    return p.returncode == 0


def test_sim_changed_args_or_env_and_unmeasured_exec_are_refused(rune, sim_dir, signing_key, tmp_path):
    b = sim_bundle(tmp_path, ["sleep", "60"], signing_key, rune.binary, readonly=False)
    c = json.loads((b / "config.json").read_text())
    shutil.copy(b / "rootfs" / "bin" / "busybox", b / "rootfs" / "tmp" / "bb")  # added after signing: unmeasured
    for key, value, sentence in (
            ("args", ["sh", "-c", "exit 3"], "the program /bin/sh (process.args[0] 'sh' in config.json) is not an "
                                             "entry point of the signed enclave (entry points: /bin/sleep)"),
            ("env", c["process"]["env"] + ["LD_PRELOAD=/x.so"], "the environment variable LD_PRELOAD (process.env in "
                                                                 "config.json) is not allowed by the enclave manifest"),
            ("env", ["PATH=/tmp"], "the environment variable PATH (process.env in config.json) overrides the "
                                   "enclave's measured default PATH=")):
        (b / "config.json").write_text(json.dumps({**c, "process": {**c["process"], key: value}}))
        p = rune("run", "--bundle", str(b), new_id())
        assert p.returncode == 1 and sentence in p.stderr, p.stderr
    (b / "config.json").write_text(json.dumps(c))
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(b), cid).returncode == 0
    try:
        assert rune("exec", cid, "true").returncode == 0
        p = rune("exec", cid, "/tmp/bb", "true")
        assert p.returncode != 0 and "'/tmp/bb' is not a measured file of the signed enclave" in p.stderr, p.stderr
    finally:
        rune("delete", "--force", cid)


def test_sign_bundle_keeps_a_pal_path_and_still_checks_launch(rune, sim_dir, signing_key, tmp_path, pal_libs):
    b = sim_bundle(tmp_path, ["sh", "-c", "exit 5"], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    c["annotations"]["enclave.runtime.path"] = pal_libs[2]
    (b / "config.json").write_text(json.dumps(c))
    subprocess.run([str(Path(rune.binary).with_name("sgx-tools")), "sign-bundle", "--key", str(signing_key), str(b)],
                   check=True, capture_output=True)
    assert json.loads((b / "config.json").read_text())["annotations"]["enclave.runtime.path"] == pal_libs[2]
    assert rune("run", "--bundle", str(b), new_id()).returncode == 5
    (b / "rootfs" / "etc" / "group").write_text("tampered\n")
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and "the size of the trusted file /etc/group changed since signing" in p.stderr



def test_signed_sim_enclave_root_is_read_only_whatever_the_config_says(rune, sim_dir, signing_key, tmp_path):
    """Renaming a measured file's directory, or writing next to it, after the launch check would bypass the
    measurement: a signed sim enclave always gets a read-only root (writable tmpfs mounts stay writable)."""
    script = ("mv /bin /bin.old 2>/dev/null && echo moved; echo x > /etc/new 2>/dev/null && echo wrote; "
              "echo ok > /dev/shm/f && cat /dev/shm/f")
    b = sim_bundle(tmp_path, ["sh", "-c", script], signing_key, rune.binary, readonly=False)
    p = rune("run", "--bundle", str(b), new_id())
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stdout + p.stderr
    assert (b / "rootfs" / "bin").is_dir() and not (b / "rootfs" / "etc" / "new").exists()


@pytest.mark.parametrize("change", ["retarget a symlink", "add a file", "add a symlink", "remove a symlink"])
def test_sim_tree_changes_after_signing_are_refused(rune, sim_dir, signing_key, tmp_path, change):
    """The signature covers the trusted tree itself: a script's `cat` can no more be swapped than the entry."""
    b = sim_bundle(tmp_path, ["/bin/sh", "-c", "cat /etc/group"], signing_key, rune.binary)
    root = b / "rootfs"
    assert rune("run", "--bundle", str(b), new_id()).returncode == 0
    evil = root / "tmp" / "evil"  # /tmp is not measured: a place to put a payload
    evil.write_text("#!/bin/sh\necho EVIL\n")
    evil.chmod(0o755)
    if change == "retarget a symlink":
        (root / "bin" / "cat").unlink()
        (root / "bin" / "cat").symlink_to("/tmp/evil")
        expect = "the symlink /bin/cat -> /tmp/evil was retargeted"
    elif change == "add a file":
        shutil.copy(evil, root / "bin" / "newtool")
        expect = "the file /bin/newtool was added"
    elif change == "add a symlink":
        (root / "bin" / "zz").symlink_to("/tmp/evil")
        expect = "the symlink /bin/zz -> /tmp/evil was added"
    else:
        (root / "bin" / "cat").unlink()
        expect = "the symlink /bin/cat was removed"
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and expect in p.stderr, p.stderr
    assert "EVIL" not in p.stdout


def test_sim_tree_record_is_measured(rune, sim_dir, signing_key, tmp_path):
    """Editing the manifest's record of the tree to match a swap changes MRENCLAVE: refused."""
    b = sim_bundle(tmp_path, ["/bin/sh", "-c", "cat /etc/group"], signing_key, rune.binary)
    root = b / "rootfs"
    (root / "bin" / "cat").unlink()
    (root / "bin" / "cat").symlink_to("/tmp/evil")
    manifest = root / ".inclavare" / "enclave" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["enclave"]["symlinks"]["/bin/cat"] = "/tmp/evil"  # the record matches the swap now
    manifest.write_text(json.dumps(m))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and "does not match its signature" in p.stderr and "MRENCLAVE" in p.stderr, p.stderr


# what the enclave's launch must not import: each costs more than the launch check itself (bench/enclave.py)
HEAVY = ("cryptography", "dataclasses", "typing", "json", "pathlib", "enum", "re", "threading", "collections",
         "functools", "signal", "importlib", "warnings")


def test_a_signed_sim_launch_imports_none_of_the_heavy_modules(rune, sim_dir, signing_key, tmp_path):
    from tests.conftest import imported

    b = sim_bundle(tmp_path, ["true"], signing_key, rune.binary)
    assert rune("run", "--bundle", str(b), new_id()).returncode == 0  # the platform's first use made its files
    assert rune("run", "--bundle", str(b), new_id()).returncode == 0  # its measurement cache: the image's files
    seen = imported(rune, "run", "--bundle", str(b), new_id())
    assert "inclavare.tee.sim.launch" in seen  # the launch child's imports are in the list too
    assert not {m.split(".")[0] for m in seen} & {*HEAVY, "ctypes"}, sorted(seen)  # libcrypto through _ctypes
    # a warm launch (its files unchanged since the first one hashed them) hashes nothing: no hashlib, whose import
    # loads OpenSSL (inclavare.tee.sha256 serves the manifest, the SIGSTRUCT and the sealing keys)
    assert not {"hashlib", "_hashlib", "hmac"} & seen, sorted(seen)


def test_a_pal_launch_imports_none_of_the_heavy_modules(rune, pal_libs, tmp_path):
    from tests.conftest import imported
    from tests.enclave.conftest import pal_bundle

    b = pal_bundle(rune, pal_libs[2], ["true"])
    seen = imported(rune, "run", "--bundle", str(b), new_id())
    assert "inclavare.enclave.pal" in seen and "inclavare.linux.sealed_exe" in seen
    assert not {m.split(".")[0] for m in seen} & {*HEAVY, "ctypes"}, sorted(seen)  # the PAL through _ctypes


def test_a_host_mount_over_a_trusted_file_after_the_launch_check_does_not_reach_the_enclave(rune, sim_dir,
                                                                                           signing_key, tmp_path):
    """The container's root mount is made private (and read-only) before the launch check reads anything through
    it: a bind mount made on the host over a trusted file after `create`, which a slave root would receive, is not
    what the payload reads."""
    from tests.enclave.conftest import wait_status


    out = tmp_path / "out"
    out.mkdir()
    # a shared mount holds the bundle, as / on a systemd host: mounts propagate
    with shared_mount(tmp_path / "shared") as shared:
        _host_mount_after_create(rune, shared, out, signing_key, tmp_path, wait_status)


def _host_mount_after_create(rune, shared, out, signing_key, tmp_path, wait_status):  # noqa: ANN001, ANN202
    from inclavare.linux import syscalls

    b = sim_bundle(shared, ["sh", "-c", "cat /etc/group > /out/group"], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]})
    (b / "config.json").write_text(json.dumps(c))
    target = b / "rootfs" / "etc" / "group"
    signed = target.read_text()
    evil = tmp_path / "evil-group"
    evil.write_text("evil:x:0:\n")
    cid = new_id()
    p = rune("create", "--bundle", str(b), cid)
    assert p.returncode == 0, p.stderr
    syscalls.mount(str(evil), str(target), None, syscalls.MS_BIND)
    try:
        assert target.read_text() == "evil:x:0:\n"  # the host sees its mount
        assert rune("start", cid).returncode == 0
        assert wait_status(rune, cid, "stopped") == "stopped"
    finally:
        syscalls.umount2(str(target), syscalls.MNT_DETACH)
        rune("delete", "--force", cid)
    assert (out / "group").read_text() == signed


@pytest.mark.parametrize("over", ["a directory", "a file", "a directory, through a PAL"])
def test_a_host_mount_over_a_config_bind_source_after_the_launch_check_does_not_reach_the_enclave(
        rune, sim_dir, signing_key, tmp_path, pal_libs, over):
    """A config bind mount over trusted files (which the launch check still checks one by one) from a source on a
    shared host mount is a slave of it: a mount made on the host over the source after `create` would reach the
    payload. The launch child (or the runelet, for a PAL over a signed image) makes the mounts that hold trusted
    paths private before it checks; a bind of the same source where no trusted file is (/vol) keeps its
    propagation."""
    from tests.enclave.conftest import wait_status

    from inclavare.linux import syscalls

    with shared_mount(tmp_path / "shared") as shared:
        (shared / "app").mkdir()
        (shared / "app" / "trusted.txt").write_text("signed\n")  # the signed file's bytes, mode and owner
        script = "cat /etc/app/trusted.txt /vol/trusted.txt > /out/seen"
        b = sim_bundle(tmp_path, ["sh", "-c", script], signing_key, rune.binary,
                       files={"etc/app/trusted.txt": "signed\n"})
        out = tmp_path / "out"
        out.mkdir()
        c = json.loads((b / "config.json").read_text())
        dest, src = ("/etc/app/trusted.txt", shared / "app" / "trusted.txt") if over == "a file" else (
            "/etc/app", shared / "app")
        if over.endswith("PAL"):
            c["annotations"]["enclave.runtime.path"] = pal_libs[2]
        c["mounts"] += [{"destination": dest, "type": "bind", "source": str(src), "options": ["rbind"]},
                        {"destination": "/vol", "type": "bind", "source": str(shared / "app"), "options": ["rbind"]},
                        {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]}]
        (b / "config.json").write_text(json.dumps(c))
        evil = tmp_path / "evil.txt"
        evil.write_text("evil\n")
        cid = new_id()
        p = rune("create", "--bundle", str(b), cid)
        assert p.returncode == 0, p.stderr
        target = shared / "app" / "trusted.txt"
        syscalls.mount(str(evil), str(target), None, syscalls.MS_BIND)  # on the host, after the launch check
        try:
            assert target.read_text() == "evil\n"
            assert rune("start", cid).returncode == 0
            assert wait_status(rune, cid, "stopped") == "stopped"
        finally:
            syscalls.umount2(str(target), syscalls.MNT_DETACH)
            rune("delete", "--force", cid)
        assert (out / "seen").read_text() == "signed\nevil\n"


def test_a_symlink_in_a_config_mount_cannot_lead_a_trusted_file_to_a_volume_that_is_not_sealed(
        rune, sim_dir, signing_key, tmp_path):
    """A config bind over /etc/app (sealed: it holds trusted paths) whose source has `sub` as a symlink to /vol: the
    trusted file /etc/app/sub/trusted.txt was checked, and read by the payload, at /vol/trusted.txt, a bind of a
    shared host mount that holds no trusted path by the manifest's names and so kept its propagation; a mount made
    on the host over its source after `create` reached the payload (found by review: it read "evil"). Refused: a
    trusted file's directory is never a symlink at signing."""

    with shared_mount(tmp_path / "shared") as shared:
        (shared / "vol").mkdir()
        (shared / "vol" / "trusted.txt").write_text("signed\n")  # the signed file's bytes, mode and owner
        app = tmp_path / "app"
        app.mkdir()
        (app / "sub").symlink_to("/vol")
        b = sim_bundle(tmp_path, ["cat", "/etc/app/sub/trusted.txt"], signing_key, rune.binary,
                       files={"etc/app/sub/trusted.txt": "signed\n"})
        c = json.loads((b / "config.json").read_text())
        c["mounts"] += [{"destination": "/etc/app", "type": "bind", "source": str(app), "options": ["rbind"]},
                        {"destination": "/vol", "type": "bind", "source": str(shared / "vol"), "options": ["rbind"]}]
        (b / "config.json").write_text(json.dumps(c))
        cid = new_id()
        p = rune("create", "--bundle", str(b), cid)
        try:
            assert p.returncode == 1, p.stderr
            assert "a directory of the trusted file /etc/app/sub/trusted.txt was replaced by a symlink since " \
                   "signing (it resolves to /vol/trusted.txt)" in p.stderr, p.stderr
            assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
        finally:
            rune("delete", "--force", cid)


def test_a_config_mount_that_asks_for_the_hosts_mounts_over_trusted_files_is_refused(rune, sim_dir, signing_key,
                                                                                     tmp_path):
    """A mount whose options ask for the host's later mounts (rslave, rshared) where trusted files are cannot have
    them: refused with one sentence naming it, nothing left behind; the same option on a volume without trusted
    files is kept."""
    b = sim_bundle(tmp_path, ["cat", "/etc/app/trusted.txt"], signing_key, rune.binary,
                   files={"etc/app/trusted.txt": "signed\n"})
    src = tmp_path / "app"
    src.mkdir()
    (src / "trusted.txt").write_text("signed\n")
    c = json.loads((b / "config.json").read_text())
    n = len(c["mounts"])
    c["mounts"] += [{"destination": "/vol", "type": "bind", "source": str(src), "options": ["rbind", "rslave"]},
                    {"destination": "/etc/app", "type": "bind", "source": str(src), "options": ["rbind", "rslave"]}]
    (b / "config.json").write_text(json.dumps(c))
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"config.json mounts[{n + 1}]: the rslave propagation of /etc/app would let a mount" in p.stderr, p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    c["mounts"][-1]["options"] = ["rbind"]
    (b / "config.json").write_text(json.dumps(c))
    p = rune("run", "--bundle", str(b), new_id())
    assert (p.returncode, p.stdout) == (0, "signed\n"), p.stderr


def test_an_unbindable_mount_inside_a_sealed_one_stays_unbindable(rune, sim_dir, signing_key, tmp_path):
    """Sealing is recursive (MS_PRIVATE|MS_REC), which would turn an unbindable mount under the sealed one private:
    the config's own unbindable option is applied again after it."""
    from tests.enclave.conftest import wait_status


    with shared_mount(tmp_path / "shared") as shared:
        (shared / "app" / "sub").mkdir(parents=True)
        (shared / "app" / "trusted.txt").write_text("signed\n")
        b = sim_bundle(tmp_path, ["sh", "-c", "cat /proc/self/mountinfo > /out/mounts"], signing_key, rune.binary,
                       files={"etc/app/trusted.txt": "signed\n"})
        out = tmp_path / "out"
        (out / "sub").mkdir(parents=True)
        c = json.loads((b / "config.json").read_text())
        c["mounts"] += [{"destination": "/etc/app", "type": "bind", "source": str(shared / "app"),
                         "options": ["rbind"]},
                        {"destination": "/etc/app/sub", "type": "bind", "source": str(out / "sub"),
                         "options": ["rbind", "unbindable"]},
                        {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind", "rw"]}]
        (b / "config.json").write_text(json.dumps(c))
        cid = new_id()
        p = rune("create", "--bundle", str(b), cid)
        assert p.returncode == 0, p.stderr
        try:
            assert rune("start", cid).returncode == 0
            assert wait_status(rune, cid, "stopped") == "stopped"
        finally:
            rune("delete", "--force", cid)
    tags = {f[4]: f[6:f.index("-")] for f in (line.split() for line in (out / "mounts").read_text().splitlines())}
    assert tags["/etc/app"] == [] and tags["/etc/app/sub"] == ["unbindable"], tags


def test_the_runelet_cannot_dump_core_whatever_the_config_allows(rune, sim_dir, signing_key, tmp_path):
    """PID 1 holds the enclave's keys: not dumpable, and its core limit 0 (set with prlimit64), even when the
    container's rlimits allow core files."""
    b = sim_bundle(tmp_path, ["sh", "-c", "grep 'core file' /proc/1/limits"], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    c["process"]["rlimits"] = [{"type": "RLIMIT_CORE", "soft": 1 << 20, "hard": 1 << 20}]
    (b / "config.json").write_text(json.dumps(c))
    p = rune("run", "--bundle", str(b), new_id(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-3:] == ["0", "0", "bytes"], p.stdout


def test_a_config_mount_over_a_trusted_file_is_refused_by_the_launch_check(rune, sim_dir, signing_key, tmp_path):
    """The launch check reads the rootfs as the container will see it, its mounts done: the launch child, forked
    before the container's namespaces exist, joins the runelet's mount namespace before it checks (a check in the
    host's would read the signed file under the bind mount and pass)."""
    b = sim_bundle(tmp_path, ["cat", "/etc/trusted.txt"], signing_key, rune.binary, files={"etc/trusted.txt": "signed\n"})
    other = tmp_path / "other.txt"
    other.write_text("not signed\n")
    c = json.loads((b / "config.json").read_text())
    c["mounts"].append({"destination": "/etc/trusted.txt", "type": "bind", "source": str(other), "options": ["bind"]})
    (b / "config.json").write_text(json.dumps(c))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1 and "/etc/trusted.txt" in p.stderr and "not signed" not in p.stdout, (p.stdout, p.stderr)
    assert "does not match its signature" in p.stderr, p.stderr


# the container's program mounts a tmpfs over /proc with a script at each /proc/self/fd/N (where a runtime that
# execs its trampoline by that path, not by its fd, would find one), then waits
def test_a_mount_over_proc_does_not_choose_what_rune_exec_runs(rune, sim_dir, signing_key, tmp_path):
    """A container with CAP_SYS_ADMIN may mount over any path it sees, /proc too: the runelet starts `rune exec`'s
    processes by execveat of the trampoline's memfd, never by a path (a /proc/self/fd/N there would run a script
    of the container's in a child that still is the runelet: with `#!/proc/self/exe`, the host's interpreter)."""
    b = sim_bundle(tmp_path, ["sh", "-c", PROC_OVER], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    for caps in c["process"]["capabilities"].values():
        caps.append("CAP_SYS_ADMIN")
    (b / "config.json").write_text(json.dumps(c))
    cid = new_id()
    assert rune("run", "-d", "--bundle", str(b), cid).returncode == 0
    try:
        pid = rune.state(cid)["pid"]
        wait_proc_over(pid)
        p = rune("exec", cid, "echo", "the measured echo")
        assert (p.returncode, p.stdout) == (0, "the measured echo\n"), (p.stdout, p.stderr)
        assert not os.path.exists(f"/proc/{pid}/root/dev/shm/hijacked")
    finally:
        rune("delete", "--force", cid)


def test_a_seccomp_profile_without_execveat_is_refused_the_runelets_processes(rune, sim_dir, signing_key, tmp_path):
    """The runelet starts the payload and `rune exec`'s processes by execveat only: under a profile that refuses it,
    a path (/proc/self/fd/N, the container's to mount over: the test above) is no way out, and `rune run` fails
    with the sentence naming the profile, leaving nothing behind."""
    b = sim_bundle(tmp_path, ["sh", "-c", PROC_OVER], signing_key, rune.binary)
    c = json.loads((b / "config.json").read_text())
    for caps in c["process"]["capabilities"].values():
        caps.append("CAP_SYS_ADMIN")
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                             "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    (b / "config.json").write_text(json.dumps(c))
    cid = new_id()
    p = rune("run", "-d", "--bundle", str(b), cid)
    if p.returncode == 0:
        rune("delete", "--force", cid)
    assert p.returncode == 1, p.stderr
    assert ("pal_create_process failed: the seccomp profile (linux.seccomp) denies execveat (Operation not "
            "permitted), which the runelet needs to start '/bin/sh' through rune's sealed exec trampoline; allow "
            "execveat in the profile") in p.stderr
    assert not (rune.root / cid).exists() and not cgroup_leftovers(cid)


def test_the_launch_check_resolves_paths_as_rune_does(rune, sim_dir, signing_key, tmp_path, monkeypatch):
    """A relative $INCLAVARE_SIM_DIR names a directory under the init's working directory, the bundle (runc's), for
    the launch check as for the rest: the launch child, which joins the runelet's mount namespace, takes the
    runelet's root and working directory back (so a rune under chroot checks the rootfs inside the chroot)."""
    b = sim_bundle(tmp_path, ["cat", "/etc/trusted.txt"], signing_key, rune.binary, files={"etc/trusted.txt": "signed\n"})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("INCLAVARE_SIM_DIR", "sim-relative")
    for _ in range(2):  # the platform made, then used
        p = rune("run", "--bundle", str(b), new_id(), cwd=work)
        assert (p.returncode, p.stdout) == (0, "signed\n"), p.stderr
    assert (b / "sim-relative" / "platform.json").is_file()
    assert not os.path.exists("/sim-relative") and not (work / "sim-relative").exists()
