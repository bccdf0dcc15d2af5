"""Fixed-size little-endian binary structures, each declared once.

A structure is a frozen record (inclavare.tee.records) whose fields carry their offset and size; `@structure(SIZE)` builds the layout from
them, checks that the fields are in order, do not overlap and fit in SIZE, and gives the class `from_bytes` and
`to_bytes`. Integer fields are unsigned little-endian; byte fields are fixed-length `bytes`. Every byte not covered by
a field is reserved: it is written as zero and must read as zero.
"""

from __future__ import annotations

from inclavare.tee import records

TYPE_CHECKING = False  # typing costs a sim enclave's start-up; the annotations are for type checkers
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeVar

    T = TypeVar("T", bound="Structure")


class FormatError(ValueError):
    """Bytes that do not form the structure they are parsed as."""


def u16(offset: int) -> Any:
    return records.field(default=0, metadata={"offset": offset, "size": 2, "int": True})


def u32(offset: int) -> Any:
    return records.field(default=0, metadata={"offset": offset, "size": 4, "int": True})


def u64(offset: int) -> Any:
    return records.field(default=0, metadata={"offset": offset, "size": 8, "int": True})


def raw(offset: int, size: int, default: bytes | None = None) -> Any:
    value = bytes(size) if default is None else default
    if len(value) != size:
        raise ValueError(f"default of a {size}-byte field has {len(value)} bytes")
    return records.field(default=value, metadata={"offset": offset, "size": size, "int": False})


@records.record
class FieldSpec:
    name: str
    offset: int
    size: int
    is_int: bool


class Structure:
    """Base of every fixed-size SGX structure (see the module docstring)."""

    SIZE: ClassVar[int]
    FIELDS: ClassVar[tuple[FieldSpec, ...]]

    def __post_init__(self) -> None:
        for f in self.FIELDS:
            value = getattr(self, f.name)
            if f.is_int:
                if not isinstance(value, int) or not 0 <= value < 1 << (8 * f.size):
                    raise FormatError(f"{type(self).__name__}.{f.name} must be an integer in [0, 2**{8 * f.size})")
            elif not isinstance(value, bytes | bytearray) or len(value) != f.size:
                raise FormatError(f"{type(self).__name__}.{f.name} must be {f.size} bytes")

    @classmethod
    def from_bytes(cls: type[T], data: bytes, *, strict: bool = True) -> T:
        """Parse exactly SIZE bytes; with strict, reserved bytes must be zero."""
        data = bytes(data)
        if len(data) != cls.SIZE:
            raise FormatError(f"a {cls.__name__} is {cls.SIZE} bytes, got {len(data)}")
        values: dict[str, Any] = {}
        for f in cls.FIELDS:
            chunk = data[f.offset : f.offset + f.size]
            values[f.name] = int.from_bytes(chunk, "little") if f.is_int else chunk
        obj = cls(**values)
        if strict and obj.to_bytes() != data:
            raise FormatError(f"{cls.__name__} has non-zero reserved bytes")
        return obj

    def to_bytes(self) -> bytes:
        out = bytearray(self.SIZE)
        for f in self.FIELDS:
            value = getattr(self, f.name)
            out[f.offset : f.offset + f.size] = value.to_bytes(f.size, "little") if f.is_int else value
        return bytes(out)

    def replace(self: T, **changes: Any) -> T:
        return records.replace(self, **changes)

    def fields(self) -> dict[str, int | bytes]:
        """Field name -> value, in offset order."""
        return {f.name: getattr(self, f.name) for f in self.FIELDS}


def structure(size: int) -> Callable[[type[T]], type[T]]:
    """Class decorator: make the class a frozen record, attach and check the layout."""

    def wrap(cls: type[T]) -> type[T]:
        records.record(cls)
        specs = []
        for f in records.fields(cls):
            if "offset" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} has no offset")
            specs.append(FieldSpec(f.name, f.metadata["offset"], f.metadata["size"], f.metadata["int"]))
        end = 0
        for s in specs:
            if s.offset < end:
                raise TypeError(f"{cls.__name__}.{s.name} at {s.offset} overlaps the previous field (ends at {end})")
            end = s.offset + s.size
        if end > size:
            raise TypeError(f"{cls.__name__} fields end at {end}, beyond its size {size}")
        cls.SIZE = size
        cls.FIELDS = tuple(specs)
        return cls

    return wrap
