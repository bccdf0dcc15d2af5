"""jsonlite must read and write exactly what the json module does."""

from __future__ import annotations

import json

import pytest

from inclavare.oci import jsonlite

DOCS = [
    {"a": 1, "b": [1, {"c": None}], "d": {}, "e": [], "f": 'é"x\n', "g": 1.5, "h": True, "i": -3},
    [],
    {},
    "x",
    [1, [2, [3]]],
    {"nested": {"deep": {"list": [{"k": "v"}]}}},
]


@pytest.mark.parametrize("doc", DOCS)
def test_round_trip_matches_json(doc):
    text = json.dumps(doc)
    assert jsonlite.loads(text) == doc
    assert jsonlite.loads(text.encode()) == doc
    assert jsonlite.dumps(doc) == json.dumps(doc, separators=(",", ":"))
    assert jsonlite.dumps_indent(doc) == json.dumps(doc, indent=2)


@pytest.mark.parametrize("bad", ['{"a": 1,}', '{"a": 1} x', "[1,", "nul", ""])
def test_invalid_json_raises_with_position(bad):
    with pytest.raises(ValueError) as e:
        jsonlite.loads(bad)
    assert "line 1" in str(e.value)


def test_leading_bom_and_whitespace():
    assert jsonlite.loads(b"\xef\xbb\xbf \n {\"a\": 2} \n") == {"a": 2}
