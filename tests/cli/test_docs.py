"""What README.md and docs/ say about the tree: every launcher `make` writes is named, every repository path named
exists (a file moved or removed leaves a stale pointer otherwise)."""

from __future__ import annotations

import re
import sys

import pytest
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "src"))
from inclavare.launcher import LAUNCHERS  # noqa: E402

DOCS = sorted([REPO / "README.md", REPO / "tests/engines/README.md", *(REPO / "docs").glob("*.md")])
# a repository path: one of the tree's top directories (or the package, as `inclavare/...`), then more of it; not
# kubectl's TYPE/NAME (`exec -i deploy/verdictd`)
PATH = re.compile(r"(?<![\w/.$-])((?:src|tests|docs|packaging|deploy|bench|tools|pal|examples|fuzz|inclavare)/"
                  r"[\w./-]*\w)(?![\w<*])")
KUBECTL = re.compile(r"(?:exec -i|logs) $")


@pytest.mark.parametrize("cmd", sorted(LAUNCHERS))
def test_readme_names_every_launcher(cmd: str) -> None:
    assert f"`bin/{cmd}`" in (REPO / "README.md").read_text(), f"README.md's list of launchers misses bin/{cmd}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_every_path_named_exists(doc) -> None:
    text = doc.read_text()
    missing = []
    for m in PATH.finditer(text):
        p = m.group(1)
        if KUBECTL.search(text[max(0, m.start() - 8):m.start()]):
            continue
        candidates = [REPO / p, REPO / "src" / p, doc.parent / p]
        if not any(c.exists() for c in candidates):
            missing.append(p)
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {sorted(set(missing))}"
