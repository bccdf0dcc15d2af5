"""The shim's wire formats without containerd: the protobuf codec, ttrpc framing (server and client over a socket
pair), the launch contract's flags and socket address, and the task metrics mapping."""

from __future__ import annotations

import _socket
import struct
import threading

import pytest

from inclavare.shim import api, manager, stats, sync, ttrpc
from inclavare.shim.protobuf import DecodeError, Message


class Sample(Message):
    FIELDS = (("name", 1, "string"), ("count", 2, "uint32"), ("delta", 3, "int64"), ("on", 4, "bool"),
              ("blob", 5, "bytes"), ("tags", 6, ("repeated", "string")), ("nums", 7, ("repeated", "uint64")),
              ("labels", 8, ("map", "string", "string")), ("when", 9, api.Timestamp))


def test_round_trip_of_every_kind() -> None:
    m = Sample(name="é", count=300, delta=-5, on=True, blob=b"\0\1", tags=["a", ""], nums=[1, 1 << 40],
               labels={"k": "v", "a": ""}, when=api.Timestamp(seconds=-62135596800, nanos=7))
    assert Sample.decode(m.encode()) == m


def test_proto3_defaults_are_left_out_and_set_messages_are_sent() -> None:
    assert Sample().encode() == b""
    assert Sample(when=api.Timestamp()).encode() == b"\x4a\x00"  # a set (empty) message is present


def test_known_bytes() -> None:
    # field 2 varint 300 = 0x10 0xac 0x02; field 3 int64 -1 = ten bytes of two's complement
    assert Sample(count=300).encode() == b"\x10\xac\x02"
    assert Sample(delta=-1).encode() == b"\x18" + b"\xff" * 9 + b"\x01"
    assert Sample(nums=[1, 2]).encode() == b"\x3a\x02\x01\x02"  # packed


def test_unpacked_repeated_scalars_and_unknown_fields_decode() -> None:
    data = b"\x38\x01\x38\x02" + b"\x58\x05" + b"\x65\x01\x02\x03\x04" + b"\x69" + bytes(8)  # unknown 11, 12, 13
    assert Sample.decode(data).nums == [1, 2]


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x10", b"\x10" + b"\xff" * 11, b"\x0a\x01\xff", b"\x0b", b"\x10\x80"])
def test_malformed_input_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Sample.decode(data)


def test_event_type_urls_are_bare() -> None:
    a = api.event_any(api.TaskExit(container_id="c", id="c", pid=5, exit_status=3))
    assert a.type_url == "containerd.events.TaskExit"
    assert api.TaskExit.decode(a.value).exit_status == 3


# ---- ttrpc ----------------------------------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path):  # noqa: ANN001, ANN201
    path = str(tmp_path / "t.sock")
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    server = ttrpc.Server(listener)
    block = sync.Event()

    def echo(data: bytes) -> bytes:
        return api.IdRequest.decode(data).encode()

    def fail(_data: bytes) -> bytes:
        raise ttrpc.TtrpcError(ttrpc.NOT_FOUND, "no such thing")

    def slow(_data: bytes) -> bytes:
        block.wait(10)
        return b""

    def crash(_data: bytes) -> bytes:
        raise ZeroDivisionError("boom")

    server.register("svc", {"Echo": echo, "Fail": fail, "Slow": slow, "Crash": crash})
    threading.Thread(target=server.serve, daemon=True).start()
    yield path, block
    server.close()


def test_ttrpc_calls_errors_and_concurrency(served) -> None:  # noqa: ANN001
    path, block = served
    c = ttrpc.Client(path)
    req = api.IdRequest(id="x", exec_id="y").encode()
    assert c.call("svc", "Echo", req) == req
    with pytest.raises(ttrpc.TtrpcError) as e:
        c.call("svc", "Fail", b"")
    assert (e.value.code, str(e.value)) == (ttrpc.NOT_FOUND, "no such thing")
    with pytest.raises(ttrpc.TtrpcError) as e:
        c.call("svc", "Nope", b"")
    assert e.value.code == ttrpc.UNIMPLEMENTED
    with pytest.raises(ttrpc.TtrpcError) as e:
        c.call("svc", "Crash", b"")
    assert e.value.code == ttrpc.UNKNOWN and "boom" in str(e.value)
    with pytest.raises(ttrpc.TtrpcError) as e:
        c.call("svc", "Echo", b"\x0a\x09x")  # truncated
    assert e.value.code == ttrpc.INVALID_ARGUMENT
    # a call that blocks (Wait) does not hold up the others on another connection or the same server
    slow = ttrpc.Client(path)
    done = []
    t = threading.Thread(target=lambda: done.append(slow.call("svc", "Slow", b"")))
    t.start()
    assert c.call("svc", "Echo", req) == req and not done
    block.set()
    t.join(10)
    assert done == [b""]


