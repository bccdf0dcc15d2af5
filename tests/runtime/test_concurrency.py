"""The state store's promise under concurrency: whatever commands race, every container has a valid state.json or
none, and nothing is left once they are deleted."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import cgroup_leftovers, new_id
from tests.runtime.helpers import alive_with


def _valid_state(rune, cid: str) -> None:
    """state.json, if there is one, reads as rune writes it (the store's reader checks it against its table)."""
    from inclavare.runtime.store import read_state

    read_state(str(rune.root / cid / "state.json"))


def test_50_parallel_create_start_delete(rune):
    b = rune.bundle(["sleep", "0.1"])
    ids = [new_id("p") for _ in range(50)]

    def journey(cid: str) -> str:
        for args in (("create", "-b", str(b), cid), ("start", cid), ("delete", "--force", cid)):
            p = rune(*args)
            if p.returncode or p.stderr:
                return f"{args[0]} {cid}: {p.returncode} {p.stderr}"
        return ""

    with ThreadPoolExecutor(50) as ex:
        errors = [e for e in ex.map(journey, ids) if e]
    assert errors == []
    assert not rune.root.exists() or list(rune.root.iterdir()) == []
    for cid in ids:
        assert cgroup_leftovers(cid) == [] and alive_with(cid) == []


def test_20_commands_racing_on_one_id(rune):
    """create (several), start, state, kill, pause, resume, delete and delete --force at once on one id, five
    rounds: each answers with rc 0 or one sentence, state.json stays valid while they run, and a last delete
    --force leaves nothing."""
    b = rune.bundle(["sleep", "30"])
    commands = ([("create", "-b", str(b))] * 5 + [("start",)] * 3 + [("state",)] * 3 + [("kill",)] * 2 +
                [("pause",), ("resume",), ("delete",)] + [("delete", "--force")] * 3 + [("exec",)])
    assert len(commands) == 20
    for _ in range(5):
        cid = new_id("r")
        stop = threading.Event()
        bad: list[str] = []

        def watch(cid: str = cid, stop: threading.Event = stop, bad: list = bad) -> None:
            while not stop.is_set():
                try:
                    _valid_state(rune, cid)
                except Exception as err:  # noqa: BLE001 - collected for the assertion
                    bad.append(str(err))

        def one(args: tuple, cid: str = cid) -> str:
            argv = [*args, cid, "true"] if args[0] == "exec" else [*args, cid]
            p = rune(*argv)
            lines = p.stderr.splitlines()
            if args[0] == "exec" and p.returncode in (128 + 9, 128 + 15) and not p.stderr:
                return ""  # the exec'd program killed with the container by the racing kill or delete --force (as runc)
            if "Traceback" in p.stderr or (p.returncode and len(lines) != 1) or len(lines) > 1:
                return f"{argv}: {p.returncode} {p.stderr!r}"
            if args[0] == "state" and p.returncode == 0:
                assert json.loads(p.stdout)["status"] in ("creating", "created", "running", "paused", "stopped")
            return ""

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(20) as ex:
                errors = [e for e in ex.map(one, commands) if e]
        finally:
            stop.set()
            watcher.join()
        assert errors == [] and bad == []
        assert rune("delete", "--force", cid).returncode == 0
        assert not (rune.root / cid).exists() and cgroup_leftovers(cid) == [] and alive_with(cid) == []
