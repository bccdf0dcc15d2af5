"""`rune help CMD`, `rune CMD --help` / `-h` and `--log-level`, with runc's wording where runc has the flag."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, new_id

sys.path.insert(0, str(REPO / "src"))
from inclavare.cli.rune import COMMANDS  # noqa: E402

RUNC = shutil.which("runc")


def _rune(rune_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([rune_bin, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_help_of_every_command(rune_bin, cmd):
    shown = _rune(rune_bin, "help", cmd)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout.startswith(f"NAME:\n   rune {cmd} - ")
    assert f"USAGE:\n   rune {cmd} [command options]" in shown.stdout and "--help, -h" in shown.stdout
    for spelling in ("--help", "-h"):
        p = _rune(rune_bin, cmd, spelling)
        assert (p.returncode, p.stdout, p.stderr) == (0, shown.stdout, ""), spelling


def _options(text: str) -> dict[str, str]:
    """--long flag: description, from a urfave/cli help text."""
    out = {}
    for line in text.split("OPTIONS:", 1)[-1].splitlines():
        m = re.match(r"^\s+(--[a-z-]+)[^ ]*(?: value)?(?:, -\w(?: value)?)?\s{2,}(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
@pytest.mark.parametrize("cmd", ["create", "run", "exec", "kill", "delete", "list", "ps", "events"])
def test_flags_described_in_runcs_words(rune_bin, cmd):
    """Every flag rune shares with runc is described as runc describes it (runc may say more after)."""
    mine = _options(_rune(rune_bin, cmd, "--help").stdout)
    theirs = _options(subprocess.run([RUNC, cmd, "--help"], capture_output=True, text=True).stdout)
    shared = set(mine) & set(theirs) - {"--help", "--preserve-fds"}  # runc's names $LISTEN_FDS, which rune does not
    assert shared
    for flag in shared:
        assert theirs[flag].startswith(mine[flag][:40]), (flag, mine[flag], theirs[flag])


def test_help_errors(rune_bin):
    p = _rune(rune_bin, "help", "nope")
    assert (p.returncode, p.stderr) == (1, "rune help: no such command 'nope' (see rune --help)\n")
    p = _rune(rune_bin, "help")
    assert p.returncode == 0 and p.stdout.startswith("NAME:\n   rune - ")
    # after the program of an exec, --help is the program's
    p = _rune(rune_bin, "exec", "nosuch", "sh", "--help")
    assert p.returncode == 255 and "does not exist" in p.stderr


def test_log_level(rune, tmp_path):
    """--log-level as runc's: debug writes debug lines; error silences warnings (a failing poststop hook here);
    an unknown level is refused naming the flag."""
    b = rune.bundle(["true"], edit=lambda c: c.update(hooks={"poststop": [{"path": "/bin/false"}]}))
    logs = {}
    for level in ("debug", "info", "error"):
        log = tmp_path / f"{level}.log"
        p = rune("--log", str(log), "--log-format", "json", "--log-level", level, "run", "--bundle", str(b), new_id())
        assert p.returncode == 0, p.stderr
        logs[level] = [json.loads(line)["level"] for line in log.read_text().splitlines()] if log.exists() else []
        if level == "error":
            assert p.stderr == ""
    assert "debug" in logs["debug"] and "warning" in logs["debug"]
    assert logs["info"] == ["warning"]
    assert logs["error"] == []
    p = rune("--log-level", "loud", "state", "x")
    assert (p.returncode, p.stderr) == (1, "rune: --log-level: invalid log level loud (debug, info, warn or error)\n")


def test_help_is_not_imported_on_the_hot_path(rune_bin):
    p = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S", rune_bin, "state", "nosuch"],
                       capture_output=True, text=True)
    assert "inclavare.cli.rune" in p.stderr and "inclavare.cli.help" not in p.stderr


def test_every_command_has_a_help_entry():
    from inclavare.cli import help as h

    assert set(h.COMMANDS) == set(COMMANDS)
    assert Path(h.__file__).name == "help.py"
