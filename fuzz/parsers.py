"""The in-process targets of the coverage-guided fuzzers (atheris), shared with the regression tests that replay
what they found: the config.json reader (file checks, JSON, validation table, meaning checks) and the state.json
reader with the status derived from it. Any exception but RuneError is a defect."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from inclavare.errors import RuneError

_WORK = tempfile.mkdtemp(prefix="rune-atheris-")
atexit.register(shutil.rmtree, _WORK, True)
os.makedirs(os.path.join(_WORK, "bundle", "rootfs"), exist_ok=True)
os.makedirs(os.path.join(_WORK, "root", "c"), exist_ok=True)


def config_parser(data: bytes) -> None:
    from inclavare.oci import config

    with open(os.path.join(_WORK, "bundle", "config.json"), "wb") as f:
        f.write(data)
    try:
        config.load(os.path.join(_WORK, "bundle"))
    except RuneError:
        pass


def state_reader(data: bytes) -> None:
    from inclavare.runtime.status import oci_state
    from inclavare.runtime.store import Container

    c = Container(os.path.join(_WORK, "root"), "c")
    with open(c.state_path, "wb") as f:
        f.write(data)
    try:
        oci_state(c, c.read())
    except RuneError:
        pass


TARGETS = {"config": config_parser, "state": state_reader}
