#!/usr/bin/env python3
"""`make fuzz`: the fuzzers for a given time, then a report of how many inputs ran and which defects they found.

  - hypothesis (tests/fuzz/test_fuzz.py, profile "fuzz"): hostile config.json files and argument vectors through the
    real rune, in batches that alternate until --seconds are spent; every failing input (shrunk by hypothesis) is
    saved to tests/fuzz/cases/, which tests/fuzz/test_found_cases.py replays in `make test`;
  - atheris (fuzz/atheris_main.py): coverage-guided, in-process, over the config.json reader and the state.json
    reader, --atheris-seconds each; a crash is saved to tests/fuzz/cases/ too.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "fuzz"


def hypothesis_batch(which: str, examples: int, report: dict) -> None:
    current = BUILD / "current.json"
    current.unlink(missing_ok=True)
    env = dict(os.environ, FUZZ_PROFILE="fuzz", FUZZ_EXAMPLES=str(examples), FUZZ_CURRENT=str(current),
               PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                        f"tests/fuzz/test_fuzz.py::test_fuzz_{which}"], cwd=REPO, env=env, capture_output=True,
                       text=True)
    m = re.search(r"fuzz: (\d+) config\.json inputs \((\d+) created and removed, (\d+) refused\), (\d+) argument", p.stdout)
    if m:
        report["config"] += int(m[1])
        report["created"] += int(m[2])
        report["argv"] += int(m[4])
    if p.returncode != 0:
        found = re.findall(r"Defect: ([^\n]*)", p.stdout) or [p.stdout.strip().splitlines()[-1] if p.stdout else "?"]
        defect = found[-1]
        path = None
        if current.exists():
            sys.path.insert(0, str(REPO))
            from tests.fuzz.test_fuzz import save_case

            path = save_case(json.loads(current.read_text()))
        report["defects"].append({"fuzzer": f"hypothesis {which}", "defect": defect[:300],
                                  "case": str(path.relative_to(REPO)) if path else None})
        print(f"DEFECT ({which}): {defect[:300]}", flush=True)


def atheris_run(target: str, seconds: int, report: dict) -> None:
    corpus = BUILD / f"corpus-{target}"
    crashes = BUILD / f"crashes-{target}"
    crashes.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, str(REPO / "fuzz" / "atheris_main.py"), target, str(corpus),
                        f"-max_total_time={seconds}", f"-artifact_prefix={crashes}/", "-print_final_stats=1"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    out = p.stdout + p.stderr
    runs = re.findall(r"Done (\d+) runs", out) or re.findall(r"stat::number_of_executed_units: (\d+)", out)
    report[f"atheris {target}"] = int(runs[-1]) if runs else 0
    for crash in sorted(crashes.glob("crash-*")):
        sys.path.insert(0, str(REPO))
        from tests.fuzz.test_fuzz import save_case

        path = save_case({"kind": f"{target}-reader", "data": base64.b64encode(crash.read_bytes()).decode()})
        error = re.findall(r"(\w+Error[^\n]*)", out)
        report["defects"].append({"fuzzer": f"atheris {target}", "defect": (error[-1] if error else "crash")[:300],
                                  "case": str(path.relative_to(REPO))})
        crash.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=600, help="for the hypothesis fuzzers together")
    ap.add_argument("--atheris-seconds", type=int, default=120, help="for each atheris target")
    ap.add_argument("--batch", type=int, default=300, help="hypothesis examples per batch")
    args = ap.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": 0, "created": 0, "argv": 0, "defects": []}
    t0 = time.monotonic()
    which = "config"
    while time.monotonic() - t0 < args.seconds:
        hypothesis_batch(which, args.batch, report)
        print(f"[{time.monotonic() - t0:5.0f} s] {report['config']} configs ({report['created']} created), "
              f"{report['argv']} argument sequences, {len(report['defects'])} defects", flush=True)
        which = "argv" if which == "config" else "config"
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: `make fuzz-deps` installs it", file=sys.stderr)
        report["atheris"] = "not installed"
    else:
        for target in ("config", "state"):
            atheris_run(target, args.atheris_seconds, report)
    (BUILD / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 1 if report["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
