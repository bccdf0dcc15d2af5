"""The packages' systemd units against what the packages install (packaging/build.py), without building one: every
configuration file a unit's ExecStart names is shipped, and loads; the directories a configuration names are the
ones the unit has systemd make (RuntimeDirectory under /run, StateDirectory under /var/lib)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "packaging/systemd").glob("*.service"))


def _build():
    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging/build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unit(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_the_configuration_a_unit_names_is_shipped(unit: Path) -> None:
    build = _build()
    cmd = shlex.split(_unit(unit)["ExecStart"])
    assert build.UNITS[unit.name] == Path(cmd[0]).name, cmd
    if "--config" not in cmd:
        return
    config = cmd[cmd.index("--config") + 1]
    assert config in build.CONFIGS, f"{unit.name} starts {cmd[0]} with {config}, which the packages do not install"
    src, owner = build.CONFIGS[config]
    assert owner == Path(cmd[0]).name and (REPO / src).is_file()


def test_the_packaged_epm_configuration_loads_and_fits_its_unit() -> None:
    build = _build()
    src = REPO / build.CONFIGS[build.EPM_CONFIG][0]
    p = subprocess.run([str(REPO / "bin/epm"), "--config", str(src), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    unit = _unit(REPO / "packaging/systemd/epm.service")
    conf = tomllib.loads(src.read_text())
    assert Path(conf["socket"]).parent == Path("/run", unit["RuntimeDirectory"])
    assert Path(conf["cache_dir"]) == Path("/var/lib", unit["StateDirectory"])
    assert unit["RuntimeDirectoryMode"] == unit["StateDirectoryMode"] == "0700"
