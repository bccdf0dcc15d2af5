"""The launchers in bin/: rune (started three times for every container) runs on the system's interpreter of the
same Python version when there is one, with the writing interpreter's site-packages after the standard library;
the other commands, or all with PYTHON_LAUNCHER_INTERPRETER=same, on the writing interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare import launcher

FAST = launcher.system_python()
OWN = os.path.realpath(sys.executable)


def _shebang(path) -> str:  # noqa: ANN001
    return path.read_text().splitlines()[0]


@pytest.mark.skipif(FAST is None, reason="no /usr/bin/python3.X of this version with the same bytecode magic here")
def test_hot_launchers_run_on_the_system_interpreter(tmp_path):
    launcher.write(str(tmp_path))
    for name in launcher.HOT:
        assert _shebang(tmp_path / name) == f"#!{FAST} -IS"
        assert repr(launcher.site_packages()) in (tmp_path / name).read_text()
    for name in set(launcher.LAUNCHERS) - set(launcher.HOT):
        assert _shebang(tmp_path / name) == f"#!{OWN} -IS"
    p = subprocess.run([str(tmp_path / "rune"), "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and f"(python {FAST})" in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(FAST is None, reason="no /usr/bin/python3.X of this version with the same bytecode magic here")
def test_the_system_interpreter_finds_the_writing_interpreters_packages_first(tmp_path):
    """What enclave work imports beyond the standard library comes from where it was installed, not from an older
    copy in the distribution's dist-packages."""
    script = tmp_path / "probe"
    src = str(Path(launcher.__file__).resolve().parents[1])
    text = launcher.text(FAST, src, "inclavare.tee", launcher.site_packages())
    script.write_text(text.replace("from inclavare.tee import main\ncode = main()",
                                   "import cryptography\nprint(cryptography.__file__)\ncode = 0"))
    script.chmod(0o755)
    p = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert any(p.stdout.startswith(d + "/") for d in launcher.site_packages()), p.stdout


def test_same_interpreter_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON_LAUNCHER_INTERPRETER", "same")
    launcher.write(str(tmp_path))
    for name in launcher.LAUNCHERS:
        text = (tmp_path / name).read_text()
        assert _shebang(tmp_path / name) == f"#!{OWN} -IS" and "sys.path +=" not in text
