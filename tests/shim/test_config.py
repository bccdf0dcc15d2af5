"""config.toml: the subset reader agrees with tomllib on what it accepts and hands everything else to it; bad
values are one sentence naming the key and the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from inclavare.errors import RuneError
from inclavare.shim import config

DOCS = [
    'log_level = "debug"\n[rune]\nroot = "/run/x"  # comment\nbinary = \'/usr/bin/rune\'\n',
    '# only a comment\n\n[signature]\nserver_address = "http://h:9080"\ndebug = true\n[cache]\nmax_entries = 8\n',
    '[enclave_runtime]\nsignature_method = "client"\n[enclave_runtime.occlum]\nenclave_runtime_path = "/x.so"\n',
    'a = "tab\\t quote\\" slash\\\\ \\u00e9"\nb = ["x", \'y\']\nc = -3\n',
]
NOT_SUBSET = ['a = """multi\nline"""\n', 'a.b = 1\n', "a = 1_000\n", "a = 1.5\n", "[[arr]]\nx = 1\n",
              'a = {x = 1}\n', 'a = 1979-05-27\n', '"quoted key" = 1\n']


@pytest.mark.parametrize("text", DOCS)
def test_subset_agrees_with_tomllib(text: str) -> None:
    assert config.parse_subset(text) == tomllib.loads(text)


@pytest.mark.parametrize("text", NOT_SUBSET)
def test_outside_the_subset_goes_to_tomllib(text: str) -> None:
    with pytest.raises(config._Unsupported):
        config.parse_subset(text)
    assert config.parse(text, "x.toml") == tomllib.loads(text)


def test_defaults_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(DOCS[1] + "[rune]\nroot = '/r'\n")
    c = config.load(str(p))
    assert c.text("signature", "server_address") == "http://h:9080" and c.get("cache", "max_entries") == 8
    assert c.text("rune", "root") == "/r" and c.signature_method == "server"


@pytest.mark.parametrize(("text", "sentence"), [
    ("[rune]\nroot = 3\n", "'rune.root' in the shim configuration {p} must be a str"),
    ("[rune]\nbogus = 'x'\n", "unknown key 'rune.bogus' in the shim configuration {p}"),
    ("[enclave_runtime]\nsignature_method = 'hsm'\n", "'enclave_runtime.signature_method' in {p} is 'hsm'"),
    ("log_level = 'loud'\n", "'log_level' in {p} is 'loud'"),
    ("[rune\n", "the shim configuration {p} is not valid TOML"),
])
def test_bad_values(tmp_path: Path, text: str, sentence: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(RuneError) as e:
        config.load(str(p))
    assert sentence.format(p=p) in str(e.value)


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RuneError, match="does not exist"):
        config.load(str(tmp_path / "missing.toml"))


def test_the_documented_configuration_is_the_defaults() -> None:
    """docs/shim.md's config.toml block lists every table and key the shim reads, with its default (the original's
    sgx_tool_sign, read and ignored, aside)."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs/shim.md").read_text()
    block = re.search(r"## Configuration.*?```toml\n(.*?)```", doc, re.S)
    assert block, "docs/shim.md has no config.toml block"
    shown = tomllib.loads(block.group(1))
    want = {t: dict(v) for t, v in config.DEFAULTS.items() if t}
    want_top = {k: v for k, v in config.DEFAULTS[""].items() if k != "sgx_tool_sign"}
    assert {k: v for k, v in shown.items() if not isinstance(v, dict)} == want_top
    assert {k: v for k, v in shown.items() if isinstance(v, dict)} == want
