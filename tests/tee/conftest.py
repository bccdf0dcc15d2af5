from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors"


@pytest.fixture
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip("../shared/vectors is absent (the shared real-world test vectors)")
    return VECTORS


@pytest.fixture
def sim_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private sim platform state directory per test."""
    d = tmp_path / "sim"
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(d))
    return d
