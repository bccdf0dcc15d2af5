"""atheris (libFuzzer for Python) over the config.json reader or the state.json reader:

    python3 fuzz/atheris_main.py config|state CORPUS_DIR [libFuzzer flags such as -max_total_time=60]

The seed corpus is the default config (and a state.json around it); crashes are written where -artifact_prefix says.
"""

from __future__ import annotations

import json
import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["inclavare"]):
    import parsers

    from inclavare.oci import config, jsonlite, schema, spec  # noqa: F401
    from inclavare.runtime import status, store  # noqa: F401


def seed(target: str, corpus: str) -> None:
    os.makedirs(corpus, exist_ok=True)
    c = spec.default(["sh"])
    c["root"]["path"] = "rootfs"
    c["hooks"] = {"prestart": [{"path": "/bin/true", "timeout": 5}]}
    c["linux"]["resources"]["pids"] = {"limit": 10}
    doc = c if target == "config" else {"ociVersion": "1.2.0", "id": "c", "pid": 1, "status": "created",
                                        "bundle": "/b", "rootfs": "/b/rootfs", "created": "2024-01-01T00:00:00Z",
                                        "owner": "", "cgroup_paths": {"": "/sys/fs/cgroup/c"}, "config": c,
                                        "use_fifo": True, "init_start": 5}
    with open(os.path.join(corpus, "seed.json"), "w") as f:
        json.dump(doc, f)


def main() -> None:
    target, corpus = sys.argv[1], sys.argv[2]
    seed(target, corpus)
    fn = parsers.TARGETS[target]
    atheris.Setup([sys.argv[0], corpus, *sys.argv[3:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
