"""A small command-line parser with runc's (urfave/cli) conventions: `-flag` or `--flag`, `--flag value` or
`--flag=value`, boolean flags without a value, flags before the positional arguments, `--` ends the flags.

argparse is not used: it imports `re` and gettext, which cost more than all of `rune start` does.
"""

from __future__ import annotations

from inclavare.errors import RuneError

BOOL, STR, INT, LIST = "bool", "str", "int", "list"


class Args:
    def __init__(self, values: dict, positional: list[str]) -> None:
        self.values = values
        self.positional = positional

    def __getattr__(self, name: str):
        return self.values.get(name)


def parse(command: str, argv: list[str], flags: dict[str, tuple[str, str]], stop_at_positional: bool = True) -> Args:
    """flags maps every spelling (without dashes) to (kind, destination name)."""
    values: dict = {}
    for kind, dest in flags.values():
        values.setdefault(dest, False if kind == BOOL else [] if kind == LIST else None)
    positional: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            positional.extend(argv[i:])
            break
        if len(a) > 1 and a[0] == "-" and not (positional and stop_at_positional):
            name, eq, val = a.lstrip("-").partition("=")
            spec = flags.get(name)
            if spec is None:
                raise RuneError(f"rune {command}: flag provided but not defined: {a}")
            kind, dest = spec
            if kind == BOOL:
                values[dest] = val.lower() not in ("false", "0") if eq else True
                continue
            if not eq:
                if i >= len(argv):
                    raise RuneError(f"rune {command}: flag needs an argument: {a}")
                val = argv[i]
                i += 1
            if kind == INT:
                try:
                    values[dest] = int(val, 0)
                except ValueError:
                    raise RuneError(f"rune {command}: invalid value {val!r} for flag {a}: not an integer") from None
            elif kind == LIST:
                values[dest].append(val)
            else:
                values[dest] = val
        else:
            positional.append(a)
    return Args(values, positional)


def need_id(command: str, args: Args, extra: int = 0) -> str:
    """The container id argument (runc's "requires exactly 1 argument")."""
    n = len(args.positional)
    if n < 1:
        raise RuneError(f'rune {command}: "{command}" requires a container id')
    if not extra and n > 1:
        raise RuneError(f'rune {command}: "{command}" requires exactly 1 argument, got {n}: {" ".join(args.positional)}')
    return args.positional[0]
