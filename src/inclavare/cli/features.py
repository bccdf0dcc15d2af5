"""rune features: the runtime-spec features JSON."""

from __future__ import annotations

from inclavare.cli import args as a
from inclavare.errors import RuneError


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, {})
    if p.positional:
        raise RuneError(f'rune features: takes no arguments, got {" ".join(p.positional)}')
    import json

    from inclavare.oci.features import features

    print(json.dumps(features(), indent=4))
    return 0
