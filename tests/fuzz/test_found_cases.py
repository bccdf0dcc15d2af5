"""Every defect the fuzzers found, kept as a regular test: tests/fuzz/cases/*.json replayed through the same
harness (a config.json, or a sequence of rune commands), so that none comes back."""

from __future__ import annotations

import base64
import json
import sys

import pytest
from tests.conftest import REPO
from tests.fuzz.test_fuzz import _cgroup_dirs, case_id, found_cases, run_argv, run_config


@pytest.mark.parametrize("path", found_cases(), ids=case_id)
def test_found_case(work, path):  # noqa: ANN001
    case = json.loads(path.read_text())
    if case["kind"] == "config":
        data = work.fill(base64.b64decode(case["config"]).decode("latin-1")).encode("latin-1")
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        run_config(work, data, _cgroup_dirs(doc))
    elif case["kind"] == "argv":
        run_argv(work, [[work.fill(a) for a in argv] for argv in case["argv"]])
    else:  # found by atheris: "config-reader" or "state-reader", in-process, where only RuneError may come out
        sys.path.insert(0, str(REPO / "fuzz"))
        import parsers

        parsers.TARGETS[case["kind"].split("-")[0]](base64.b64decode(case["data"]))
