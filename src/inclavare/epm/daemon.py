"""epm's daemon: the bundle-cache operations on a Unix socket (protocol.py), one thread per connection.

Only root and the daemon's own user, in the daemon's own mount and user namespaces, may talk to it (SO_PEERCRED and
/proc/PID/ns), the socket is 0600 in a 0700 directory. A stale socket file left by a dead epm is replaced at start; a
live one is refused (another epm serves it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

from inclavare.epm.config import Config
from inclavare.epm.pool import Pool
from inclavare.epm.store import NAME, Store, StoreError


def _name(req: dict, key: str, optional: bool = False) -> str | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not NAME.match(v):
        raise StoreError(f"'{key}' must be 1-200 letters, digits or ._:+-")
    return v


def pick_enclave(pool: Pool | None, req: dict) -> tuple[dict, int | None]:
    """PickEnclave {runtime: the PAL library's pool.runtime_id in hex}: one pre-initialised enclave, its fd sent with the
    answer (SCM_RIGHTS), or {"ok": true, "enclave": null} when none is ready."""
    rt = req.get("runtime")
    if not isinstance(rt, str) or len(rt) != 64 or rt.strip("0123456789abcdef"):
        return {"ok": False, "error": "'runtime' must be the PAL library's id in 64 lowercase hex digits"}, None
    fd = pool.pick(bytes.fromhex(rt)) if pool is not None else None
    if fd is None:
        return {"ok": True, "enclave": None}, None
    return {"ok": True, "enclave": {"size": pool.enclave_size}}, fd


def handle(store: Store, req: object, pool: Pool | None = None) -> dict:
    if not isinstance(req, dict):
        return {"ok": False, "error": "the request must be a JSON object"}
    op = req.get("op")
    try:
        if op == "Healthz":
            return {"ok": True, "entries": len(store.entries), "bytes": store.bytes,
                    "pool": pool.stats() if pool is not None else None}
        if op == "SaveCache":
            return {"ok": True, "cache": store.save(req.get("cache"))}
        if op == "GetCache":
            rec = store.get(_name(req, "type"), _name(req, "id"))
            return {"ok": True, "cache": rec}
        if op == "PickCache":
            sub = req.get("subtype")
            if sub is not None and not isinstance(sub, str):
                raise StoreError("'subtype' must be a string")
            return {"ok": True, "cache": store.pick(_name(req, "type"), sub)}
        if op == "ListCache":
            return {"ok": True, "caches": store.list(_name(req, "type", optional=True))}
        if op == "DeleteCache":
            return {"ok": True, "deleted": store.delete(_name(req, "type"), _name(req, "id"))}
    except StoreError as e:
        return {"ok": False, "error": str(e)}
    except OSError as e:
        return {"ok": False, "error": f"epm cannot write its cache directory: {e.strerror}"}
    return {"ok": False, "error": f"'op' must be one of GetCache, PickCache, SaveCache, ListCache, DeleteCache, "
                                  f"PickEnclave, Healthz (got {op!r})"}


FOLLOW_UP_TIMEOUT = 120.0  # seconds a connection may wait between requests (a cold launch hashes between two)


def _ns_ids(pid: int | str) -> tuple[tuple[int, int], ...] | None:
    try:
        return tuple((st.st_dev, st.st_ino) for st in (os.stat(f"/proc/{pid}/ns/{ns}") for ns in ("mnt", "user")))
    except OSError:
        return None


def _same_namespaces(pid: int) -> bool:
    """A peer must live in epm's own mount and user namespaces: rune's init-runelet talks to epm before it enters the
    container's, so a process inside a container (whose root is uid 0 too) that reaches the socket through a bind
    mount gets no answer and can neither plant a record nor drain the pool. pid 0: the peer's PID namespace hides it
    from epm's, so it is in a container. Checked on a connection's first request, while its sender waits for the
    answer (rune sends a Healthz from connect, before it enters the container's namespaces)."""
    if pid <= 0:
        return False
    peer = _ns_ids(pid)
    return peer is not None and peer == _ns_ids("self")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        s: socket.socket = self.request
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid: int | None
        pid, uid, _gid = struct.unpack("3i", cred)
        if uid not in (0, os.geteuid()):
            return
        s.settimeout(self.server.config.io_timeout)
        limit = self.server.config.max_entry_bytes
        fd = None
        while True:  # one request after another on one connection (rune's launch: GetCache, later SaveCache)
            try:
                line = self.rfile.readline(limit + 1)
            except OSError:
                return
            if not line:
                return
            if pid is not None:  # the first request: its sender waits for the answer, so it has not moved yet
                if not _same_namespaces(pid):
                    # an answer that serves nothing, so that rune's debug line says why (an engine started in a
                    # mount namespace of its own: unshare -m, systemd's PrivateTmp=, PrivateMounts=, ProtectSystem=)
                    why = ("epm serves only processes in its own mount and user namespaces, and this one is in "
                           "another (an engine in a mount namespace of its own: PrivateTmp=, PrivateMounts= or "
                           "ProtectSystem= in its systemd unit, unshare -m)")
                    print(f"epm: refused a connection of pid {pid or '?'}: not in epm's mount and user namespaces",
                          file=sys.stderr, flush=True)
                    try:
                        s.sendall(json.dumps({"ok": False, "error": why}).encode() + b"\n")
                    except OSError:
                        pass
                    return
                pid = None
            if len(line) > limit:
                resp = {"ok": False, "error": f"the request is larger than max_entry_bytes ({limit})"}
            else:
                try:
                    req = json.loads(line)
                except ValueError:
                    resp = {"ok": False, "error": "the request is not JSON"}
                else:
                    if isinstance(req, dict) and req.get("op") == "PickEnclave":
                        resp, fd = pick_enclave(self.server.pool, req)
                    else:
                        resp = handle(self.server.store, req, self.server.pool)
            data = json.dumps(resp, separators=(",", ":")).encode() + b"\n"
            try:
                if fd is not None:
                    socket.send_fds(s, [data], [fd])
                else:
                    s.sendall(data)
            except OSError:
                return
            finally:
                if fd is not None:
                    os.close(fd)  # single use: the enclave is the client's now (or nobody's)
                    fd = None
            if len(line) > limit or not line.endswith(b"\n"):
                return  # the rest of an oversized line is not a request
            s.settimeout(max(self.server.config.io_timeout, FOLLOW_UP_TIMEOUT))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256  # listen(2) backlog: socketserver's 5 makes the 6th concurrent connect fail with EAGAIN
    config: Config
    store: Store
    pool: Pool | None


def _claim_socket(path: Path) -> None:
    """Remove a stale socket file (nobody listening); refuse a live one or a non-socket."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"the epm socket path {path} exists and is not a socket; remove it or choose another")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            os.unlink(path)
            return
    raise RuntimeError(f"something is listening on {path} already (another epm?)")


def _make_dir(path: Path, key: str, config: Config, made: list[Path]) -> None:
    """mkdir -p path (the last one 0700), appending what it made to `made`; a sentence naming the key when it cannot."""
    missing = []
    p = path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir(mode=0o700 if d == path else 0o777)
            made.append(d)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as e:
        why = "a file that is not a directory is in the way" if e.errno in (17, 20) else e.strerror
        raise RuntimeError(f"'{key}' in the epm configuration {config.path}: the directory {path} cannot be made "
                           f"({why})") from None


def check(config: Config) -> None:
    """What serve would refuse of the directories, found without making anything (epm --check): RuntimeError."""
    from inclavare.epm.store import claim

    for key, path in (("socket", config.socket.parent), ("cache_dir", config.cache_dir)):
        p = path
        while not os.path.lexists(p) and p != p.parent:
            p = p.parent
        if not os.path.isdir(p):
            raise RuntimeError(f"'{key}' in the epm configuration {config.path}: the directory {path} cannot be made "
                               f"(a file that is not a directory is in the way)")
    try:
        claim(config.cache_dir, dry=True)
    except StoreError as e:
        raise RuntimeError(f"'cache_dir' in the epm configuration {config.path}: {e}") from None


def serve(config: Config, ready: threading.Event | None = None) -> _Server:
    made: list[Path] = []  # directories made here: removed again when the start fails
    try:
        _make_dir(config.socket.parent, "socket", config, made)
        _claim_socket(config.socket)
        _make_dir(config.cache_dir, "cache_dir", config, made)
        try:
            store = Store(config.cache_dir, config.max_entries, config.max_bytes)
        except OSError as e:
            raise RuntimeError(f"'cache_dir' in the epm configuration {config.path}: {e.filename or config.cache_dir} "
                               f"cannot be used ({e.strerror})") from None
        except StoreError as e:
            raise RuntimeError(f"'cache_dir' in the epm configuration {config.path}: {e}") from None
        old = os.umask(0o177)
        try:
            srv = _Server(str(config.socket), _Handler)
        except OSError as e:
            raise RuntimeError(f"epm cannot listen on {config.socket} ('socket' in the epm configuration "
                               f"{config.path}): {e.strerror}") from None
        finally:
            os.umask(old)
    except BaseException:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    srv.config, srv.store = config, store
    srv.pool = Pool([str(p) for p in config.pool_runtimes], config.pool_size, config.enclave_size) \
        if config.pool_size and config.pool_runtimes else None
    return srv


def main_run(config_path: str) -> int:
    from inclavare.epm import config as cfg

    try:
        c = cfg.load(config_path)
        srv = serve(c)
    except (cfg.ConfigError, RuntimeError) as e:
        print(f"epm: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"epm: {e.filename or c.socket}: {e.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool = f", a pool of {c.pool_size} enclaves for each of {len(c.pool_runtimes)} runtimes" if srv.pool else ""
    absent = [str(p) for p in c.pool_runtimes if not os.path.exists(p)] if srv.pool else []
    if absent:  # the pool waits for them (a runtime installed later): say so, a typo would look the same
        pool += f"; not found yet, no enclaves made for them: {', '.join(absent)}"
    print(f"epm: serving {c.socket} ({len(srv.store.entries)} caches from {c.cache_dir}{pool})", file=sys.stderr,
          flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        if srv.pool is not None:
            srv.pool.close()
        try:
            os.unlink(c.socket)
        except OSError:
            pass
    return 0
