"""JSON through the C accelerator alone.

`import json` costs about 5 ms because json.decoder and json.encoder import `re` (and with it enum and functools).
The hot path needs only loads and compact dumps, which the `_json` extension provides without them. Error paths
fall back to the json module for its messages.
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"


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
    finally:
        _Context.memo.clear()
    if end < 0 or s[end:].strip(_WS):
        import json

        return json.loads(s)
    return obj


def _default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(obj: object) -> str:
    """Compact JSON (no spaces), ASCII-only, as Go's encoding/json writes it."""
    return "".join(_encode(obj, 0))


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
