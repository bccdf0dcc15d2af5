"""A signed sim enclave in a container with a user namespace (Podman --userns, Kubernetes user namespaces): the
launch reads the sim platform directory (root-only: keys, secret, quote template, launch policy, measurement cache)
in the host's namespaces, before the init enters the user namespace; the launch check itself runs in the
container's view (its uids), and /dev/attestation serves quotes inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tests.conftest import build_rootfs, cgroup_leftovers, default_config, new_id

# the container's root mapped to an unprivileged host range, as tests/runtime/test_config_linux.py maps it
UID, GID = 100000, 200000
MAPS = {"uidMappings": [{"containerID": 0, "hostID": UID, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": GID, "size": 65536}]}  # fmt: skip


@pytest.fixture
def base():  # noqa: ANN201
    """A directory the user namespace's root can reach (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="rune-sim-userns-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _shift(root: Path) -> None:
    """Every file of `root` owned by the user namespace's range (uid u -> UID + u), as Podman chowns an image's
    layers for --userns: inside, the container sees the owners the image was signed with."""
    for top, dirs, files in os.walk(root, topdown=False):
        for name in [*dirs, *files]:
            p = os.path.join(top, name)
            st = os.lstat(p)
            os.lchown(p, UID + st.st_uid, GID + st.st_gid)
    st = os.lstat(root)
    os.lchown(root, UID + st.st_uid, GID + st.st_gid)


