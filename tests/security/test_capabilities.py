"""CVE-2022-29162 (and Moby's CVE-2022-24769): no container process gets inheritable capabilities it was not given
(the inheritable set, with ambient capabilities, would let a file with inheritable capabilities gain them)."""

from __future__ import annotations

from tests.conftest import new_id


def _caps(status: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))}


def test_no_inheritable_capabilities_in_init_and_exec(rune):
    cid = new_id("caps")
    p = rune("run", "--detach", "--bundle", str(rune.bundle(["sleep", "60"])), cid)
    assert p.returncode == 0, p.stderr
    try:
        init = rune("exec", cid, "cat", "/proc/1/status")
        added = rune("exec", "--cap", "CAP_NET_RAW", cid, "cat", "/proc/self/status")
    finally:
        rune("delete", "--force", cid)
    assert init.returncode == 0 and added.returncode == 0, (init.stderr, added.stderr)
    assert _caps(init.stdout)["CapInh"] == 0
    caps = _caps(added.stdout)
    assert caps["CapInh"] == 0 and caps["CapAmb"] & ~caps["CapInh"] == 0
    assert caps["CapEff"] & (1 << 13)  # CAP_NET_RAW was added where --cap puts it
