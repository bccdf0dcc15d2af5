"""The tools and daemons beside rune answer a usage error as rune does: one sentence naming the program and what is
wrong, exit status 1 (not argparse's usage block and 2), and `--help` still prints the usage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CASES = [
    ("epm", [], "the following arguments are required: --config"),
    ("verdictd", ["--config", "x.toml", "--bogus"], "unrecognized arguments: --bogus"),
    ("verdict", [], "the following arguments are required: COMMAND"),
    ("rune-signing-server", [], "the following arguments are required: --private-key"),
    ("rune-device-plugin", ["--interval", "0"], "--interval must be positive"),
    ("sgx-tools", ["nosuch"], "argument COMMAND: invalid choice: 'nosuch'"),
    ("sgx-tools", ["sign-bundle"], "sgx-tools sign-bundle: the following arguments are required: --key, bundle"),
]


@pytest.mark.parametrize(("prog", "argv", "want"), CASES, ids=[f"{c[0]} {' '.join(c[1])}".strip() for c in CASES])
def test_a_usage_error_is_one_sentence_and_exit_1(rune_bin: str, prog: str, argv: list[str], want: str) -> None:
    p = subprocess.run([str(Path(rune_bin).with_name(prog)), *argv], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stdout == "" and p.stderr.count("\n") == 1 and p.stderr.startswith(f"{prog}"), p.stderr
    assert want in p.stderr and f"(see '{prog}" in p.stderr, p.stderr


@pytest.mark.parametrize("prog", sorted({c[0] for c in CASES}))
def test_help_still_prints_the_usage(rune_bin: str, prog: str) -> None:
    p = subprocess.run([str(Path(rune_bin).with_name(prog)), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith(f"usage: {prog}"), (p.returncode, p.stdout, p.stderr)
