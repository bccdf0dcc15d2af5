"""argparse for the tools and daemons beside rune (sgx-tools, epm, verdictd, verdict, rune-signing-server,
rune-device-plugin): a usage error is one sentence naming the program, exit status 1, as every other bad input is
(argparse's own way is its usage block and exit status 2). `--help` is unchanged."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see '{self.prog} --help')\n")
        raise SystemExit(1)
