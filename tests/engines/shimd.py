"""containerd with containerd-shim-rune-v2, for the shim's engine tests and bench/shim.py.

A private containerd (daemons.Containerd) whose PATH starts with the repository's bin/, so that runtime type
io.containerd.rune.v2 resolves to this tree's containerd-shim-rune-v2 launcher; a shim configuration of its own
(rune root, sim platform directory, enclave signing key made here, conversion cache, all under `base`), passed with
`ctr run --runtime-config-path` and as the CRI handler `rune`'s options.ConfigPath.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from tests.engines import daemons as d

from inclavare.shim.forkserver import COMM as FORK_SERVER

RUNTIME = "io.containerd.rune.v2"
BIN = d.REPO / "bin"


def write_config(path: Path, base: Path, **overrides: dict[str, object]) -> Path:
    """A shim config.toml with everything private to base; overrides: {table: {key: value}}."""
    tables: dict[str, dict[str, object]] = {
        "": {"log_level": "debug"},
        "rune": {"root": str(base / "rune-root")},
        "enclave_runtime": {"sim_dir": str(base / "sim")},
        "signature": {"private_key": str(base / "owner.pem")},
        "cache": {"dir": str(base / "cache")},
    }
    for table, values in overrides.items():
        tables.setdefault(table, {}).update(values)
    lines = []
    for table, values in tables.items():
        if table:
            lines.append(f"[{table}]")
        for k, v in values.items():
            lines.append(f"{k} = {toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def owner_key(path: Path) -> Path:
    if not path.exists():
        d.run([str(BIN / "sgx-tools"), "gen-key", str(path)])
    return path


class ShimContainerd(d.Containerd):
    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.config_path = base / "shim.toml"
        env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
        super().__init__(base, shims={"rune": str(self.config_path)}, env=env)
        self.namespace = "rune-shim-test"  # ctr's cgroups are /NAMESPACE/ID: apart from the other engine tests'
        owner_key(base / "owner.pem")
        write_config(self.config_path, base)

    @property
    def rune_root(self) -> Path:
        return self.base / "rune-root"

    def run_flags(self, config: Path | None = None) -> list[str]:
        return ["--runtime", RUNTIME, "--runtime-config-path", str(config or self.config_path)]

    def shim_pids(self) -> list[int]:
        """The shims (not their fork servers, which share their command line)."""
        return [p for p in self.shim_processes() if d.comm(p) != FORK_SERVER]

    def shim_processes(self) -> list[int]:
        """The shims and their fork servers."""
        return [p for p in d.pids_naming(self.sock) if "containerd-shim-rune-v2" in d._cmdline(p)]


def name(prefix: str = "s") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
