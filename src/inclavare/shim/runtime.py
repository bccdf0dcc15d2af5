"""The OCI runtime as the shim drives it: rune, called exactly as containerd-shim-runc-v2 calls runc (go-runc).

    rune --root ROOT/NAMESPACE --log BUNDLE/log.json --log-format json create --bundle B --pid-file B/init.pid
         [--console-socket S] [--no-pivot] [--no-new-keyring] ID
    rune ... start ID | kill [--all] ID SIG | delete [--force] ID | pause ID | resume ID | ps --format json ID
    rune ... exec --process FILE --detach --pid-file B/EXEC.pid [--console-socket S] ID
    rune ... update --resources - ID   (linux.resources JSON on stdin) | events --stats ID

A failure is reported with the last error the runtime logged in this call (read from the log file's new lines, as
runc's shim does with log.json), else with its output.
"""

from __future__ import annotations

import os
import time

from inclavare.oci import jsonlite
from inclavare.shim.reaper import Reaper


class RuntimeFailure(Exception):
    """A runtime command that failed; str() is the runtime's own sentence."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Rune:
    def __init__(self, reaper: Reaper, binary: str, root: str, log: str, debug: bool = False,
                 env: dict[str, str] | None = None, systemd_cgroup: bool = False, forkserver=None,  # noqa: ANN001
                 trace=None) -> None:  # noqa: ANN001
        self.reaper = reaper
        self.trace = trace  # trace(msg, level): a debug line per command (how it ran, its status, its time)
        self.forkserver = forkserver  # a ForkServer that serves `binary`, else None: every command is exec'd
        self.systemd_cgroup = systemd_cgroup
        self.env = env
        self.binary = binary
        self.root = root
        self.log = log
        self.debug = debug

    def _argv(self, args: list[str]) -> list[str]:
        g = [self.binary, "--root", self.root, "--log", self.log, "--log-format", "json"]
        if self.debug:
            g.append("--debug")
        if self.systemd_cgroup:
            g.append("--systemd-cgroup")  # a global flag, where runc's shim puts it
        return g + args

    def _log_size(self) -> int:
        try:
            return os.stat(self.log).st_size
        except OSError:
            return 0

    def _last_error(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        msg = ""
        for line in text.splitlines():
            try:
                entry = jsonlite.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") == "error":
                msg = str(entry.get("msg", "")).strip()
        return msg

    def run(self, args: list[str], stdio: tuple[int, int, int] | None = None, stdin: bytes | None = None) -> str:
        """Run a command; its stdout (when stdio is not given). Raises RuntimeFailure."""
        offset = self._log_size()
        t0 = time.monotonic()
        out_r = out_w = in_r = in_w = -1
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        try:
            if stdio is None:
                out_r, out_w = os.pipe()
                if stdin is not None:
                    in_r, in_w = os.pipe()
                fds = (in_r if stdin is not None else null, out_w, out_w)
            else:
                fds = stdio
            argv = self._argv(args)
            cmd = self.forkserver.spawn(argv, fds, env=self.env) if self.forkserver is not None else None
            if cmd is None:
                cmd = self.reaper.spawn(argv, fds, env=self.env)
            output = b""
            if stdio is None:
                os.close(out_w)
                out_w = -1
                if stdin is not None:
                    os.close(in_r)
                    in_r = -1
                    os.write(in_w, stdin)
                    os.close(in_w)
                    in_w = -1
                chunks = []
                while True:
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                output = b"".join(chunks)
            status = cmd.wait()
            if self.trace is not None:
                how = "a fork server's worker" if getattr(cmd, "forked", False) else "exec'd"
                self.trace(f"rune {args[0]} ({how}, pid {cmd.pid}): exit status {status}, "
                           f"{(time.monotonic() - t0) * 1000:.1f} ms", "debug")
        finally:
            for fd in (null, out_r, out_w, in_r, in_w):
                if fd >= 0:
                    os.close(fd)
        text = output.decode(errors="replace")
        if status:
            msg = self._last_error(offset) or text.strip() or f"{os.path.basename(self.binary)} exited with {status}"
            raise RuntimeFailure(msg, status or 0)
        return text

    # ---- the commands ---------------------------------------------------------------------------------------------
    def create(self, cid: str, bundle: str, pid_file: str, stdio: tuple[int, int, int], console_socket: str = "",
               no_pivot: bool = False, no_new_keyring: bool = False) -> None:
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        self.run([*args, cid], stdio=stdio)

    def start(self, cid: str) -> None:
        self.run(["start", cid])

    def kill(self, cid: str, sig: int, all_: bool = False) -> None:
        self.run(["kill", *(["--all"] if all_ else []), cid, str(sig)])

    def delete(self, cid: str, force: bool = False) -> None:
        self.run(["delete", *(["--force"] if force else []), cid])

    def pause(self, cid: str) -> None:
        self.run(["pause", cid])

    def resume(self, cid: str) -> None:
        self.run(["resume", cid])

    def update(self, cid: str, resources: bytes) -> None:
        self.run(["update", "--resources", "-", cid], stdin=resources)

    def ps(self, cid: str) -> list[int]:
        out = jsonlite.loads(self.run(["ps", "--format", "json", cid]) or "[]")
        return [int(p) for p in out] if isinstance(out, list) else []

    def stats(self, cid: str) -> dict:
        out = jsonlite.loads(self.run(["events", "--stats", cid]))
        return out.get("data") or {} if isinstance(out, dict) else {}

    def exec(self, cid: str, process_file: str, pid_file: str, stdio: tuple[int, int, int],
             console_socket: str = "") -> None:
        args = ["exec", "--process", process_file, "--detach", "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        self.run([*args, cid], stdio=stdio)


def read_pid_file(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())