def userns_sim_bundle(base: Path, args: list[str], key: Path, rune_bin: str, edit=None, pal: str | None = None,
                      userns: bool = True, shift: bool = True) -> Path:  # noqa: ANN001
    b = base / f"simu-{new_id()}"
    (b / "rootfs").mkdir(parents=True)
    build_rootfs(b / "rootfs", shutil.which("busybox") or "/bin/busybox")
    (b / "rootfs").chmod(0o755)
    c = default_config(b / "rootfs", args)
    c["root"]["readonly"] = True
    if userns:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"].update(MAPS)
    if pal:
        c["process"]["env"] += ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={pal}"]
    if edit is not None:
        edit(c)
    (b / "config.json").write_text(json.dumps(c))
    sgx_tools = str(Path(rune_bin).with_name("sgx-tools"))
    p = subprocess.run([sgx_tools, "sign-bundle", "--key", str(key), str(b)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if userns and shift:
        _shift(b / "rootfs")
    return b


QUOTE = ("cat /proc/self/uid_map; printf userns-report-data | dd of=/dev/attestation/user_report_data 2>/dev/null; "
         "cat /dev/attestation/quote > /dev/shm/quote; wc -c < /dev/attestation/report; cat /dev/shm/quote")


def test_a_signed_sim_enclave_launches_in_a_user_namespace_and_quotes(rune, sim_dir, signing_key, base):
    from inclavare.tee.sgx.quote import Quote
    from inclavare.tee.sim import qe
    from inclavare.tee.sim.platform import load_platform

    b = userns_sim_bundle(base, ["sh", "-c", QUOTE], signing_key, rune.binary)
    annotations = json.loads((b / "config.json").read_text())["annotations"]
    p = rune("run", "--bundle", str(b), new_id(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    assert p.returncode == 0, p.stderr
    uid_map, report_size, raw = p.stdout.split(b"\n", 2)
    assert uid_map.split() == [b"0", str(UID).encode(), b"65536"]  # really in the user namespace
    assert report_size == b"432"
    quote = Quote.from_bytes(raw)
    assert quote.report_body.report_data == b"userns-report-data".ljust(64, b"\0")
    assert quote.report_body.mr_enclave.hex() == annotations["enclave.sim.mrenclave"]
    assert qe.verify_sim_quote(raw, load_platform(str(sim_dir)).root_ca).simulated


def _fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def test_no_fd_of_the_platform_directory_reaches_the_containers_processes(rune, sim_dir, signing_key, base,
                                                                          tmp_path):
    b = userns_sim_bundle(base, ["sleep", "60"], signing_key, rune.binary)
    cid = new_id()
    p = rune("run", "-d", "--bundle", str(b), cid)
    assert p.returncode == 0, p.stderr
    try:
        runelet = rune.state(cid)["pid"]
        children = Path(f"/proc/{runelet}/task/{runelet}/children").read_text().split()
        assert len(children) == 1, children  # the payload; the launch child was reaped
        payload = int(children[0])
        assert Path(f"/proc/{payload}/comm").read_text().strip() == "sleep"
        for pid in (runelet, payload):
            held = [t for t in _fds(pid) if t.startswith((str(sim_dir), str(rune.root)))]  # rune.root: PENDING
            assert held == [], (pid, held)
        # the payload cannot reach the platform directory by its path either (its root is the container's)
        p = rune("exec", cid, "sh", "-c", f"ls {sim_dir} 2>&1; cat /proc/self/status | grep ^Uid")
        assert "No such file or directory" in p.stdout, p.stdout
        p = rune("attest", "--isRA", "--reportFile", str(tmp_path / "q.bin"), cid)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "q.bin").stat().st_size > 1000
    finally:
        rune("delete", "--force", cid)


@pytest.mark.parametrize("through", ["the built-in sim runtime", "a PAL"])
def test_the_host_launch_policy_holds_in_a_user_namespace(rune, sim_dir, signing_key, base, pal_libs, through):
    """launch-policy.json is in the platform directory, out of the user namespace's reach: not reading it there
    must not mean the default policy (any signer)."""
    pal = pal_libs[2] if through == "a PAL" else None
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary, pal=pal)
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 0, p.stderr
    sim_dir.mkdir(mode=0o700, exist_ok=True)  # a PAL's launch makes no platform identity
    (sim_dir / "launch-policy.json").write_text(json.dumps({"allowed_mrsigners": ["00" * 32]}))
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1, p.stderr
    assert "launch policy" in p.stderr and str(sim_dir / "launch-policy.json") in p.stderr, p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


@pytest.mark.parametrize("through", ["the built-in sim runtime", "a PAL"])
def test_an_image_signed_only_as_the_container_sees_it_is_refused_in_a_user_namespace(rune, sim_dir, signing_key,
                                                                                      base, pal_libs, through):
    """A review: the signed image bound in by config.json mounts (none on the host path of the rootfs) made no host
    side read of the platform directory, and the launch in the user namespace, unable to see launch-policy.json,
    took the default policy. The policy that cannot be read is a refusal, and a PAL's launch says why."""
    pal = pal_libs[2] if through == "a PAL" else None
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary, pal=pal)
    sim_dir.mkdir(mode=0o700, exist_ok=True)
    (sim_dir / "launch-policy.json").write_text(json.dumps({"allowed_mrsigners": ["00" * 32]}))
    meta = b / "meta"
    meta.mkdir(mode=0o755)
    shutil.move(str(b / "rootfs/.inclavare"), str(meta / "inclavare"))
    (b / "rootfs/.inclavare").mkdir()
    c = json.loads((b / "config.json").read_text())
    c["annotations"].pop("enclave.sim.mrenclave", None)
    c["mounts"].append({"destination": "/.inclavare", "type": "bind", "source": str(meta / "inclavare"),
                        "options": ["rbind", "ro"]})
    (b / "config.json").write_text(json.dumps(c))
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1, p.stderr
    want = ("signed as the container sees its root, not on the host path of config.json root.path" if pal else
            f"the launch policy {sim_dir / 'launch-policy.json'} cannot be read: Permission denied")
    assert want in p.stderr, p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []


def test_a_pal_library_never_holds_an_fd_of_the_platform_or_the_state_directory(rune, sim_dir, signing_key, base,
                                                                                  pal_libs, tmp_path):
    """A review: the pending measurements (sim_runtime.HostSide) were still open in PID 1 when the PAL library was
    dlopen'ed, as the container's root: its constructor rewrote them, and rune create merged what it wrote into the
    host's cache. A constructor of a library built on the reference PAL lists PID 1's fds at its dlopen."""
    log = base / "fds.log"
    log.touch()
    log.chmod(0o666)
    src = tmp_path / "lister.c"
    src.write_text(f"""
#include <dirent.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void list_fds(void)
{{
    FILE *f = fopen("{log}", "a");
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char p[64], t[4096];
    while (f && d && (e = readdir(d))) {{
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        if (n > 0) {{ t[n] = 0; fprintf(f, "%s\\n", t); }}
    }}
    fprintf(f, "end\\n");
    fclose(f);
}}
""")
    lib = base / "lister-pal.so"  # where the user namespace's root can read it
    subprocess.run(["cc", "-shared", "-fPIC", "-DPAL_VERSION=2", "-o", str(lib),
                    str(Path(__file__).parents[2] / "pal" / "skeleton.c"), str(src), "-lpthread"], check=True)
    lib.chmod(0o755)
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary, pal=str(lib))
    sim_dir.mkdir(mode=0o700, exist_ok=True)  # the measurement cache's (a PAL's launch makes no platform identity)
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 0, p.stderr
    fds = log.read_text().splitlines()
    assert fds and fds[-1] == "end", fds
    assert not [t for t in fds if "measurements" in t or str(sim_dir) in t or str(rune.root) in t], fds