def test_ttrpc_frames_even_ids_and_oversize(served) -> None:  # noqa: ANN001
    path, _ = served
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(10)
    req = api.Request(service="svc", method="Echo", payload=b"").encode()
    s.sendall(ttrpc.frame(2, ttrpc.REQUEST, req))
    stream, typ, payload = ttrpc.read_frame(s)
    assert (stream, typ) == (2, ttrpc.RESPONSE) and api.Response.decode(payload).status.code == ttrpc.INVALID_ARGUMENT
    s.sendall(struct.pack(">IIBB", ttrpc.MAX_MESSAGE + 1, 3, 1, 0) + bytes(ttrpc.MAX_MESSAGE + 1))
    stream, _, payload = ttrpc.read_frame(s)
    assert stream == 3 and api.Response.decode(payload).status.code == ttrpc.RESOURCE_EXHAUSTED
    s.sendall(ttrpc.frame(5, ttrpc.REQUEST, req))  # the connection still serves
    stream, _, payload = ttrpc.read_frame(s)
    assert stream == 5 and api.Response.decode(payload).status is None
    s.close()


# ---- the launch contract ------------------------------------------------------------------------------------------

def test_go_style_flags() -> None:
    f = manager.parse_flags(["-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary=/usr/bin/containerd",
                             "--id", "abc", "-debug", "start"])
    assert (f.namespace, f.address, f.publish_binary, f.id, f.debug, f.action) == (
        "k8s.io", "/run/c.sock", "/usr/bin/containerd", "abc", True, "start")
    with pytest.raises(SystemExit):
        manager.parse_flags(["-bogus", "start"])


def test_socket_address_groups_a_pod(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text('{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}')
    assert manager.group_id(str(tmp_path), "c1") == "pod1"
    (tmp_path / "config.json").write_text('{"annotations": {"io.containerd.runc.v2.group": "g", '
                                          '"io.kubernetes.cri.sandbox-id": "pod1"}}')
    assert manager.group_id(str(tmp_path), "c1") == "g"
    (tmp_path / "config.json").write_text("{}")
    assert manager.group_id(str(tmp_path), "c1") == "c1"
    a = manager.socket_address("/run/containerd/containerd.sock", "k8s.io", "pod1")
    assert a.startswith("unix:///run/containerd/s/") and len(a) - len("unix://") < 106
    assert a != manager.socket_address("/run/containerd/containerd.sock", "default", "pod1")


# ---- metrics ------------------------------------------------------------------------------------------------------

def test_rune_stats_as_cgroup_metrics() -> None:
    data = {"cpu": {"usage": {"total": 5000, "percpu": [2000, 3000], "kernel": 1000, "user": 4000},
                    "throttling": {"periods": 3}},
            "memory": {"usage": {"limit": 1 << 30, "usage": 4096, "max": 8192}, "raw": {"cache": 12, "rss": 34,
                                                                                           "anon": 7, "file": 8}},
            "pids": {"current": 2}, "blkio": {"ioServiceBytesRecursive": [{"major": 8, "minor": 0, "op": "Read",
                                                                            "value": 99}]}}
    v1 = stats.MetricsV1.decode(stats.metrics_v1(data).encode())
    assert (v1.cpu.usage.total, v1.cpu.usage.per_cpu, v1.memory.rss, v1.memory.usage.usage, v1.pids.current) == (
        5000, [2000, 3000], 34, 4096, 2)
    assert v1.blkio.io_service_bytes_recursive[0].value == 99
    v2 = stats.MetricsV2.decode(stats.metrics_v2(data).encode())
    assert (v2.cpu.usage_usec, v2.memory.usage, v2.memory.anon, v2.io.usage[0].rbytes) == (5, 4096, 7, 99)


def test_delete_response_matches_the_message() -> None:
    got = api.DeleteResponse.decode(manager.delete_response(42, 137, 1_700_000_000_123_456_789))
    assert got == api.DeleteResponse(pid=42, exit_status=137, exited_at=api.Timestamp(seconds=1_700_000_000,
                                                                                         nanos=123_456_789))


def test_every_shim_module_imports_under_the_launcher_flags() -> None:
    """The launcher runs Python with -I -S: every module of the package must import there (an annotation-only name
    used at run time once broke the server's start)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    mods = [f"inclavare.shim.{p.relative_to(REPO / 'src/inclavare/shim').with_suffix('').as_posix().replace('/', '.')}"
            for p in (REPO / "src/inclavare/shim").rglob("*.py") if p.name != "__init__.py"]
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); import inclavare.tee; "  # cryptography, as the
            + "; ".join(f"import {m}" for m in mods))  # signing server and the conversion worker see it
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_runc_options_systemd_cgroup_becomes_the_global_flag() -> None:
    """containerd's SystemdCgroup = true (runc's options, field 9) reaches rune as runc's shim passes it: the global
    --systemd-cgroup before the command."""
    from inclavare.shim.container import Options
    from inclavare.shim.runtime import Rune

    value = api.RuncOptions(systemd_cgroup=True, binary_name="rune").encode()
    opts = Options(api.Any(type_url="type.googleapis.com/" + api.RUNC_OPTIONS, value=value))
    assert opts.systemd_cgroup and opts.binary == "rune"
    argv = Rune(None, "rune", "/run/r/ns", "/b/log.json", systemd_cgroup=opts.systemd_cgroup)._argv(["create", "x"])
    assert argv == ["rune", "--root", "/run/r/ns", "--log", "/b/log.json", "--log-format", "json", "--systemd-cgroup",
                    "create", "x"]
    assert not Options(api.Any(type_url="type.googleapis.com/" + api.RUNC_OPTIONS,
                               value=api.RuncOptions(binary_name="rune").encode())).systemd_cgroup
