"""Protocol buffers' wire format for the messages the shim exchanges, declared field by field.

A message is a class with FIELDS = ((name, number, kind), ...). kind is a scalar name ("string", "bytes", "bool",
"uint32", "uint64", "int32", "int64", "enum"), a Message class, or either wrapped as ("repeated", kind) or
("map", key kind, value kind). Encoding follows proto3: default values are left out, repeated scalars are packed;
decoding accepts packed and unpacked scalars and skips unknown fields, as every protobuf runtime does.

This is the whole codec (standard library only): the shim runs once per pod, so the grpcio/protobuf runtimes'
import time and memory would be paid on every container start (see docs/shim.md).
"""

from __future__ import annotations

SCALARS = ("string", "bytes", "bool", "uint32", "uint64", "int32", "int64", "enum")
_VARINT = ("bool", "uint32", "uint64", "int32", "int64", "enum")
_MASK64 = (1 << 64) - 1


class DecodeError(ValueError):
    pass


def _varint(n: int, out: bytearray) -> None:
    n &= _MASK64
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    end = len(data)
    while True:
        if pos >= end or shift > 63:
            raise DecodeError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def _default(kind: object) -> object:
    if isinstance(kind, tuple):
        return {} if kind[0] == "map" else []
    if kind == "string":
        return ""
    if kind == "bytes":
        return b""
    if kind == "bool":
        return False
    if kind in SCALARS:
        return 0
    return None  # a message


class Message:
    FIELDS: tuple[tuple[str, int, object], ...] = ()
    _BY_NUMBER: dict[int, tuple[str, object]] = {}

    def __init__(self, **values: object) -> None:
        for name, _num, kind in self.FIELDS:
            setattr(self, name, values.pop(name) if name in values else _default(kind))
        if values:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(values)}")

    def __init_subclass__(cls) -> None:
        cls._BY_NUMBER = {num: (name, kind) for name, num, kind in cls.FIELDS}

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n, _, k in self.FIELDS if getattr(self, n) != _default(k))
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n, _, _ in self.FIELDS)

    # ---- encoding ---------------------------------------------------------------------------------------------
    def encode(self) -> bytes:
        out = bytearray()
        for name, num, kind in self.FIELDS:
            value = getattr(self, name)
            if isinstance(kind, tuple):
                if kind[0] == "map":
                    for k, v in sorted(value.items()):
                        entry = bytearray()
                        _field(entry, 1, kind[1], k, True)
                        _field(entry, 2, kind[2], v, True)
                        _varint(num << 3 | 2, out)
                        _varint(len(entry), out)
                        out += entry
                elif kind[1] in _VARINT:
                    if value:
                        packed = bytearray()
                        for v in value:
                            _varint(int(v), packed)
                        _varint(num << 3 | 2, out)
                        _varint(len(packed), out)
                        out += packed
                else:
                    for v in value:
                        _field(out, num, kind[1], v, True)
            else:
                _field(out, num, kind, value, False)
        return bytes(out)

    # ---- decoding ---------------------------------------------------------------------------------------------
    @classmethod
    def decode(cls, data: bytes) -> Message:
        msg = cls()
        by_number = cls._BY_NUMBER
        pos, end = 0, len(data)
        while pos < end:
            key, pos = _read_varint(data, pos)
            num, wire = key >> 3, key & 7
            if wire == 0:
                raw, pos = _read_varint(data, pos)
            elif wire == 2:
                n, pos = _read_varint(data, pos)
                if pos + n > end:
                    raise DecodeError(f"{cls.__name__}: truncated field {num}")
                raw, pos = data[pos:pos + n], pos + n
            elif wire == 1:
                raw, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
            elif wire == 5:
                raw, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
            else:
                raise DecodeError(f"{cls.__name__}: unsupported wire type {wire} in field {num}")
            if pos > end:
                raise DecodeError(f"{cls.__name__}: truncated field {num}")
            field = by_number.get(num)
            if field is None:
                continue
            name, kind = field
            if isinstance(kind, tuple):
                if kind[0] == "map":
                    entry = _decode_pairs(raw, kind[1], kind[2], cls.__name__)
                    getattr(msg, name)[entry[0]] = entry[1]
                elif kind[1] in _VARINT and wire == 2:  # packed
                    values = getattr(msg, name)
                    p = 0
                    while p < len(raw):
                        v, p = _read_varint(raw, p)
                        values.append(_scalar(kind[1], v))
                else:
                    getattr(msg, name).append(_value(kind[1], raw, wire, cls.__name__, num))
            else:
                setattr(msg, name, _value(kind, raw, wire, cls.__name__, num))
        return msg


def _field(out: bytearray, num: int, kind: object, value: object, always: bool) -> None:
    if kind in _VARINT:
        if value or always:
            _varint(num << 3, out)
            _varint(int(value), out)  # type: ignore[arg-type]
        return
    if kind == "string":
        data = value.encode() if value else b""  # type: ignore[union-attr]
    elif kind == "bytes":
        data = bytes(value or b"")  # type: ignore[arg-type]
    elif value is None:
        return
    else:
        data = value.encode()  # type: ignore[union-attr]
        always = True  # a set message is sent even when empty
    if data or always:
        _varint(num << 3 | 2, out)
        _varint(len(data), out)
        out += data


def _scalar(kind: str, v: int) -> object:
    if kind == "bool":
        return bool(v)
    if kind in ("int32", "int64") and v >> 63:
        return v - (1 << 64)
    return v


def _value(kind: object, raw: object, wire: int, where: str, num: int) -> object:
    if kind in _VARINT:
        if wire != 0:
            raise DecodeError(f"{where}: field {num} should be a varint")
        return _scalar(kind, raw)  # type: ignore[arg-type]
    if wire != 2:
        raise DecodeError(f"{where}: field {num} should be length-delimited")
    if kind == "string":
        try:
            return raw.decode()  # type: ignore[union-attr]
        except UnicodeDecodeError:
            raise DecodeError(f"{where}: field {num} is not UTF-8") from None
    if kind == "bytes":
        return bytes(raw)  # type: ignore[arg-type]
    return kind.decode(raw)  # type: ignore[union-attr]


_ENTRIES: dict[tuple[object, object], type[Message]] = {}


def _decode_pairs(raw: bytes, key_kind: object, value_kind: object, where: str) -> tuple[object, object]:
    entry = _ENTRIES.get((key_kind, value_kind))
    if entry is None:
        entry = type("MapEntry", (Message,), {"FIELDS": (("key", 1, key_kind), ("value", 2, value_kind))})
        _ENTRIES[(key_kind, value_kind)] = entry
    e = entry.decode(raw)
    return e.key, e.value  # type: ignore[attr-defined]
