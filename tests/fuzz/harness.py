"""Run rune on one fuzzed input and check rune's promise for it:
exit code 0 or rune's code; on stderr at most one line (exactly one on failure), never a traceback nor Python's own
words; that line also the last entry of the --log JSON; and nothing left: no state directory, cgroup, process or
mount (a created container is started and force-deleted first, as an engine would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

# Python's words: a message holding one of these is Python speaking, not rune
PYTHON_WORDS = ("Traceback", "object is not", "NoneType", "embedded null", "codec can't", "[Errno", "invalid literal",
                "unhashable", "has no attribute", "index out of range", "KeyError", "TypeError", "ValueError",
                "OverflowError", "RecursionError", "MemoryError", "maximum recursion", "not supported between",
                "AssertionError", "UnicodeEncodeError", "ModuleNotFoundError")  # fmt: skip


STATS = {"config": 0, "argv": 0, "created": 0, "refused": 0}  # inputs run in this process, for the report


class Defect(AssertionError):
    """A broken promise; str() starts with a short kind (hang, traceback, leftover ...) for grouping."""


class Run:
    def __init__(self, rune: str, work: Path, root: Path) -> None:
        self.rune, self.work, self.root = rune, work, root
        self.log = work / "fuzz.log"

    def call(self, argv: list[str], timeout: float = 30, may_block: bool = False) -> subprocess.CompletedProcess | None:
        """rune with our --root and a JSON --log first (a later --root or --log in argv would win: argv has none)."""
        self.log.write_text("")
        full = [self.rune, "--root", str(self.root), "--log", str(self.log), "--log-format", "json", *argv]
        with open(self.work / "out", "w+b") as out, open(self.work / "err", "w+b") as err:
            proc = subprocess.Popen(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.work / "cwd",
                                    start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if may_block:
                    return None
                raise Defect(f"hang: rune {' '.join(map(repr, argv))} ran for more than {timeout} s") from None
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(full, proc.returncode, out.read().decode(errors="replace"),
                                               err.read().decode(errors="replace"))

    def promise(self, p: subprocess.CompletedProcess, codes: tuple[int, ...] = (0, 1)) -> None:
        what = " ".join(map(repr, p.args[7:]))
        if p.returncode not in codes:
            raise Defect(f"exit code: rune {what} exited {p.returncode}: {p.stderr[-300:]!r}")
        lines = [x for x in p.stderr.splitlines() if not x.startswith(("warning: ", "debug: "))]
        for word in PYTHON_WORDS:
            if word in p.stderr:
                raise Defect(f"python words ({word}): rune {what}: {p.stderr[-400:]!r}")
        if p.returncode == 0:
            if lines:
                raise Defect(f"stderr on success: rune {what}: {p.stderr[-300:]!r}")
            return
        if len(lines) != 1:
            raise Defect(f"not one line: rune {what}: {p.stderr[-400:]!r}")
        entries = [_entry(x) for x in self.log.read_text(errors="replace").splitlines() if x]
        errors = [e for e in entries if e.get("level") == "error"]
        if not errors or errors[-1]["msg"] != lines[0]:
            raise Defect(f"log differs: rune {what}: stderr {lines[0]!r}, log {errors[-1:]!r}")

    def nothing_left(self, cid: str, cgroup_prefix: str = "") -> None:
        if (self.root / cid).exists():
            raise Defect(f"leftover state: {cid} is still in --root after delete --force")
        left = []
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            for name in [cid, *( [cgroup_prefix] if cgroup_prefix else [])]:
                if (ctrl / name).exists():
                    left.append(str(ctrl / name))
        if left:
            raise Defect(f"leftover cgroup: {left}")
        deadline = time.monotonic() + 3
        while alive(cid):
            if time.monotonic() > deadline:
                raise Defect(f"leftover process: {alive(cid)} still run for {cid}")
            time.sleep(0.02)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if str(self.work) in line.split()[4]]
        if mounts:
            raise Defect(f"leftover mount: {mounts}")


def _entry(line: str) -> dict:
    """A --log line: JSON, or logrus text (an argument may have asked for --log-format text)."""
    if line.startswith("{"):
        return json.loads(line)
    level = line.split(" level=", 1)[1].split(" ", 1)[0]
    return {"level": level, "msg": json.loads(line.split(" msg=", 1)[1])}


def alive(needle: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{d}/stat", "rb") as f:
                    zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except OSError:
                continue
            if needle.encode() in cmd and not zombie:
                out.append(int(d))
    return out


def new_id() -> str:
    return f"fz-{uuid.uuid4().hex[:12]}"


def check_config(run: Run, bundle: Path, data: bytes, cgroup_prefix: str) -> str:
    """create with config.json = data, then (if created) state, start, delete --force; the promise at each step.
    Returns how it ended ("refused" or "created"), for the statistics."""
    (bundle / "config.json").write_bytes(data)
    cid = new_id()
    try:
        p = run.call(["create", "--bundle", str(bundle), cid])
        run.promise(p)
        outcome = "refused"
        if p.returncode == 0:
            outcome = "created"
            st = run.call(["state", cid])
            run.promise(st)
            if json.loads(st.stdout)["status"] not in ("created",):
                raise Defect(f"false success: create exited 0 but the container is {st.stdout!r}")
            run.promise(run.call(["start", cid]))
        return outcome
    finally:
        if (run.root / cid).exists():
            run.promise(run.call(["delete", "--force", cid]))
        run.nothing_left(cid, cgroup_prefix)


def encodable(arg: str) -> str:
    """An argument as a process can get it: no NUL, and bytes (surrogateescape) for what is not UTF-8."""
    arg = arg.replace("\0", "")
    try:
        os.fsencode(arg)
        return arg
    except UnicodeEncodeError:
        return arg.encode("utf-8", "replace").decode()


def check_argv(run: Run, sequence: list[list[str]]) -> None:
    cid = new_id()
    try:
        for argv in sequence:
            argv = [encodable(a.replace("{id}", cid)) for a in argv]
            cmd = next((a for a in argv if not a.startswith("-")), "")
            p = run.call(argv, timeout=30, may_block=cmd == "events")  # `events` streams until the container ends
            if p is not None:
                run.promise(p, (0, 1, 255) if cmd == "exec" else (0, 1))
    finally:
        if (run.root / cid).exists():
            run.promise(run.call(["delete", "--force", cid]))
        run.nothing_left(cid)
