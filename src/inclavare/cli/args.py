"""A small command-line parser with runc's (urfave/cli) conventions: `-flag` or `--flag`, `--flag value` or
`--flag=value`, boolean flags without a value, flags before the positional arguments, `--` ends the flags.

argparse is not used: it imports `re` and gettext, which cost more than all of `rune start` does.
"""

from __future__ import annotations

from inclavare.errors import RuneError, q

BOOL, STR, INT, LIST = "bool", "str", "int", "list"
TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as urfave/cli reads --flag=value
FALSE = ("0", "f", "F", "FALSE", "false", "False")
container = ""  # the container id of the command, once parsed (for the CLI's last line of defence)


class Help(Exception):
    """--help or -h among a command's flags (where the command has no such flag of its own)."""


def boolean(flag: str, value: str, command: str = "") -> bool:
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    where = f"rune {command}: " if command else "rune: "
    raise RuneError(f"{where}invalid boolean value {ascii(value)} for flag {ascii(flag)} (true or false)")


def fd_count(flag: str, n: int) -> int:
    """--preserve-fds N: the fds 3 to 3+N-1 are passed on, and rune's own go above them, under its RLIMIT_NOFILE."""
    if n < 0:
        raise RuneError(f"{flag} {n}: cannot be negative")
    if n:
        from inclavare.linux.syscalls import getrlimit

        most = max(getrlimit(7)[0] - 3 - 32, 0)  # RLIMIT_NOFILE, less stdio and the descriptors rune needs
        if n > most:
            raise RuneError(f"{flag} {n}: at most {most} descriptors can be passed (rune's RLIMIT_NOFILE is "
                            f"{getrlimit(7)[0]})")
    return n


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
            if spec is None and name in ("help", "h") and not eq:
                raise Help(command)
            if spec is None:
                raise RuneError(f"rune {command}: flag provided but not defined: {q(a)}")
            kind, dest = spec
            if kind == BOOL:
                values[dest] = boolean(a.partition("=")[0], val, command) if eq else True
                continue
            if not eq:
                if i >= len(argv):
                    raise RuneError(f"rune {command}: flag needs an argument: {q(a)}")
                val = argv[i]
                i += 1
            if kind == INT:
                try:
                    if len(val) > 32:
                        raise ValueError
                    values[dest] = int(val, 0)
                except ValueError:
                    raise RuneError(f"rune {command}: invalid value {q(val)} for flag {q(a)}: not an integer") from None
            elif kind == LIST:
                values[dest].append(val)
            else:
                values[dest] = val
        else:
            positional.append(a)
    return Args(values, positional)


def need_id(command: str, args: Args, extra: int = 0) -> str:
    """The container id argument (runc's "requires exactly 1 argument")."""
    global container
    n = len(args.positional)
    if n < 1:
        raise RuneError(f'rune {command}: "{command}" requires a container id')
    if not extra and n > 1:
        raise RuneError(f'rune {command}: "{command}" requires exactly 1 argument, got {n}: '
                        f'{" ".join(q(a) for a in args.positional)}')
    container = args.positional[0]
    return container
