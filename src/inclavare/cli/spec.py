"""rune spec [--bundle DIR] [--rootless] [--enclave]: write a config.json template."""

from __future__ import annotations

import os

from inclavare.cli import args as a
from inclavare.errors import RuneError

FLAGS = {"bundle": (a.STR, "bundle"), "b": (a.STR, "bundle"), "rootless": (a.BOOL, "rootless"),
         "enclave": (a.BOOL, "enclave")}  # fmt: skip


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    if p.positional:
        raise RuneError(f"rune spec: takes no arguments, got {' '.join(p.positional)}")
    import json

    from inclavare.oci import spec

    s = spec.default()
    if p.rootless:
        s = spec.rootless(s)
    if p.enclave:
        from inclavare.enclave import template

        s = template.enclave_spec(s)
    bundle = p.bundle or "."
    if not os.path.isdir(bundle):
        raise RuneError(f"rune spec: bundle {bundle}: no such directory")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise RuneError(f"{path} exists: remove it first")
    with open(path, "w") as f:
        f.write(json.dumps(s, indent="\t"))
    return 0
