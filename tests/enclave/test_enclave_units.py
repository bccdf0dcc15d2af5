"""Enclave configuration detection, the intelSgx probe on fake hosts, and the PAL ABI struct sizes."""

from __future__ import annotations

import os
import stat

import pytest

from inclavare.enclave import config as ec
from inclavare.enclave import pal, probe
from inclavare.errors import RuneError


def cfg(env=(), annotations=None) -> dict:
    return {"process": {"env": ["PATH=/bin", *env]}, "annotations": annotations or {}}


def test_env_wins_over_annotations_and_one_char_is_empty(tmp_path):
    so = tmp_path / "pal.so"
    so.write_bytes(b"")
    c = cfg(["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_ARGS=a,b,c", "ENCLAVE_RUNTIME_LOGLEVEL=d"],
            {"enclave.type": "intelSgx", "enclave.runtime.path": str(so), "enclave.runtime.loglevel": "debug",
             "enclave.runtime.args": "x"})
    e = ec.detect(c)
    assert (e.type, e.runtime_path, e.runtime_args, e.loglevel) == ("sim", str(so), "a b c", "debug")
    assert ec.detect(cfg(["ENCLAVE_TYPE=s"])) is None  # one character: empty, and no annotation either
    assert ec.detect(cfg(["ENCLAVE_TYPE=s"], {"enclave.type": "sim"})).type == "sim"
    assert ec.detect(cfg(["ENCLAVE_RUNTIME_PATH=/x"])) is None


def test_bad_settings_name_the_setting(tmp_path):
    for c, words in [
        (cfg(["ENCLAVE_TYPE=foo"]), "unknown enclave type 'foo'"),
        (cfg(["ENCLAVE_TYPE=Jailhouse"]), "not supported by this rune"),
        (cfg(["ENCLAVE_TYPE=intelSgx"]), "needs an enclave runtime"),
        (cfg(["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=/no/such.so"]), r"/no/such.so \(ENCLAVE_RUNTIME_PATH"),
        (cfg(["ENCLAVE_TYPE=sim", "ENCLAVE_RA_TYPE=epidLinkable"]), "ENCLAVE_RA_EPID_SPID"),
    ]:
        with pytest.raises(RuneError, match=words):
            ec.detect(c)
    e = ec.detect(cfg(["ENCLAVE_TYPE=sim", "ENCLAVE_RA_TYPE=ecdsa", "ENCLAVE_RUNTIME_LOGLEVEL=loud"]))
    assert (e.ra_type, e.loglevel) == ("ecdsa", "info")
    e = ec.detect(cfg(["ENCLAVE_TYPE=sim", "ENCLAVE_RA_TYPE=epidUnlinkable", "ENCLAVE_RA_EPID_SPID=ab",
                       "ENCLAVE_RA_EPID_SUB_KEY=secret"]))
    assert e.record()["ra_epid_subscription_key_set"] is True and "secret" not in str(e.record())


def test_strip_env():
    c = cfg(["ENCLAVE_TYPE=sim", "A=1", "ENCLAVE_RUNTIME_ARGS=x", "ENCLAVE_OTHER=kept"])
    ec.strip_env(c)
    assert c["process"]["env"] == ["PATH=/bin", "A=1", "ENCLAVE_OTHER=kept"]


