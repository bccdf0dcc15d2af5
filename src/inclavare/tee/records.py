"""Frozen records: what `@dataclass(frozen=True)` gives the TEE's value types (an __init__ from the annotated fields
and their defaults, __post_init__, __eq__, __hash__, __repr__, immutability, `replace`, `fields`), without importing
`dataclasses`.

Why not the standard module: `dataclasses` imports `inspect` (and with it ast, dis, tokenize, enum) and compiles an
__init__ per class with exec; on a sim enclave's launch path, which defines some twenty such classes in a fresh
process at every container start, that was about a third of the enclave's start-up cost. The semantics kept are the
subset the TEE uses: fields are the class's own annotations in order (after its record bases'), `ClassVar[...]`
annotations are not fields, a field's default is its class attribute or `field(default=..., default_factory=...,
metadata=...)`, fields without a default come first.
"""

from __future__ import annotations

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    __slots__ = ("name", "default", "default_factory", "metadata")

    def __init__(self, default: object = _MISSING, default_factory: object = _MISSING,
                 metadata: dict | None = None) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.metadata = metadata or {}

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def field(*, default: object = _MISSING, default_factory: object = _MISSING, metadata: dict | None = None):  # noqa: ANN201
    """A field with a default, a default factory (called for each new record) and/or metadata."""
    return Field(default, default_factory, metadata)


def fields(record: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    return (record if isinstance(record, type) else type(record)).__record_fields__


def replace(record: object, **changes: object):  # noqa: ANN201
    """A copy of `record` with some fields changed (its __post_init__ checks run again)."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(record)(**values)


def _init(self, *args: object, **kwargs: object) -> None:  # noqa: ANN001
    specs = self.__record_fields__
    if len(args) > len(specs):
        raise TypeError(f"{type(self).__name__}() takes {len(specs)} positional arguments, {len(args)} given")
    setter = object.__setattr__
    for f, value in zip(specs, args, strict=False):
        if f.name in kwargs:
            raise TypeError(f"{type(self).__name__}() got multiple values for argument {f.name!r}")
        setter(self, f.name, value)
    for f in specs[len(args):]:
        if f.name in kwargs:
            value = kwargs.pop(f.name)
        elif f.default_factory is not _MISSING:
            value = f.default_factory()
        elif f.default is not _MISSING:
            value = f.default
        else:
            raise TypeError(f"{type(self).__name__}() is missing the argument {f.name!r}")
        setter(self, f.name, value)
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got an unexpected argument {sorted(kwargs)[0]!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _values(self) -> tuple:  # noqa: ANN001
    return tuple(getattr(self, f.name) for f in self.__record_fields__)


def _eq(self, other: object) -> bool:  # noqa: ANN001
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self) -> int:  # noqa: ANN001
    return hash(_values(self))


def _repr(self) -> str:  # noqa: ANN001
    return f"{type(self).__qualname__}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in fields(self))})"


def _setattr(self, name: str, value: object) -> None:  # noqa: ANN001
    raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _delattr(self, name: str) -> None:  # noqa: ANN001
    raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


def record(cls: type) -> type:
    """Class decorator: make `cls` a frozen record (see the module docstring)."""
    specs: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            specs[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(value)
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        f.name = name
        specs[name] = f
    seen_default = False
    for f in specs.values():
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: the field {f.name!r} without a default follows one with a default")
        seen_default = seen_default or has_default
    cls.__record_fields__ = tuple(specs.values())
    cls.__init__ = _init
    cls.__eq__ = _eq
    cls.__hash__ = _hash
    cls.__setattr__ = _setattr
    cls.__delattr__ = _delattr
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _repr
    cls.__match_args__ = tuple(specs)
    return cls
