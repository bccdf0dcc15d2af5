"""The state store's two files: state.json (small, read by every command) and config.json (the config, read only
by the commands that need it). `state`, `start` and `delete` of a container whose config has no poststart or
poststop hooks neither read config.json nor import the config's modules; a state.json from before the split, with
the config inside, still starts, runs its hooks and deletes."""

from __future__ import annotations

import json

from tests.conftest import imported, new_id

CONFIG_MODULES = {"inclavare.oci.config", "inclavare.oci.spec", "inclavare.runtime.create", "inclavare.runtime.init", "json"}




def test_state_json_holds_no_config(rune):
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"poststop": [{"path": "/bin/true"}]}))
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0
    state = json.loads((rune.root / cid / "state.json").read_text())
    assert "config" not in state and state["hooks"] == ["poststop"]
    config = json.loads((rune.root / cid / "config.json").read_text())
    assert config["process"]["args"] == ["sleep", "30"]
    assert (rune.root / cid / "config.json").stat().st_mode & 0o777 == 0o600  # process.env may hold secrets
    assert rune("delete", "-f", cid).returncode == 0


def test_state_start_delete_read_no_config(rune):
    """Without poststart/poststop hooks, config.json is not read: garbage in it changes nothing for them."""
    b = rune.bundle(["true"])
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0
    (rune.root / cid / "config.json").write_text("not json")
    for cmd in (("state", cid), ("start", cid), ("delete", cid)):
        mods = imported(rune, *cmd)
        assert not mods & CONFIG_MODULES, (cmd, sorted(mods & CONFIG_MODULES))
    assert not (rune.root / cid).exists()


def test_corrupt_config_json_is_named_and_force_removes(rune):
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"poststop": [{"path": "/bin/true"}]}))
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0
    assert rune("kill", cid, "9").returncode == 0
    (rune.root / cid / "config.json").write_text("[1")
    p = rune("delete", cid)
    assert p.returncode == 1 and f"{rune.root / cid / 'config.json'}: corrupt state" in p.stderr, p.stderr
    assert (rune.root / cid).exists()
    p = rune("delete", "-f", cid)
    assert p.returncode == 0, p.stderr
    assert not (rune.root / cid).exists()


def test_state_json_with_the_config_inside_still_works(rune, tmp_path):
    """A container created by rune before config.json: its hooks run from the state's own config."""
    out = tmp_path / "hooks.out"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $0 >> {out}"]}
    b = rune.bundle(["sleep", "30"], edit=lambda c: c.update(hooks={"poststart": [{**hook, "args": [*hook["args"], "poststart"]}],
                                                                    "poststop": [{**hook, "args": [*hook["args"], "poststop"]}]}))
    cid = new_id()
    assert rune("create", "-b", str(b), cid).returncode == 0
    d = rune.root / cid
    state = json.loads((d / "state.json").read_text())
    state.pop("hooks")
    state["config"] = json.loads((d / "config.json").read_text())
    (d / "state.json").write_text(json.dumps(state))
    (d / "config.json").unlink()
    assert rune("start", cid).returncode == 0
    assert rune.state(cid)["status"] == "running"
    p = rune("update", "--pids-limit", "50", cid)
    assert p.returncode == 0, p.stderr
    moved = json.loads((d / "state.json").read_text())
    assert "config" not in moved and json.loads((d / "config.json").read_text())["linux"]["resources"]["pids"] == {
        "limit": 50}
    assert rune("delete", "-f", cid).returncode == 0
    assert out.read_text() == "poststart\npoststop\n"
