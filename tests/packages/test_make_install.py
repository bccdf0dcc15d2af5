"""`make install` into a private PREFIX from a copy of the checkout: the launchers name a private environment with
a non-editable copy of the package, `--version` of every command says where it runs from, and after the copy of
the checkout is deleted the installed rune still runs a container; `make uninstall` removes it all. And no generic
pip console script is declared that would shadow the lean launchers.

INSTALL_EXTRAS is empty here (the standard-library-only core: rune, sgx-tools' sim parts), so the test needs no
package index; the extras' dependencies come from the index as for the deb.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO, default_config, new_id

COMMANDS = ("rune", "sgx-tools", "containerd-shim-rune-v2", "rune-signing-server", "verdictd", "verdict",
            "rune-device-plugin")


def test_no_console_scripts_shadow_the_launchers() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not meta.get("scripts") and not meta.get("gui-scripts")


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def test_make_install_survives_the_checkout(rootfs: Path, tmp_path: Path) -> None:
    checkout, prefix = tmp_path / "checkout", tmp_path / "prefix"
    copy_checkout(checkout)
    env = {**os.environ, "INSTALL_EXTRAS": ""}
    env.pop("PYTHONPATH", None)
    p = subprocess.run(["make", "-s", "install", f"PREFIX={prefix}", f"PYTHON={sys.executable}"], cwd=checkout,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    venv = prefix / "lib/inclavare-containers/venv"
    site = next(venv.glob("lib/python3.*/site-packages"))
    assert (site / "inclavare/cli/rune.py").is_file()
    assert not list(site.glob("*.pth")) and not list(site.glob("__editable__*")), "an editable install"
    assert sorted(p.name for p in (venv / "bin").iterdir() if not p.name.startswith("python")) == []
    shutil.rmtree(checkout)  # the checkout moves away: nothing installed may need it

    for c in COMMANDS:
        launcher = prefix / "bin" / c
        text = launcher.read_text()
        assert text.startswith(f"#!{venv}/bin/python3.") and " -IS\n" in text.splitlines()[0] + "\n", text
        assert str(checkout) not in text and str(REPO) not in text
        v = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, env={}, timeout=60)
        assert v.returncode == 0, (c, v.stderr)
        assert f"{site}/inclavare" in v.stdout, (c, v.stdout)

    rune, root = str(prefix / "bin/rune"), tmp_path / "root"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(default_config(rootfs, ["sh", "-c", "echo installed-rune"])))
    cid = new_id("inst")
    r = subprocess.run([rune, "--root", str(root), "run", "--bundle", str(bundle), cid], capture_output=True,
                       text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=60)
    subprocess.run([rune, "--root", str(root), "delete", "--force", cid], capture_output=True)
    assert r.returncode == 0 and r.stdout == "installed-rune\n", r.stderr

    # uninstall from a fresh copy (the first one is gone, as after a move)
    copy_checkout(checkout)
    u = subprocess.run(["make", "-s", "uninstall", f"PREFIX={prefix}", f"PYTHON={sys.executable}"], cwd=checkout,
                       env=env, capture_output=True, text=True, timeout=120)
    assert u.returncode == 0, u.stdout + u.stderr
    assert not (prefix / "lib/inclavare-containers").exists()
    assert not any((prefix / "bin" / c).exists() for c in COMMANDS)


