"""Property-based fuzzing of rune with hypothesis: hostile config.json files (every field of the runtime-spec table)
and hostile argument vectors, each run through the real rune binary against a private root, with rune's promise
checked for every input (harness.py). `make test` runs a bounded, repeatable number of examples; `make fuzz` runs
tests/fuzz/run.py, which keeps them going for a given time, reports cases and defects, and saves each defect it finds
to tests/fuzz/cases/, which test_found_cases replays as regular tests."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from hypothesis import given
from tests.conftest import default_config
from tests.fuzz import harness, strategies

CASES = Path(__file__).parent / "cases"
STATS = harness.STATS
_CURRENT = os.environ.get("FUZZ_CURRENT", "")  # where run.py wants the failing case written (make fuzz only)


def _cgroup_dirs(doc: object) -> list[str]:
    """The cgroup directories a config's cgroupsPath names (under the fuzz prefix only, by the strategies)."""
    try:
        path = doc["linux"]["cgroupsPath"]  # type: ignore[index]
        from inclavare.linux import cgroups

        return list(cgroups.Manager("x", path).paths.values()) if isinstance(path, str) else []
    except Exception:  # noqa: BLE001 - not a usable cgroupsPath: nothing was made for it
        return []


def run_config(work, data: bytes, cgroup_dirs: list[str]) -> str:  # noqa: ANN001
    run = harness.Run(work.rune, work.path, work.root)
    bundle = work.path / "cfg"
    try:
        outcome = harness.check_config(run, bundle, data, f"rune-fuzz-{work.token}")
        left = [d for d in cgroup_dirs if os.path.isdir(d)]
        if left:
            raise harness.Defect(f"leftover cgroup: {left}")
        return outcome
    except harness.Defect:
        _keep({"kind": "config", "config": base64.b64encode(work.placeholders(data.decode("latin-1"))
                                                                .encode("latin-1")).decode()})
        raise


def run_argv(work, sequence: list[list[str]]) -> None:  # noqa: ANN001
    run = harness.Run(work.rune, work.path, work.root)
    try:
        harness.check_argv(run, sequence)
    except harness.Defect:
        _keep({"kind": "argv", "argv": [[work.placeholders(a) for a in argv] for argv in sequence]})
        raise


def _keep(case: dict) -> None:
    if _CURRENT:  # under make test there is none: nothing is written
        Path(_CURRENT).write_text(json.dumps(case))


@given(strategies.configs("{work}", "{token}"))
def test_fuzz_config(work, mutation):  # noqa: ANN001
    mutations, raw, n = mutation
    base = default_config(work.path / "rootfs", ["true"])
    doc = strategies.apply(base, mutations)
    text = work.fill(json.dumps(doc))
    STATS["config"] += 1
    outcome = run_config(work, strategies.raw_edit(text.encode(), raw, n), _cgroup_dirs(json.loads(text)))
    STATS[outcome] += 1


@given(strategies.argvs("{work}", "{work}/bundle"))
def test_fuzz_argv(work, sequence):  # noqa: ANN001
    STATS["argv"] += 1
    run_argv(work, [[work.fill(a) for a in argv] for argv in sequence])


def found_cases() -> list[Path]:
    return sorted(CASES.glob("*.json"))


def case_id(path: Path) -> str:
    return path.stem


def save_case(case: dict) -> Path:
    """A found case, under a name from its content (run.py calls this)."""
    CASES.mkdir(exist_ok=True)
    text = json.dumps(case, indent=1, sort_keys=True)
    path = CASES / f"{case['kind']}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    path.write_text(text + "\n")
    return path
