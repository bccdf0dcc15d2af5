"""A client of aesmd, the SGX architectural enclave service (Intel PSW), for real SGX hosts.

Transport: a Unix stream socket (default /var/run/aesmd/aesm.socket); each request and response is a 4-byte
little-endian length then a protobuf message. The request/response oneof field numbers (Intel's messages.proto):
InitQuote (EPID QE TARGETINFO) 1, GetQuote 2, GetLaunchToken 3, InitQuoteEx 15, GetQuoteSizeEx 16, GetQuoteEx 17,
SelectAttKeyID 19, GetSupportedAttKeyIDNum 21, GetSupportedAttKeyIDs 22. Every response carries errorCode = 1
(0 is success) and its payload at field 2.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from inclavare.tee.sgx import protobuf as pb

DEFAULT_SOCKET = "/var/run/aesmd/aesm.socket"
TIMEOUT_S = 15.0

INIT_QUOTE = 1
GET_QUOTE = 2
GET_LAUNCH_TOKEN = 3
INIT_QUOTE_EX = 15
GET_QUOTE_SIZE_EX = 16
GET_QUOTE_EX = 17
SELECT_ATT_KEY_ID = 19
GET_SUPPORTED_ATT_KEY_ID_NUM = 21
GET_SUPPORTED_ATT_KEY_IDS = 22

QUOTE_TYPE_EPID_UNLINKABLE = 0
QUOTE_TYPE_EPID_LINKABLE = 1

# aesm_error_t values worth naming in messages
AESM_ERRORS = {1: "unexpected error", 2: "no device", 3: "parameter error", 4: "EPID blob error",
               5: "EPID revoked", 6: "get license token error", 7: "session invalid", 8: "max number of sessions",
               9: "psda unavailable", 10: "EPH session failed", 11: "long-term pairing failed",
               12: "network error", 13: "network busy", 14: "proxy setting assist", 15: "file access error",
               16: "SGX provisioning failed", 17: "service stopped", 18: "busy", 19: "backend server busy",
               20: "update available", 21: "out of memory", 22: "message error", 23: "no such aesm service",
               24: "platform info blob unavailable", 25: "SGX disabled", 26: "service unavailable",
               27: "out of EPC", 28: "ECDSA quote provider error (e.g. no PCK certificate / PCCS unreachable)",
               30: "unrecognized platform", 31: "unsupported attestation key id", 33: "key certification error"}


class AesmError(RuntimeError):
    """aesmd is unreachable or answered with an error; str() is one sentence."""


@dataclass(frozen=True)
class InitQuoteExResult:
    target_info: bytes
    pub_key_id_size: int
    pub_key_id: bytes


class AesmClient:
    def __init__(self, path: str | os.PathLike[str] = DEFAULT_SOCKET, timeout: float = TIMEOUT_S) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout

    def _call(self, kind: int, body: list[pb.Field]) -> dict[int, list[int | bytes]]:
        request = pb.encode([(kind, body)])
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(struct.pack("<I", len(request)) + request)
                (size,) = struct.unpack("<I", _recv_exact(s, 4))
                response = _recv_exact(s, size)
        except OSError as e:
            raise AesmError(f"aesmd at {self.path} is not reachable: {e.strerror or e}; is the SGX PSW (aesmd) "
                            f"running?") from None
        try:
            outer = pb.decode(response)
            inner_raw = pb.first(outer, kind)
            if not isinstance(inner_raw, bytes):
                raise AesmError(f"aesmd answered without the response to request {kind}")
            inner = pb.decode(inner_raw)
        except pb.ProtobufError as e:
            raise AesmError(f"aesmd sent a malformed response: {e}") from None
        code = pb.first(inner, 1, 1)
        if code != 0:
            raise AesmError(f"aesmd refused request {kind}: error {code} ({AESM_ERRORS.get(int(code or 1), 'unknown')})")
        return inner

    @staticmethod
    def _bytes(msg: dict[int, list[int | bytes]], num: int) -> bytes:
        v = pb.first(msg, num, b"")
        return v if isinstance(v, bytes) else b""

    def init_quote(self) -> tuple[bytes, bytes]:
        """EPID: the QE's TARGETINFO (512 bytes) and the EPID group id."""
        r = self._call(INIT_QUOTE, [(9, int(self.timeout * 1000))])
        return self._bytes(r, 2), self._bytes(r, 3)

    def get_quote(self, report: bytes, quote_type: int, spid: bytes, nonce: bytes = b"", sig_rl: bytes = b"",
                  buf_size: int = 2048) -> bytes:
        body: list[pb.Field] = [(1, report), (2, quote_type), (3, spid)]
        if nonce:
            body.append((4, nonce))
        if sig_rl:
            body.append((5, sig_rl))
        body += [(6, buf_size), (9, int(self.timeout * 1000))]
        return self._bytes(self._call(GET_QUOTE, body), 2)

    def get_launch_token(self, mr_enclave: bytes, modulus: bytes, attributes: bytes) -> bytes:
        """Legacy (non-FLC) hosts: an EINITTOKEN (304 bytes) from the Launch Enclave."""
        r = self._call(GET_LAUNCH_TOKEN, [(1, mr_enclave), (2, modulus), (3, attributes),
                                          (9, int(self.timeout * 1000))])
        return self._bytes(r, 2)

    def select_att_key_id(self, att_key_id_list: bytes = b"") -> bytes:
        body: list[pb.Field] = [(1, att_key_id_list)] if att_key_id_list else []
        return self._bytes(self._call(SELECT_ATT_KEY_ID, body), 2)

    def init_quote_ex(self, att_key_id: bytes, b_pub_key_id: bool = False, buf_size: int = 0) -> InitQuoteExResult:
        body: list[pb.Field] = [(1, att_key_id), (3, b_pub_key_id)]
        if buf_size:
            body.append((4, buf_size))
        r = self._call(INIT_QUOTE_EX, body + [(9, int(self.timeout * 1000))])
        size = pb.first(r, 3, 0)
        return InitQuoteExResult(self._bytes(r, 2), int(size) if isinstance(size, int) else 0, self._bytes(r, 4))

    def get_quote_size_ex(self, att_key_id: bytes) -> int:
        size = pb.first(self._call(GET_QUOTE_SIZE_EX, [(1, att_key_id), (9, int(self.timeout * 1000))]), 2, 0)
        return int(size) if isinstance(size, int) else 0

    def get_quote_ex(self, report: bytes, att_key_id: bytes, buf_size: int, qe_report_info: bytes = b"") -> bytes:
        body: list[pb.Field] = [(1, report), (2, att_key_id)]
        if qe_report_info:
            body.append((3, qe_report_info))
        body += [(4, buf_size), (9, int(self.timeout * 1000))]
        return self._bytes(self._call(GET_QUOTE_EX, body), 2)

    def get_supported_att_key_id_num(self) -> int:
        n = pb.first(self._call(GET_SUPPORTED_ATT_KEY_ID_NUM, [(9, int(self.timeout * 1000))]), 2, 0)
        return int(n) if isinstance(n, int) else 0

    def get_supported_att_key_ids(self, buf_size: int) -> bytes:
        return self._bytes(self._call(GET_SUPPORTED_ATT_KEY_IDS, [(1, buf_size), (9, int(self.timeout * 1000))]), 2)

    # The ECDSA flow as sgx-tools uses it.
    def ecdsa_target_info(self) -> tuple[bytes, bytes]:
        """(QE TARGETINFO, attestation key id) of aesmd's default ECDSA attestation key."""
        key_id = self.select_att_key_id()
        return self.init_quote_ex(key_id).target_info, key_id

    def ecdsa_quote(self, report: bytes) -> bytes:
        key_id = self.select_att_key_id()
        self.init_quote_ex(key_id)
        return self.get_quote_ex(report, key_id, self.get_quote_size_ex(key_id))


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError(0, "connection closed by aesmd")
        buf += chunk
    return bytes(buf)
