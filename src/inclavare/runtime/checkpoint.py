"""`checkpoint` and `restore` need CRIU. rune does not drive CRIU yet: these commands check the container and
CRIU on this host and say precisely why a checkpoint cannot be taken here."""

from __future__ import annotations

import os
import shutil
import subprocess

from inclavare.errors import RuneError
from inclavare.runtime.status import status
from inclavare.runtime.store import Container


def check_criu(command: str, criu: str = "criu") -> str:
    """The path of a CRIU that passes `criu check`; RuneError naming why not."""
    path = shutil.which(criu) if "/" not in criu else (criu if os.access(criu, os.X_OK) else None)
    if not path:
        raise RuneError(f"{command} needs CRIU: install the criu package (no {criu!r} found)")
    try:
        p = subprocess.run([path, "check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuneError(f"{command}: cannot run `{path} check`: {e}") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        why = "; ".join(lines[:2]) if lines else f"exit status {p.returncode}"
        raise RuneError(f"{command}: CRIU cannot work on this host (`criu check` failed: {why})")
    return path


def checkpoint(container: Container, criu: str = "criu") -> None:
    if not container.lock():
        raise RuneError(f"container {container.id!r} does not exist")
    try:
        st = status(container, container.read())
    finally:
        container.unlock()
    if st not in ("running", "paused"):
        raise RuneError(f"container {container.id!r} is not running ({st}): nothing to checkpoint")
    check_criu("checkpoint", criu)
    raise RuneError("checkpoint: CRIU works on this host, but rune does not implement checkpoint yet")


def restore(container: Container, criu: str = "criu") -> None:
    if os.path.isdir(container.dir):
        raise RuneError(f"container {container.id!r} already exists: restore needs a new container id")
    check_criu("restore", criu)
    raise RuneError("restore: CRIU works on this host, but rune does not implement restore yet")
