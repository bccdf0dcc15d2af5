"""Bad input: each case exits 1 with one sentence on stderr naming the field or path, the same sentence in the
--log file (JSON lines or text), and leaves nothing behind: no state dir, cgroup, process, fifo or mount."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from tests.conftest import cgroup_leftovers, new_id
from tests.runtime.helpers import alive_with, host_mountpoints


def _userns(c: dict, **maps) -> None:
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"].update(maps)


ONE = [{"containerID": 0, "hostID": 100000, "size": 1}]

# name -> (edit of the config or raw config bytes, extra create flags, pattern the sentence must match)
CASES = {
    "missing bundle": ("NO-BUNDLE", (), r"^bundle \S+/nope: no such directory$"),
    "missing config.json": ("NO-CONFIG", (), r"^\S+/config\.json: no such file: the bundle has no config\.json$"),
    "config.json is a directory": ("DIR", (), r"^\S+/config\.json: is a directory, not a regular file$"),
    "invalid utf-8": (b'{"ociVersion": "\xff"}', (), r"^\S+/config\.json: not valid JSON: invalid UTF-8 at byte 16$"),
    "invalid json": (b'{"ociVersion": ', (), r"^\S+/config\.json: not valid JSON: Expecting value: line 1 column 16"),
    "not an object": (b"[1]", (), r"^\S+/config\.json: must hold a JSON object, got an array$"),
    "args a string": (lambda c: c["process"].update(args="sh"), (),
                      r"^\S+/config\.json: process\.args: must be an array, got a string$"),
    "readonly a string": (lambda c: c["root"].update(readonly="yes"), (),
                          r"^\S+/config\.json: root\.readonly: must be a boolean, got a string$"),
    "namespaces not a list": (lambda c: c["linux"].update(namespaces={"type": "pid"}), (),
                              r"^\S+/config\.json: linux\.namespaces: must be an array, got an object$"),
    "unknown namespace": (lambda c: c["linux"]["namespaces"].append({"type": "foo"}), (),
                          r"^\S+/config\.json: linux\.namespaces\[5\]\.type: unknown namespace type 'foo'"),
    "duplicate namespace": (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), (),
                            r"^\S+/config\.json: linux\.namespaces\[5\]\.type: namespace 'pid' is listed twice$"),
    "namespace path missing": (lambda c: c["linux"]["namespaces"].append({"type": "user", "path": "/no/ns"}), (),
                               r"^\S+/config\.json: linux\.namespaces\[5\]\.path: /no/ns does not exist$"),
    "mount without destination": (lambda c: c["mounts"].append({"type": "tmpfs", "source": "tmpfs"}), (),
                                  r"^\S+/config\.json: mounts\[7\]\.destination: is required$"),
    "bind of a missing source": (
        lambda c: c["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/no/src", "options": ["bind"]}),
        (), r"^config\.json mounts\[7\]: cannot mount /no/src on /mnt: No such file or directory$"),
    "unknown fs type": (lambda c: c["mounts"].append({"destination": "/mnt", "type": "nosuchfs", "source": "x"}), (),
                        r"^config\.json mounts\[7\]: cannot mount x on /mnt: .*No such device$"),
    "mapping of size 0": (lambda c: _userns(c, uidMappings=[dict(ONE[0], size=0)], gidMappings=ONE), (),
                          r"^\S+/config\.json: linux\.uidMappings\[0\]\.size: must be greater than zero$"),
    "mappings without user ns": (lambda c: c["linux"].update(uidMappings=ONE), (),
                                 r"^\S+/config\.json: linux\.uidMappings: mappings need a user namespace"),
    "user ns without mappings": (lambda c: _userns(c), (),
                                 r"^\S+/config\.json: linux\.uidMappings: a new user namespace needs mappings$"),
    "failing hook": (lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/false"}]}), (),
                     r"^hooks\.createRuntime\[0\]: /bin/false exited with status 1$"),
    "hook path relative": (lambda c: c.update(hooks={"prestart": [{"path": "false"}]}), (),
                           r"^\S+/config\.json: hooks\.prestart\[0\]\.path: 'false' must be an absolute path$"),
    "missing binary": (lambda c: c["process"].update(args=["/bin/nope"]), (),
                       r'^config\.json process\.args\[0\]: exec: "/bin/nope": no such file or directory in the container$'),
    "binary not in PATH": (lambda c: c["process"].update(args=["nope"]), (),
                           r'^config\.json process\.args\[0\]: exec: "nope": executable file not found in \$PATH'),
    "console socket without terminal": (None, ("--console-socket", "/no/sock"),
                                        r"^--console-socket was given but process\.terminal is false in config\.json$"),
    "terminal without console socket": (lambda c: c["process"].update(terminal=True), (),
                                        r"^process\.terminal is true: pass --console-socket"),
    "intel rdt": (lambda c: c["linux"].update(intelRdt={"closID": "x"}), (),
                  r"^\S+/config\.json: linux\.intelRdt: Intel RDT is not supported by this runtime$"),
    "cwd relative": (lambda c: c["process"].update(cwd="tmp"), (),
                     r"^\S+/config\.json: process\.cwd: 'tmp' must be an absolute path$"),
    "unsupported ociVersion": (lambda c: c.update(ociVersion="2.0.0"), (), r"^\S+/config\.json: ociVersion: '2\.0\.0'"),
    # issue 17: each of these gave Python's words, a traceback, a hang, a false success or a leftover before
    "NUL in a mount destination": (lambda c: c["mounts"][0].update(destination="/pr\0oc"), (),
                                   r"^\S+/config\.json: mounts\[0\]\.destination: must not contain a NUL byte"),
    "lone surrogate in hostname": (lambda c: c.update(hostname="\ud800"), (),
                                   r"^\S+/config\.json: hostname: is not valid Unicode: it holds the lone surrogate "
                                   r"'\\ud800'$"),
    "env entry without a name": (lambda c: c["process"]["env"].append("=x"), (),
                                 r"^\S+/config\.json: process\.env\[2\]: '=x' is not of the form NAME=VALUE$"),
    "NUL in an env value": (lambda c: c["process"]["env"].append("A=\0"), (),
                            r"^\S+/config\.json: process\.env\[2\]: must not contain a NUL byte"),
    "cwd beyond PATH_MAX": (lambda c: c["process"].update(cwd="/a" * 2100), (),
                            r"^\S+/config\.json: process\.cwd: is 4200 bytes long, more than the 4095 allowed$"),
    "devices a number": (lambda c: c["linux"]["resources"].update(devices=1), (),
                         r"^\S+/config\.json: linux\.resources\.devices: must be an array, got 1$"),
    "devices a boolean": (lambda c: c["linux"]["resources"].update(devices=True), (),
                          r"^\S+/config\.json: linux\.resources\.devices: must be an array, got a boolean$"),
    "devices a float": (lambda c: c["linux"]["resources"].update(devices=1.5), (),
                        r"^\S+/config\.json: linux\.resources\.devices: must be an array, got 1\.5$"),
    "NUL in cgroupsPath": (lambda c: c["linux"].update(cgroupsPath="/a\0b"), (),
                           r"^\S+/config\.json: linux\.cgroupsPath: must not contain a NUL byte"),
    "cgroupsPath a hierarchy root": (lambda c: c["linux"].update(cgroupsPath="//"), (),
                                     r"^\S+/config\.json: linux\.cgroupsPath: '//' names a hierarchy root"),
    "pids.limit a string": (lambda c: c["linux"]["resources"].update(pids={"limit": "many"}), (),
                            r"^\S+/config\.json: linux\.resources\.pids\.limit: must be an integer, got a string$"),
    "weightDevice without major": (lambda c: c["linux"]["resources"].update(blockIO={"weightDevice": [{"minor": 0}]}),
                                   (), r"^\S+/config\.json: linux\.resources\.blockIO\.weightDevice\[0\]\.major: "
                                       r"is required$"),
    "hook timeout beyond the bound": (
        lambda c: c.update(hooks={"poststop": [{"path": "/bin/true", "timeout": 2**63}]}), (),
        r"^\S+/config\.json: hooks\.poststop\[0\]\.timeout: 9223372036854775808 is out of range \(1 to 2147483647\)$"),
    "hostname over 64 bytes": (lambda c: c.update(hostname="a" * 65), (),
                               r"^\S+/config\.json: hostname: is 65 bytes long, more than the 64 allowed$"),
    "uid beyond uid_t": (lambda c: c["process"]["user"].update(uid=2**32), (),
                         r"^\S+/config\.json: process\.user\.uid: 4294967296 is out of range \(0 to 4294967294\)$"),
    "uid a float": (lambda c: c["process"]["user"].update(uid=1.0), (),
                    r"^\S+/config\.json: process\.user\.uid: must be an integer, got 1\.0$"),
    "additionalGids holding null": (lambda c: c["process"]["user"].update(additionalGids=[None]), (),
                                    r"^\S+/config\.json: process\.user\.additionalGids\[0\]: must be an integer, got null$"),
    "device major beyond dev_t": (
        lambda c: c["linux"].update(devices=[{"type": "c", "path": "/dev/x", "major": 4096, "minor": 0}]), (),
        r"^\S+/config\.json: linux\.devices\[0\]\.major: 4096 is out of range \(0 to 4095\)$"),
    "unknown capability": (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"), (),
                           r"^\S+/config\.json: process\.capabilities\.bounding\[3\]: unknown capability 'CAP_NOPE'$"),
    "annotation key with a newline": (lambda c: c.update(annotations={"a\nb": "\0"}), (),
                                      r'^\S+/config\.json: annotations\["a\\nb"\]: must not contain a NUL byte'),
    "CPU list beyond any kernel": (lambda c: c["process"].update(execCPUAffinity={"initial": "0-99999999999"}), (),
                                   r"^\S+/config\.json: process\.execCPUAffinity\.initial: '0-99999999999' is not a "
                                   r"CPU list"),
    "nested a thousand levels": (b'{"ociVersion": "1.0.2", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", (),
                                 r"^\S+/config\.json: not accepted: arrays and objects are nested more than 64 levels deep$"),
    "config.json is /dev/zero": ("DEVZERO", (),
                                 r"^\S+/config\.json: is a character device, not a regular file$"),
    "config.json is a fifo": ("FIFO", (), r"^\S+/config\.json: is a fifo, not a regular file$"),
    "config.json over 8 MiB": ("HUGE", (), r"^\S+/config\.json: is larger than 8 MiB$"),
    "a number of 5000 digits": (b'{"ociVersion": "1.0.2", "x": ' + b"1" * 5000 + b"}", (),
                                r"^\S+/config\.json: not valid JSON: a number has too many digits$"),
    "no /proc to wait on": (lambda c: c.update(mounts=[m for m in c["mounts"] if m["destination"] != "/proc"]), (),
                            r"^config\.json: the container cannot wait for `rune start` on the exec fifo \(No such file "
                            r"or directory\): .*/proc is not mounted in the container"),
    "no mount namespace": (lambda c: c["linux"].update(namespaces=[{"type": "pid"}, {"type": "uts"}]), (),
                           r"^\S+/config\.json: mounts: needs a mount namespace in linux\.namespaces"),
    "newline in the bundle path": ("NEWLINE-BUNDLE", (), r"^bundle '\S+/a\\nb': no such directory$"),
}  # fmt: skip


def _make(rune, what) -> Path:
    if what == "NO-BUNDLE":
        return rune.tmp / "nope"
    if what == "NEWLINE-BUNDLE":
        return rune.tmp / "a\nb"
    b = rune.bundle(["true"], edit=what if callable(what) else None)
    config = b / "config.json"
    if what == "NO-CONFIG":
        config.unlink()
    elif what == "DIR":
        config.unlink()
        config.mkdir()
    elif what == "DEVZERO":
        config.unlink()
        config.symlink_to("/dev/zero")
    elif what == "FIFO":
        config.unlink()
        os.mkfifo(config)  # opening it to read would block until a writer came
    elif what == "HUGE":
        c = json.loads(config.read_text())
        c["annotations"] = {"big": "x" * (8 << 20)}
        config.write_text(json.dumps(c))
    elif isinstance(what, bytes):
        config.write_bytes(what)
    return b


def _ours(rune) -> set[str]:
    """Host mount points a container of this test could leave: under its tmp dir (bundle, runtime root) or the
    rootfs (other tests and engines mount elsewhere concurrently)."""
    return {m for m in host_mountpoints() if m.startswith((str(rune.tmp), str(rune.rootfs)))}


def _check_nothing_left(rune, cid: str, mounts_before: set[str]) -> None:
    assert not (rune.root / cid).exists()  # no state dir, no fifo
    assert cgroup_leftovers(cid) == []
    assert alive_with(cid) == []
    assert _ours(rune) == mounts_before


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(rune, case, fmt):
    what, flags, pattern = CASES[case]
    b = _make(rune, what)
    cid = new_id()
    log = rune.tmp / "log"
    before = _ours(rune)
    p = rune("--log", str(log), "--log-format", fmt, "create", "--bundle", str(b), *flags, cid)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1, p.stderr  # one line
    sentence = p.stderr.rstrip("\n")
    assert re.search(pattern, sentence), sentence
    lines = log.read_text().splitlines()
    assert lines, "nothing in the --log file"
    if fmt == "json":
        entry = json.loads(lines[-1])
        assert set(entry) == {"level", "msg", "time"} and entry["level"] == "error" and entry["msg"] == sentence
    else:
        assert lines[-1].startswith('time="') and " level=error msg=" in lines[-1]
        assert json.loads(lines[-1].split(" msg=", 1)[1]) == sentence  # quoted as Go's logrus text
    _check_nothing_left(rune, cid, before)


def test_duplicate_id_leaves_the_first_alone(rune):
    cid = new_id()
    b = rune.bundle(["sleep", "30"])
    assert rune("create", "--bundle", str(b), cid).returncode == 0
    pid = rune.state(cid)["pid"]
    p = rune("--log", str(rune.tmp / "log"), "--log-format", "json", "create", "--bundle", str(b), cid)
    assert p.returncode == 1
    assert p.stderr == f"container '{cid}' already exists (in {rune.root})\n"
    assert json.loads((rune.tmp / "log").read_text().splitlines()[-1])["msg"] == p.stderr.rstrip("\n")
    assert rune.state(cid)["pid"] == pid and os.path.exists(rune.root / cid / "exec.fifo")
    assert rune("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize(("cid", "sentence"), [("../x", "invalid container id '../x'"), ("a/b", "invalid container id 'a/b'"),
                                               ("", "container id cannot be empty"), ("..", "invalid container id '..'")])  # fmt: skip
def test_invalid_ids(rune, cid, sentence):
    before = _ours(rune)
    p = rune("create", "--bundle", str(rune.bundle(["true"])), cid)
    assert p.returncode == 1 and p.stderr.startswith(sentence) and p.stderr.count("\n") == 1
    assert not rune.root.exists() or os.listdir(rune.root) == []
    assert not (rune.root.parent / "x").exists()
    assert _ours(rune) == before


def test_bad_input_with_run(rune):
    """run fails as create does, and leaves nothing either."""
    cid = new_id()
    before = _ours(rune)
    p = rune("run", "--bundle", str(_make(rune, CASES["missing binary"][0])), cid)
    assert p.returncode == 1 and p.stderr.startswith('config.json process.args[0]: exec: "/bin/nope"')
    _check_nothing_left(rune, cid, before)
