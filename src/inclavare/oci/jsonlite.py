"""JSON through the C accelerator alone.

`import json` costs about 5 ms because json.decoder and json.encoder import `re` (and with it enum and functools).
The hot path needs only loads and compact dumps, which the `_json` extension provides without them. Error paths
fall back to the json module for its messages.
"""

from __future__ import annotations

import _json
import os

_WS = " \t\n\r"
MAX_DEPTH = 64  # arrays and objects inside each other: runtime-spec documents need 7


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_Context)


def loads(s: str | bytes) -> object:
    """Parse one JSON document; ValueError (json.JSONDecodeError) with line and column when it is not valid."""
    if isinstance(s, bytes):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, start)
    except (StopIteration, ValueError, SystemError):
        # The accelerator builds its error from json.decoder, which may not be imported yet: let json say it.
        end = -1
    except RecursionError:
        raise ValueError("arrays and objects are nested too deeply") from None
    finally:
        _Context.memo.clear()
    if end < 0 or s[end:].strip(_WS):
        import json

        try:
            return json.loads(s)
        except json.JSONDecodeError:
            raise
        except ValueError:  # int(): more digits than Python converts
            raise ValueError("a number has too many digits") from None
    return obj


_BRACKETS = frozenset(b"[]{}")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in _BRACKETS)


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` levels deep, found without parsing it (the
    parser, and every walk over what it returns, recurse once per level). Brackets inside strings do not count."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # drop escaped backslashes, then escaped quotes: the quotes left delimit the strings
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(text.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    depth = 0
    for c in brackets:
        if c == 91 or c == 123:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class Unreadable(ValueError):
    """A file that is not read: not a regular file, or larger than the limit. str() says which."""


def read_file(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. OSError when it cannot be opened or read; Unreadable for
    a device, fifo, socket or directory (never read: /dev/zero has no end, a fifo may block) or a larger file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode & 0o170000
        if mode != 0o100000:
            kind = {0o040000: "a directory", 0o020000: "a character device", 0o060000: "a block device",
                    0o010000: "a fifo", 0o140000: "a socket"}.get(mode, "not a regular file")
            raise Unreadable(f"is {kind}, not a regular file")
        chunks = []
        size = 0
        while chunk := os.read(fd, min(limit + 1 - size, 1 << 20) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Unreadable(f"is larger than {limit >> 20} MiB")
    finally:
        os.close(fd)
    return b"".join(chunks)


def _default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(obj: object) -> str:
    """Compact JSON (no spaces), ASCII-only, as Go's encoding/json writes it."""
    return "".join(_encode(obj, 0))


_encode_sorted = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", True, False, True)


def dumps_canonical(obj: object) -> str:
    """Compact ASCII JSON with sorted keys: json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True), byte for byte (what the sim enclave manifest is measured as)."""
    return "".join(_encode_sorted(obj, 0))


def dumps_indent(obj: object, indent: str = "  ", level: int = 0) -> str:
    """Indented JSON as json.dumps(obj, indent=...) writes it (for `rune state`, which engines call often)."""
    pad = indent * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{dumps(str(k))}: {dumps_indent(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent * level + "}"
    if isinstance(obj, list) and obj:
        items = [pad + dumps_indent(v, indent, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + indent * level + "]"
    return dumps(obj)


def read_json(path: str, limit: int, depth: int = MAX_DEPTH, raw: bytes | None = None) -> object:
    """A JSON document from a regular file of at most `limit` bytes; RuneError naming the file for anything else
    (OSError for a file that cannot be opened, so that callers can say what a missing one means). `raw`: the file's
    bytes as read_file read them, when the caller has them already."""
    from inclavare.errors import RuneError, q

    source = q(path)
    try:
        if raw is None:
            raw = read_file(path, limit)
    except Unreadable as e:
        raise RuneError(f"{source}: {e}") from None
    if too_deep(raw, depth):
        raise RuneError(f"{source}: not accepted: arrays and objects are nested more than {depth} levels deep")
    try:
        return loads(raw)
    except UnicodeDecodeError as e:
        raise RuneError(f"{source}: not valid JSON: invalid UTF-8 at byte {e.start}") from None
    except ValueError as e:
        raise RuneError(f"{source}: not valid JSON: {e}") from None
