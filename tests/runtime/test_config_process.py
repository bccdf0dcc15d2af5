"""config.json process, observed from inside real containers: args, env, cwd, user, umask, groups, the five
capability sets, rlimits, noNewPrivileges, oomScoreAdj."""

from __future__ import annotations

import pytest
from tests.conftest import new_id
from tests.runtime.helpers import run_ok


def _status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def test_args_env_cwd(rune):
    def edit(c: dict) -> None:
        c["process"]["env"] += ["GREETING=hello world", "EMPTY="]
        c["process"]["cwd"] = "/home/user"

    out = run_ok(rune, ["sh", "-c", 'printf "%s|" "$0" "$1" "$GREETING" "x${EMPTY}x"; pwd; env | sort', "a b", "c"],
                 edit=edit)  # fmt: skip
    first, *env = out.splitlines()
    assert first == "a b|c|hello world|xx|/home/user"
    env_d = dict(e.split("=", 1) for e in env)
    assert env_d["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env_d["TERM"] == "xterm" and env_d["HOME"] == "/root"


def test_cwd_is_created_when_missing(rune):
    out = run_ok(rune, ["pwd"], edit=lambda c: c["process"].update(cwd="/tmp/made/here"))
    assert out == "/tmp/made/here\n"


def test_user_uid_gid_umask_additional_gids(rune):
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "umask": 0o027, "additionalGids": [10, 20, 1000]}
        c["process"]["cwd"] = "/tmp"
        c["root"]["readonly"] = False

    name = new_id("f")
    out = run_ok(rune, ["sh", "-c", f"id; umask; echo $HOME; touch /tmp/{name}; stat -c '%u:%g %a' /tmp/{name};"
                        f" rm /tmp/{name}; grep -E '^(Uid|Gid|Groups)' /proc/self/status"], edit=edit)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("uid=1000(user) gid=1000(user) groups=")
    assert set(lines[0].split("groups=")[1].replace("(user)", "").split(",")) == {"10", "20", "1000"}
    assert lines[1] == "0027"
    assert lines[2] == "/home/user"  # HOME from the container's /etc/passwd
    assert lines[3] == "1000:1000 640"
    st = _status("\n".join(lines[4:]))
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1000"] * 4
    assert sorted(st["Groups"].split()) == ["10", "1000", "20"]


def test_default_umask_is_022(rune):
    assert run_ok(rune, ["sh", "-c", "umask"]) == "0022\n"


CAPS = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"], "permitted": ["CAP_CHOWN", "CAP_KILL",
        "CAP_NET_RAW"], "effective": ["CAP_KILL"], "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
        "ambient": ["CAP_KILL"]}  # fmt: skip


def _mask(names: list[str]) -> int:
    bits = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETUID": 7, "CAP_NET_RAW": 13}
    return sum(1 << bits[n] for n in names)


def test_five_capability_sets_as_root(rune):
    out = run_ok(rune, ["cat", "/proc/self/status"], edit=lambda c: c["process"].update(capabilities=CAPS))
    st = _status(out)
    # execve as uid 0 would raise the whole bounding set, but noNewPrivileges (the default spec's) keeps the
    # permitted set the runtime applied
    assert int(st["CapBnd"], 16) == _mask(CAPS["bounding"])
    assert int(st["CapInh"], 16) == _mask(CAPS["inheritable"])
    assert int(st["CapAmb"], 16) == _mask(CAPS["ambient"])
    assert int(st["CapPrm"], 16) == int(st["CapEff"], 16) == _mask(CAPS["permitted"])


def test_five_capability_sets_as_non_root(rune):
    """For a non-root user the kernel keeps exactly permitted & (inheritable | ambient) across execve: the sets
    the runtime applied are visible."""

    def edit(c: dict) -> None:
        c["process"]["capabilities"] = CAPS
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    st = _status(run_ok(rune, ["cat", "/proc/self/status"], edit=edit))
    assert int(st["CapBnd"], 16) == _mask(CAPS["bounding"])
    assert int(st["CapInh"], 16) == _mask(CAPS["inheritable"])
    assert int(st["CapAmb"], 16) == _mask(["CAP_KILL"])
    assert int(st["CapPrm"], 16) == _mask(["CAP_KILL"])  # ambient caps become permitted and effective
    assert int(st["CapEff"], 16) == _mask(["CAP_KILL"])


