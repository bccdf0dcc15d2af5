"""The shim's launch contract with containerd 1.6 (runtime/v2/shim, runc/manager): the `start` and `delete`
subcommands.

`start` (cwd: the bundle; stdin: the task options): find the pod's shim by its grouping id (annotation
io.containerd.rune.v2.group, io.containerd.runc.v2.group or io.kubernetes.cri.sandbox-id, else the container id),
and if none answers on its socket, bind the socket and fork the server (server.py), which serves every container of
the group. Write the address to BUNDLE/address and print it, and only it: stdout and stderr are one pipe that
containerd reads to its end, so the server holds neither.

`delete` (cwd: the bundle): what containerd runs whenever a shim connection closes, and after a shim died: force-
delete the container in rune, unmount the rootfs, drop a dead shim's socket, and print a DeleteResponse (exit status
137). It is idempotent: after a clean Shutdown there is nothing left to do.
"""

from __future__ import annotations

import _sha256
import _socket
import os
import sys
import time

from inclavare.oci import jsonlite

STATE_DIR = "/run/containerd"  # containerd's compile-time default state dir, where runc's shim keeps its sockets
GROUP_ANNOTATIONS = ("io.containerd.rune.v2.group", "io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")


class Flags:
    namespace = ""
    address = ""
    publish_binary = ""
    id = ""
    bundle = ""
    debug = False
    socket = ""
    action = ""


def parse_flags(argv: list[str]) -> Flags:
    """Go `flag` syntax, as containerd passes them: -name value, -name=value, --name value, -debug."""
    f = Flags()
    valued = {"namespace": "namespace", "address": "address", "publish-binary": "publish_binary", "id": "id",
              "bundle": "bundle", "socket": "socket"}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("-") or a in ("-", "--"):
            f.action = a
            continue
        name, eq, value = a.lstrip("-").partition("=")
        if name in valued:
            if not eq:
                if i >= len(argv):
                    raise SystemExit(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            setattr(f, valued[name], value)
        elif name in ("debug", "v", "version", "help", "h"):
            if name == "debug":
                f.debug = value.lower() not in ("false", "0") if eq else True
            else:
                f.action = "version" if name in ("v", "version") else "help"
        else:
            raise SystemExit(f"flag provided but not defined: -{name}")
    return f


def _spec(bundle: str) -> dict:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = jsonlite.loads(f.read())
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def group_id(bundle: str, cid: str, spec: dict | None = None) -> str:
    """The pod whose shim serves the container (`spec`: the bundle's config.json, read here when not given)."""
    ann = (spec if spec is not None else _spec(bundle)).get("annotations")
    ann = ann if isinstance(ann, dict) else {}
    for key in GROUP_ANNOTATIONS:
        if isinstance(ann.get(key), str) and ann[key]:
            return ann[key]
    return cid


def socket_address(containerd_address: str, namespace: str, group: str) -> str:
    """unix:///run/containerd/s/<sha256 of address/namespace/group/rune> (runc's scheme, with our own name mixed in
    so that a runc shim of the same group never shares the socket)."""
    digest = _sha256.sha256(os.path.join(containerd_address, namespace, group, "rune").encode()).hexdigest()
    return f"unix://{STATE_DIR}/s/{digest}"


def _can_connect(path: str) -> bool:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _listen(path: str) -> _socket.socket | None:
    """A listening socket at path, or None when a live shim already listens there."""
    os.makedirs(os.path.dirname(path), 0o711, exist_ok=True)
    for _ in range(2):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                s.bind(path)
            finally:
                os.umask(old)
            s.listen(128)
            return s
        except OSError as e:
            s.close()
            if e.errno != 98:  # EADDRINUSE
                raise
            if _can_connect(path):
                return None
            os.unlink(path)  # a dead shim's socket
    raise OSError(98, f"{path}: address in use")


def write_address(bundle: str, address: str) -> None:
    tmp = os.path.join(bundle, ".address")
    with open(tmp, "w") as f:
        f.write(address)
    os.replace(tmp, os.path.join(bundle, "address"))


def start(f: Flags) -> int:
    bundle = os.getcwd()
    if not f.id or not f.namespace:
        sys.stderr.write("containerd-shim-rune-v2 start: -id and -namespace are required\n")
        return 1
    try:
        sys.stdin.buffer.read()  # the task options: read per container at Create
    except OSError:
        pass
    spec = _spec(bundle)  # once: the pod it belongs to, and whether its shim's fork servers load the enclave runtime
    address = socket_address(f.address, f.namespace, group_id(bundle, f.id, spec))
    path = address[len("unix://"):]
    listener = _listen(path)
    if listener is not None:
        containerd_pid = os.getppid()
        pid = os.fork()
        if pid == 0:
            try:
                from inclavare.shim import forkserver, server

                server.run(listener, f, bundle, path, containerd_pid, forkserver.names_enclave(spec))
            finally:
                os._exit(1)
        listener.close()
    write_address(bundle, address)
    sys.stdout.write(address)
    return 0


# ---- delete ---------------------------------------------------------------------------------------------------

def _rune_delete(binary: str, root: str, cid: str, bundle: str) -> str:
    if not os.path.isdir(os.path.join(root, cid)):
        return ""  # rune has no such container: nothing to kill
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        argv = [binary, "--root", root, "--log", os.path.join(bundle, "log.json"), "--log-format", "json", "delete",
                "--force", cid]
        pid = os.posix_spawn(binary, argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)],
            setsigdef=(13, 25))
    finally:
        os.close(null)
        os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace").strip() if status else ""


def delete_response(pid: int, exit_status: int, exited_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse {1 pid, 2 exit_status, 3 exited_at}, encoded without loading the message
    classes (this subcommand runs after every shim connection closes)."""
    from inclavare.shim.protobuf import _varint

    ts = bytearray()
    for num, v in ((1, exited_ns // 1_000_000_000), (2, exited_ns % 1_000_000_000)):
        if v:
            _varint(num << 3, ts)
            _varint(v, ts)
    out = bytearray()
    for num, v in ((1, pid), (2, exit_status)):
        if v:
            _varint(num << 3, out)
            _varint(v, out)
    _varint(3 << 3 | 2, out)
    _varint(len(ts), out)
    return bytes(out + ts)


def delete(f: Flags) -> int:
    from inclavare.shim.rootfs import unmount_all

    bundle = f.bundle or os.getcwd()
    try:
        with open(os.path.join(bundle, "rune-shim.json"), "rb") as fh:
            state = jsonlite.loads(fh.read())
    except (OSError, ValueError):
        state = None
    warnings = []
    if isinstance(state, dict) and f.id:
        msg = _rune_delete(str(state.get("binary")), str(state.get("root")), f.id, bundle)
        if msg:
            warnings.append(f"rune delete --force {f.id}: {msg}")
    unmount_all(os.path.join(bundle, "rootfs"))
    try:
        with open(os.path.join(bundle, "address")) as fh:
            path = fh.read().strip().removeprefix("unix://")
        if path and os.path.exists(path) and not _can_connect(path):
            os.unlink(path)  # the shim of this group is dead
    except OSError:
        pass
    pid = 0
    try:
        with open(os.path.join(bundle, "init.pid")) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        pass
    for w in warnings:
        sys.stderr.write(w + "\n")
    sys.stdout.buffer.write(delete_response(pid, 128 + 9, time.time_ns()))
    return 0
