"""Where this copy of inclavare runs from, for every command's `--version`.

A launcher written by `make install` (or a package) names a private environment; the checkout's bin/ names the
checkout's src/. An operator who finds an engine calling /usr/local/bin/rune can tell which copy that is.
"""

import os
import sys

from inclavare import __version__


def location() -> str:
    """The directory the inclavare package is imported from and the interpreter that runs it."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    return f"{pkg} (python {sys.executable})"


def version_text(prog: str) -> str:
    return f"{prog} version {__version__}\nfrom: {location()}"


def add_version_flag(parser, prog: str) -> None:  # noqa: ANN001 - an argparse.ArgumentParser
    """`--version` on an argparse command: the version and location lines as they are (argparse's own action
    rewraps them), then exit 0 before the required arguments are checked."""
    import argparse

    class _Version(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
            sys.stdout.write(version_text(prog) + "\n")
            parser.exit(0)

    parser.add_argument("--version", nargs=0, action=_Version, help="print the version and where it runs from")
