"""ttrpc v1.1 (containerd 1.6): a 10-byte frame header, then a protobuf Request or Response.

Header: payload length (uint32 BE), stream id (uint32 BE; clients use odd ids), type (1 request, 2 response),
flags (0). A payload over 4 MiB is discarded and answered with RESOURCE_EXHAUSTED. The server answers every request
on its own thread (Wait stays outstanding while Start, Kill and the rest arrive on the same connection) and refuses
peers whose SO_PEERCRED uid differs from its own, as containerd's ttrpc server does. The client is what the shim
needs to publish events to containerd (Events.Forward) and what the tests use to talk to a shim directly.
"""

from __future__ import annotations

import _socket
import os
import struct

from inclavare.shim import api, sync

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20
REQUEST, RESPONSE = 1, 2

# google.rpc codes, as containerd maps them to errdefs
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS = 0, 1, 2, 3, 4, 5, 6
FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 9, 8, 12, 13, 14
_SO_PEERCRED = 17


class TtrpcError(Exception):
    """A call that fails with a status code; str() is the message the client shows."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


if TYPE_CHECKING:
    Handler = Callable[[bytes], "bytes | tuple[bytes, Callable[[], None]]"]


def _recv_exactly(sock: _socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(sock: _socket.socket) -> tuple[int, int, bytes | None] | None:
    """(stream id, type, payload) or None at end of stream; payload None when it was over the limit."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    length, stream, typ, _flags = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        left = length
        while left:
            chunk = sock.recv(min(left, 1 << 16))
            if not chunk:
                return None
            left -= len(chunk)
        return stream, typ, None
    payload = _recv_exactly(sock, length) if length else b""
    if payload is None:
        return None
    return stream, typ, payload


def frame(stream: int, typ: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), stream, typ, 0) + payload


class Server:
    """Serves registered methods {"service/method": handler(request bytes) -> response bytes}."""

    def __init__(self, listener: _socket.socket, log: Callable[[str], None] = lambda _m: None) -> None:
        self.listener = listener
        self.methods: dict[str, Handler] = {}
        self.log = log
        self.conns: set[_socket.socket] = set()
        self.lock = sync.Lock()

    def register(self, service: str, methods: dict[str, Handler]) -> None:
        for name, fn in methods.items():
            self.methods[f"{service}/{name}"] = fn

    def serve(self) -> None:
        """Accept connections until the listener is closed."""
        uid = os.geteuid()
        while True:
            try:
                fd, _ = self.listener._accept()
            except OSError as e:
                if e.errno == 4:  # EINTR
                    continue
                return
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            try:
                cred = conn.getsockopt(_socket.SOL_SOCKET, _SO_PEERCRED, 12)
                peer_uid = struct.unpack("iII", cred)[1]
            except OSError:
                peer_uid = -1
            if peer_uid != uid:
                self.log(f"refused a ttrpc connection from uid {peer_uid}")
                conn.close()
                continue
            with self.lock:
                self.conns.add(conn)
            sync.spawn(self._connection, conn)

    def _connection(self, conn: _socket.socket) -> None:
        wlock = sync.Lock()
        try:
            while True:
                f = read_frame(conn)
                if f is None:
                    return
                stream, typ, payload = f
                if typ != REQUEST:
                    continue
                if payload is None:
                    self._reply(conn, wlock, stream, error=(RESOURCE_EXHAUSTED, "message over 4 MiB"))
                elif stream % 2 == 0:
                    self._reply(conn, wlock, stream, error=(INVALID_ARGUMENT, f"invalid stream id {stream}"))
                else:
                    sync.spawn(self._call, conn, wlock, stream, payload)
        except OSError:
            return
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()

    def _call(self, conn: _socket.socket, wlock: object, stream: int, payload: bytes) -> None:
        try:
            req = api.Request.decode(payload)
            fn = self.methods.get(f"{req.service}/{req.method}")
            if fn is None:
                raise TtrpcError(UNIMPLEMENTED, f"{req.service}/{req.method} is not implemented")
            result = fn(req.payload)
        except TtrpcError as e:
            self._reply(conn, wlock, stream, error=(e.code, str(e)))
            return
        except ValueError as e:  # a payload that does not decode
            self._reply(conn, wlock, stream, error=(INVALID_ARGUMENT, str(e)))
            return
        except Exception as e:  # noqa: BLE001 - a bug must answer the call, not hang the client
            import traceback

            self.log("".join(traceback.format_exception(e)))
            self._reply(conn, wlock, stream, error=(UNKNOWN, f"{type(e).__name__}: {e}"))
            return
        after = None
        if isinstance(result, tuple):  # (payload, what to do once the reply is sent): Shutdown
            result, after = result
        self._reply(conn, wlock, stream, payload=result)
        if after is not None:
            after()

    @staticmethod
    def _reply(conn: _socket.socket, wlock: object, stream: int, payload: bytes = b"",
               error: tuple[int, str] | None = None) -> None:
        resp = api.Response(payload=payload) if error is None else api.Response(
            status=api.Status(code=error[0], message=error[1]))
        data = frame(stream, RESPONSE, resp.encode())
        try:
            with wlock:
                conn.sendall(data)
        except OSError:
            pass  # the client went away

    def close(self) -> None:
        try:
            self.listener.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in list(self.conns):
                try:
                    c.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass


class Client:
    """A ttrpc client over one unix-socket connection (calls are serialized: the shim needs no more)."""

    def __init__(self, path: str, timeout: float | None = 10.0) -> None:
        self.path = path
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.stream = 1
        self.lock = sync.Lock()

    def call(self, service: str, method: str, request: bytes, timeout: float = 0) -> bytes:
        """The response payload; TtrpcError for a non-OK status, OSError when the connection fails."""
        req = api.Request(service=service, method=method, payload=request, timeout_nano=int(timeout * 1e9))
        with self.lock:
            stream = self.stream
            self.stream += 2
            self.sock.sendall(frame(stream, REQUEST, req.encode()))
            while True:
                f = read_frame(self.sock)
                if f is None:
                    raise ConnectionResetError(f"{self.path}: the ttrpc server closed the connection")
                got, typ, payload = f
                if typ == RESPONSE and got == stream:
                    break
        resp = api.Response.decode(payload or b"")
        if resp.status is not None and resp.status.code:
            raise TtrpcError(resp.status.code, resp.status.message)
        return resp.payload

    def close(self) -> None:
        self.sock.close()