def _passed(rune, b: Path, log: Path, runs: int = 2) -> list[str]:  # noqa: ANN001
    for _ in range(runs):
        p = rune("--debug", "--log", str(log), "run", "--bundle", str(b), new_id())
        assert p.returncode == 0, p.stderr
    lines = [line for line in log.read_text().splitlines() if "sim launch check passed" in line]
    assert len(lines) == runs, log.read_text()
    return lines


def _log(base: Path) -> Path:
    log = base / "rune.log"  # where the launch child, in the user namespace, can write its debug line
    log.touch(0o666)
    log.chmod(0o666)
    return log


def _trusted(b: Path) -> int:
    return len(json.loads((b / "rootfs/.inclavare/enclave/manifest.json").read_text())["enclave"]["trusted_files"])


def test_files_owned_by_the_mapped_range_are_hashed_at_every_launch(rune, sim_dir, signing_key, base):
    """An image chowned into the user namespace's range is owned by an unprivileged host user, who may write it
    (a write through a shared mapping does not always move ctime): its files are never cached."""
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary)
    log = _log(base)
    time.sleep(0.2)  # older than the cache's margin (measure_cache.MARGIN_NS): it would be cached if it could be
    n = _trusted(b)
    assert all(f": 0 of {n} trusted files unchanged since measured" in line for line in _passed(rune, b, log))
    assert not [p for p in rune.root.rglob("measurements.pending")]


def test_the_measurement_cache_serves_a_user_namespace_launch(rune, sim_dir, signing_key, base):
    """With the host's root mapped into the user namespace (container uid 0 is host uid 0) and the image root's:
    its files are cached, written back through the host (merge_pending)."""
    def with_root(c: dict) -> None:
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1},
                                     {"containerID": 1, "hostID": UID + 1, "size": 65535}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1},
                                     {"containerID": 1, "hostID": GID + 1, "size": 65535}]

    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary, edit=with_root, shift=False)
    log = _log(base)
    time.sleep(0.2)  # older than the cache's margin (measure_cache.MARGIN_NS)
    lines = _passed(rune, b, log)
    n = _trusted(b)
    assert f": 0 of {n} trusted files unchanged since measured" in lines[0], lines
    assert f": {n} of {n} trusted files unchanged since measured" in lines[1], lines  # written back by the host
    assert f"{n} digests merged into the host's measurement cache" in log.read_text()
    assert not [p for p in rune.root.rglob("measurements.pending")]


def test_a_platform_directory_that_cannot_be_made_is_one_sentence_and_leaves_nothing(rune, signing_key, base,
                                                                                      monkeypatch):
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary)
    bad = "/etc/hostname/sim"  # under a regular file: never a directory
    monkeypatch.setenv("INCLAVARE_SIM_DIR", bad)
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot create the sim platform identity in {bad}" in lines[0], p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    assert str(b / "rootfs") not in Path("/proc/self/mountinfo").read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert cid not in ps


def test_an_image_whose_owners_the_mapping_leaves_out_is_one_sentence_and_leaves_nothing(rune, sim_dir, signing_key,
                                                                                         base):
    """Signed on the host (uid 0) and not chowned into the mapped range: inside, its files show the overflow uid."""
    b = userns_sim_bundle(base, ["true"], signing_key, rune.binary, shift=False)
    cid = new_id()
    p = rune("run", "--bundle", str(b), cid)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "(uid 0 when signed) is not mapped in the container's user namespace (it shows as " \
        "the overflow uid 65534); map it in config.json linux.uidMappings" in lines[0], p.stderr
    assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == []
    assert str(b / "rootfs") not in Path("/proc/self/mountinfo").read_text()