def test_probe_without_sgx_names_the_failed_probe(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu vme sse2 avx\n")
    with pytest.raises(RuneError, match="CPUID probe failed.*ENCLAVE_TYPE=sim"):
        probe.probe_sgx(str(cpuinfo), str(tmp_path))
    cpuinfo.write_text("processor : 0\nflags : fpu sgx sgx_lc\n")
    with pytest.raises(RuneError, match="device probe failed.*/dev/sgx_enclave.*ENCLAVE_TYPE=sim"):
        probe.probe_sgx(str(cpuinfo), str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_probe_with_fake_sgx_devices(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags : fpu sgx\n")
    (tmp_path / "dev" / "sgx").mkdir(parents=True)
    os.mknod(tmp_path / "dev" / "sgx_enclave", 0o666 | stat.S_IFCHR, os.makedev(10, 125))
    os.mknod(tmp_path / "dev" / "sgx_provision", 0o660 | stat.S_IFCHR, os.makedev(10, 126))
    (tmp_path / "dev" / "sgx" / "enclave").symlink_to("../sgx_enclave")  # a symlink is accepted
    (tmp_path / "var" / "run" / "aesmd").mkdir(parents=True)
    host = probe.probe_sgx(str(cpuinfo), str(tmp_path))
    assert [d["path"] for d in host.devices] == ["/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/sgx_provision"]
    assert host.rules[0] == {"allow": True, "type": "c", "major": 10, "minor": 125, "access": "rwm"}
    assert [m["destination"] for m in host.mounts] == ["/var/run/aesmd"]
    config = {"linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}, "mounts": []}
    probe.apply(config, host)
    assert len(config["linux"]["devices"]) == 3 and len(config["linux"]["resources"]["devices"]) == 4
    assert config["mounts"][0]["options"] == ["rbind", "rprivate"]


def test_sim_enclave_dir_matches_the_tee():
    from inclavare.enclave import sim_runtime
    from inclavare.tee.sim import image

    assert sim_runtime.ENCLAVE_DIR == image.ENCLAVE_DIR


def test_pal_struct_sizes():
    import _ctypes

    for cls, size in pal.SIZES.items():
        assert _ctypes.sizeof(cls) == size, cls.__name__
    assert pal.PalExecArgs.exit_value.offset == 8
    assert pal.PalAttrV3.fd.offset == 16 and pal.PalAttrV3.addr.offset == 24


def test_a_pal_library_missing_a_function_of_its_version_is_refused_by_name(tmp_path):
    """pal.load through _ctypes: a v2 library without pal_kill, one with a v3 version but no pal_get_local_report,
    one without pal_destroy; each refusal names the library and the function."""
    import subprocess

    cases = {
        "v2-no-kill": ("int pal_get_version(void) { return 2; } int pal_create_process(void *a) { return 0; }", "says PAL API v2 but has no pal_kill function"),
        "v3-no-report": ("int pal_get_version(void) { return 3; } int pal_create_process(void *a) { return 0; } "
                         "int pal_kill(int p, int s) { return 0; }",
                         "says PAL API v3 but has no pal_get_local_report function"),
        "no-destroy": (None, "is not a PAL library: it has no pal_destroy function"),
    }
    for name, (extra, sentence) in cases.items():
        src = tmp_path / f"{name}.c"
        body = "int pal_init(void *a) { return 0; } int pal_exec(void *a) { return 0; }\n"
        body += "int pal_destroy(void) { return 0; }\n" if extra is not None else ""
        src.write_text(body + (extra or ""))
        lib = tmp_path / f"{name}.so"
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        with pytest.raises(RuneError) as e:
            pal.load(str(lib))
        assert str(e.value) == f"enclave runtime {lib} {sentence}", name
    with pytest.raises(RuneError, match=r"enclave runtime /nonexistent\.so cannot be loaded: "):
        pal.load("/nonexistent.so")


def test_spec_enclave_template(tmp_path, rune_bin):
    import json
    import subprocess

    p = subprocess.run([rune_bin, "spec", "--enclave", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    c = json.loads((tmp_path / "config.json").read_text())
    assert c["annotations"]["enclave.type"] == "sim" and "enclave.runtime.path" in c["annotations"]
    assert c["process"]["cwd"] == "/var/run/rune" and c["hostname"] == "rune"


def _signed_sim_bundle(tmp_path, monkeypatch):  # noqa: ANN001, ANN202
    from cryptography.hazmat.primitives import serialization
    from tests.tee.conftest import _make_bundle

    from inclavare.linux import syscalls
    from inclavare.tee.sgx.sigstruct import generate_signing_key
    from inclavare.tee.sim import bundle

    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(tmp_path / "sim"))
    key = tmp_path / "k.pem"
    key.write_bytes(generate_signing_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    b = _make_bundle(tmp_path)
    bundle.sign_bundle(b, key)
    monkeypatch.setattr(syscalls, "mount", lambda *a, **k: None)  # seal_root's mounts: not on this host's root
    return b, __import__("json").loads((b / "config.json").read_text())


def test_sim_load_refuses_a_file_swapped_between_measuring_and_mounting(tmp_path, monkeypatch):
    from inclavare.enclave import sim_runtime
    from inclavare.linux import syscalls

    b, config = _signed_sim_bundle(tmp_path, monkeypatch)
    swapped = []

    def mount(src, target, fstype, flags, data=None):  # noqa: ANN001, ANN202 - the attacker wins the race
        if not swapped:
            (b / "rootfs" / "lib" / "data.bin").write_bytes(b"swapped")
            swapped.append(target)

    monkeypatch.setattr(syscalls, "mount", mount)
    pal = sim_runtime.SimPal(str(b / "rootfs"), config, str(tmp_path / "sim"))
    with pytest.raises(RuneError, match="does not match its signature|changed while"):
        pal.load()  # the files are mounted read-only first and measured after, in the launch child
    assert (b / "rootfs" / "lib" / "data.bin").read_bytes() == b"swapped"  # the swap happened (in the child)


@pytest.mark.parametrize("pidfd", [True, False], ids=["joins", "falls-back"])
def test_the_early_launch_child_checks_or_falls_back_to_a_fork(tmp_path, monkeypatch, pidfd):
    """The launch child forked before the container's namespaces (sim_runtime.Launcher.early) joins the runelet's
    mount namespace through a pidfd; where it cannot (no setns through a pidfd before Linux 5.8; here os.pidfd_open
    taken away), it says so and the runelet forks one that checks: the launch succeeds either way, and no child is
    left unreaped."""
    from inclavare.enclave import sim_runtime

    b, config = _signed_sim_bundle(tmp_path, monkeypatch)
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    pal = sim_runtime.SimPal(str(b / "rootfs"), config, str(tmp_path / "sim"))
    pal.launcher = sim_runtime.Launcher.early(None)
    early = pal.launcher.pid
    pal.load()
    assert pal.evidence is not None and pal.trusted
    child = pal.launch_child
    assert (child == early) is pidfd  # the fallback's own child otherwise
    pal.reap_launch_child()
    for pid in {early, child}:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_early_launch_childs_head_start_is_taken_only_for_the_same_files(tmp_path, monkeypatch):
    """What the early launch child read while it waited (sim_runtime.Prepared: the manifest parsed, the measurement
    cache loaded) is used only when the manifest and SIGSTRUCT the sealed root names are the very files read: any
    change of either (even the same bytes written again, or an mtime restored) and the launch reads them again."""
    from inclavare.enclave import sim_runtime

    b, _config = _signed_sim_bundle(tmp_path, monkeypatch)
    rootfs, sim = str(b / "rootfs"), str(tmp_path / "sim")
    d = b / "rootfs" / ".inclavare" / "enclave"
    early = sim_runtime.Prepared(rootfs, sim)
    signed, cache = early.take(rootfs, sim)
    assert signed is not None and signed[0].entrypoints and cache is not None
    assert early.take(rootfs + "/", sim) == (None, None) and early.take(rootfs, None) == (None, None)

    def rewritten(name: str) -> None:
        st = (d / name).stat()
        (d / name).write_bytes((d / name).read_bytes())
        os.utime(d / name, ns=(st.st_atime_ns, st.st_mtime_ns))

    def renamed_over(name: str) -> None:
        (d / "copy").write_bytes((d / name).read_bytes())
        os.rename(d / "copy", d / name)

    for change in (rewritten, renamed_over):
        for name in ("manifest.json", "sigstruct.bin"):
            early = sim_runtime.Prepared(rootfs, sim)
            assert early.take(rootfs, sim)[0] is not None
            change(name)
            assert early.take(rootfs, sim) == (None, None), (change.__name__, name)
    (d / "sigstruct.bin").unlink()
    assert sim_runtime.Prepared(rootfs, sim).take(rootfs, sim) == (None, None)


def test_an_early_launch_child_checks_the_manifest_the_sealed_root_names(tmp_path, monkeypatch):
    """A manifest changed after the early child read it (here: no longer what the SIGSTRUCT signed) is read again
    and refused, not the one read before."""
    import time

    from inclavare.enclave import sim_runtime

    b, config = _signed_sim_bundle(tmp_path, monkeypatch)
    rootfs, sim = str(b / "rootfs"), str(tmp_path / "sim")
    pal = sim_runtime.SimPal(rootfs, config, sim)
    pal.launcher = sim_runtime.Launcher.early(None, rootfs, sim)
    wchan = f"/proc/{pal.launcher.pid}/wchan"
    for _ in range(500):  # until it waits for its request, its head start read
        with open(wchan) as f:
            if "unix" in f.read():
                break
        time.sleep(0.01)
    else:
        pytest.skip("cannot tell when the early launch child waits (no unix socket wait in /proc/PID/wchan)")
    manifest = b / "rootfs" / ".inclavare" / "enclave" / "manifest.json"
    doc = __import__("json").loads(manifest.read_text())
    doc["enclave"]["entrypoints"].append({"path": "/bin/sh"})
    manifest.write_text(__import__("json").dumps(doc))
    with pytest.raises(RuneError, match="manifest .* changed since signing"):
        pal.load()
    pal.reap_launch_child()


def test_a_launch_child_that_cannot_be_forked_fails_the_load_with_the_reason(tmp_path, monkeypatch):
    from inclavare.enclave import sim_runtime

    b, config = _signed_sim_bundle(tmp_path, monkeypatch)

    def fork():  # noqa: ANN202
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fork)
    assert sim_runtime.Launcher.early(None) is None  # the load tries again
    pal = sim_runtime.SimPal(str(b / "rootfs"), config, str(tmp_path / "sim"))
    with pytest.raises(RuneError, match="launch child cannot be forked: Resource temporarily unavailable"):
        pal.load()


def test_an_early_launch_child_whose_runelet_gives_up_exits(tmp_path):
    """A create that fails before the load (a mount refused, say) closes the request pipe: the child ends."""
    from inclavare.enclave import sim_runtime

    launcher = sim_runtime.Launcher.early(None)
    launcher.sock.close()
    _, status = os.waitpid(launcher.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_broker_name_is_resolved_as_the_container_resolves_it(tmp_path):
    """HOST:PORT: the container's /etc/hosts (a pod's hostAliases) decides, not the node's; the process gets its own
    root back. Addresses, unix: paths and names the container cannot resolve are left as they are. In a child
    process: the lookup chroots."""
    import subprocess
    import sys

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("192.0.2.77 verdictd.inclavare-system.svc\n2001:db8::7 verdictd-v6\n")
    (tmp_path / "etc" / "resolv.conf").write_text("")  # no DNS server: only the container's files
    code = f"""
import os
from inclavare.enclave.provision import resolve_in
root = {str(tmp_path)!r}
for b in ("verdictd.inclavare-system.svc:1234", "verdictd-v6:1234", "no-such-name.invalid:1", "10.0.0.1:5",
          "[2001:db8::1]:5", "unix:/run/verdictd/verdictd.sock"):
    print(resolve_in(root, b))
print(os.path.exists("/proc/self/status"), os.path.exists(root))
"""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {src!r})\n{code}"],
                       capture_output=True, text=True, check=True)
    assert p.stdout.splitlines() == ["192.0.2.77:1234", "[2001:db8::7]:1234", "no-such-name.invalid:1", "10.0.0.1:5",
                                     "[2001:db8::1]:5", "unix:/run/verdictd/verdictd.sock", "True True"], p


def test_fds_sent_to_the_runelet_or_rune_arrive_close_on_exec_at_once():
    """agent.recv_msg (the runelet serves `rune exec` connections in threads) and console.recv_fds take the fds
    with MSG_CMSG_CLOEXEC: close-on-exec as they arrive, not set afterwards, when a payload forked by another thread
    in between would inherit another exec's stdio."""
    import fcntl
    import socket

    from inclavare.enclave import agent
    from inclavare.linux import console

    class Recorder:
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.flags = sock, []

        def recvmsg(self, *args: int):  # noqa: ANN202
            self.flags.append(args[2] if len(args) > 2 else 0)
            return self.sock.recvmsg(*args)

        def recv(self, n: int) -> bytes:
            return self.sock.recv(n)

    for receive in (lambda s: agent.recv_msg(s)[1], lambda s: console.recv_fds(s)[1]):
        a, b = socket.socketpair()
        r, w = os.pipe()
        try:
            agent.send_msg(a, {"type": "exec"}, [r])
            rec = Recorder(b)
            fds = receive(rec)
            assert len(fds) == 1 and all(f & 0x40000000 for f in rec.flags), rec.flags
            assert fcntl.fcntl(fds[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            os.close(fds[0])
        finally:
            for fd in (r, w):
                os.close(fd)
            a.close()
            b.close()


def test_an_epm_that_trickles_its_answer_is_given_up_on_within_one_timeout():
    """A review: the timeout applied to each read, so an answer sent a byte every 0.5 s held `rune create` for a
    minute. One deadline covers the whole answer."""
    import socket
    import threading
    import time

    from inclavare.enclave import epm_client

    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        theirs.recv(4096)
        for b in b'{"ok": true, "padding": "' + b"x" * 100:
            if stop.wait(0.1):
                return
            try:
                theirs.send(bytes([b]))
            except OSError:
                return

    t = threading.Thread(target=trickle)
    t.start()
    ours.settimeout(0.5)
    session = epm_client.Session(ours, "trickle.sock")
    start = time.monotonic()
    try:
        with pytest.raises(epm_client.EpmError, match="did not answer Healthz within 0.5 s"):
            session.call({"op": "Healthz"})
        assert time.monotonic() - start < 1.5
        assert ours.gettimeout() == 0.5
    finally:
        stop.set()
        t.join()
        ours.close()
        theirs.close()
