"""Freezing a cgroup: v1 freezer.state, v2 cgroup.freeze; both wait until the kernel reports it frozen."""

from __future__ import annotations

import time

from inclavare.errors import RuneError

from .files import read, read_or, write_raw

TIMEOUT = 5.0


def _wait(check, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    delay = 0.0005
    while not check():
        if time.monotonic() > deadline:
            raise RuneError(f"{what} did not finish within {TIMEOUT:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def v1_set(directory: str, frozen: bool) -> None:
    path = directory + "/freezer.state"
    want = "FROZEN" if frozen else "THAWED"
    try:
        write_raw(path, want)
    except OSError as err:
        raise RuneError(f"cannot write {want} to {path} ({err.strerror})") from None

    def done() -> bool:
        state = read(path)
        if state == "FREEZING":
            write_raw(path, want)  # tasks forked meanwhile are caught by asking again
        return state == want

    _wait(done, f"{'freezing' if frozen else 'thawing'} {directory}")


def v1_state(directory: str) -> str:
    return "FROZEN" if read_or(directory + "/freezer.state") == "FROZEN" else "THAWED"


def v2_set(directory: str, frozen: bool) -> None:
    path = directory + "/cgroup.freeze"
    try:
        write_raw(path, "1" if frozen else "0")
    except OSError as err:
        raise RuneError(f"cannot write to {path} ({err.strerror})") from None
    want = "frozen 1" if frozen else "frozen 0"
    _wait(lambda: want in read(directory + "/cgroup.events").splitlines(),
          f"{'freezing' if frozen else 'thawing'} {directory}")


def v2_state(directory: str) -> str:
    return "FROZEN" if read_or(directory + "/cgroup.freeze") == "1" else "THAWED"
