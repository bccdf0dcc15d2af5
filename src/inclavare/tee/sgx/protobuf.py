"""The little of protobuf's wire format aesmd needs: varints and length-delimited fields.

A message is a list of (field number, value): int/bool -> varint (wire type 0), bytes/Message -> length-delimited
(wire type 2). Decoding yields {field number: [values]} with varints as int and length-delimited fields as bytes
(decode those again for nested messages). Other wire types are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

Field = tuple[int, "int | bool | bytes | list[Field]"]


class ProtobufError(ValueError):
    pass


def varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(fields: Iterable[Field]) -> bytes:
    out = bytearray()
    for num, value in fields:
        if isinstance(value, bool | int):
            out += varint(num << 3 | 0) + varint(int(value))
        else:
            data = encode(value) if isinstance(value, list) else bytes(value)
            out += varint(num << 3 | 2) + varint(len(data)) + data
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def decode(data: bytes) -> dict[int, list[int | bytes]]:
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            n, pos = _read_varint(data, pos)
            if pos + n > len(data):
                raise ProtobufError("truncated length-delimited field")
            value, pos = data[pos : pos + n], pos + n
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ProtobufError("truncated fixed-size field")
        out.setdefault(num, []).append(value)
    return out


def first(msg: dict[int, list[int | bytes]], num: int, default: int | bytes | None = None) -> int | bytes | None:
    values = msg.get(num)
    return values[-1] if values else default