def test_capability_really_limits(rune):
    """Without CAP_CHOWN, root cannot chown in the container; with it, it can."""

    def edit(caps: list[str]):
        def f(c: dict) -> None:
            c["root"]["readonly"] = False
            c["process"]["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}

        return f

    name = new_id("f")
    script = f"touch /tmp/{name}; chown 1000 /tmp/{name} 2>&1; echo rc=$?; rm -f /tmp/{name}"
    assert "rc=0" in run_ok(rune, ["sh", "-c", script], edit=edit(["CAP_CHOWN"]))
    out = run_ok(rune, ["sh", "-c", script], edit=edit(["CAP_KILL"]))
    assert "rc=1" in out and "Operation not permitted" in out


def test_rlimits(rune):
    def edit(c: dict) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]  # fmt: skip

    assert run_ok(rune, ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"], edit=edit) == "321\n654\n0\n"


def test_rlimit_above_the_hard_limit_is_a_clear_error(rune):
    b = rune.bundle(["true"], edit=lambda c: c["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1 << 40, "hard": 1 << 40}]))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1
    assert p.stderr.startswith("config.json process.rlimits[0]: cannot set RLIMIT_NOFILE")


def test_no_new_privileges(rune):
    on = run_ok(rune, ["grep", "NoNewPrivs", "/proc/self/status"])
    off = run_ok(rune, ["grep", "NoNewPrivs", "/proc/self/status"],
                 edit=lambda c: c["process"].update(noNewPrivileges=False))
    assert on.split() == ["NoNewPrivs:", "1"] and off.split() == ["NoNewPrivs:", "0"]


def test_oom_score_adj(rune):
    assert run_ok(rune, ["cat", "/proc/self/oom_score_adj"], edit=lambda c: c["process"].update(oomScoreAdj=500)) == "500\n"


def test_negative_oom_score_adj_without_cap_sys_resource(rune):
    """This host lacks CAP_SYS_RESOURCE: lowering oom_score_adj is refused; the error names the field."""
    with open("/proc/self/status") as f:
        if int(_status(f.read())["CapEff"], 16) & (1 << 24):
            pytest.skip("this host has CAP_SYS_RESOURCE")
    b = rune.bundle(["true"], edit=lambda c: c["process"].update(oomScoreAdj=-500))
    p = rune("run", "--bundle", str(b), new_id())
    assert p.returncode == 1
    assert p.stderr == "config.json process.oomScoreAdj: cannot set -500: Permission denied\n"


@pytest.mark.parametrize("caps", [None, {"effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}])
def test_without_a_bounding_list_the_bounding_set_is_empty(rune, caps):
    """No process.capabilities, or none for `bounding`: nothing may come back at execve (as runc)."""

    def edit(c: dict) -> None:
        c["process"]["noNewPrivileges"] = False
        if caps is None:
            c["process"].pop("capabilities")
        else:
            c["process"]["capabilities"] = caps

    st = _status(run_ok(rune, ["cat", "/proc/self/status"], edit=edit))
    assert int(st["CapBnd"], 16) == 0
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0


def test_unlimited_and_every_rlimit_type(rune):
    """2**64-1 is RLIM_INFINITY (docker's --ulimit x=-1); RLIMIT_LOCKS has no name in Python's resource module."""
    unlimited = (1 << 64) - 1

    def edit(c: dict) -> None:
        c["process"]["rlimits"] = [{"type": "RLIMIT_CORE", "soft": unlimited, "hard": unlimited},
                                   {"type": "RLIMIT_LOCKS", "soft": 77, "hard": 77}]  # fmt: skip

    out = run_ok(rune, ["sh", "-c", "ulimit -c; grep 'Max file locks' /proc/self/limits"], edit=edit)
    core, locks = out.splitlines()
    assert core == "unlimited"
    assert locks.split()[3:5] == ["77", "77"]
