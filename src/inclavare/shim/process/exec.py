"""A process exec'd into a running container: `rune exec --detach --pid-file` with the process.json containerd
sent; it is signalled directly by pid (as runc's shim does), and its state follows the container's when paused."""

from __future__ import annotations

import os

from inclavare.oci import jsonlite
from inclavare.shim.process import Process, kill_error, precondition
from inclavare.shim.process.init import Init, runtime_error
from inclavare.shim.runtime import RuntimeFailure, read_pid_file
from inclavare.shim.stdio import Stdio, StdioError, open_io
from inclavare.shim.ttrpc import INVALID_ARGUMENT, UNKNOWN, TtrpcError


class Exec(Process):
    def __init__(self, exec_id: str, parent: Init, stdio: Stdio, spec: bytes) -> None:
        super().__init__(exec_id, stdio)
        self.parent = parent
        try:
            process = jsonlite.loads(spec)
        except ValueError as e:
            raise TtrpcError(INVALID_ARGUMENT, f"the exec process spec is not JSON: {e}") from None
        if not isinstance(process, dict):
            raise TtrpcError(INVALID_ARGUMENT, "the exec process spec is not a JSON object")
        process["terminal"] = stdio.terminal
        self.process = process
        self.pid_file = os.path.join(parent.bundle, f"{exec_id}.pid")

    @property
    def status(self) -> str:
        if self.parent.state in ("paused", "pausing") and self.state == "running":
            return self.parent.state
        return self.state

    def start(self) -> None:
        with self.lock:
            if self.state != "created":
                raise precondition(f"cannot start a {self.state} process")
            spec_file = os.path.join(self.parent.bundle, f".{self.id}.process.json")
            try:
                if self.stdio.terminal:
                    from inclavare.shim.stdio.console import ConsoleIO

                    self.io = ConsoleIO(self.stdio)
                    console = self.io.console_socket
                else:
                    self.io = open_io(self.stdio, self.parent.spawn, self.id, self.parent.namespace)
                    console = ""
            except StdioError as e:
                self.state = "stopped"
                self.done.set()
                raise runtime_error("failed to create exec process I/O", e) from None
            try:
                with open(spec_file, "w") as f:
                    f.write(jsonlite.dumps(self.process))
                self.parent.rune.exec(self.parent.id, spec_file, self.pid_file, self.io.child_fds(), console)
            except RuntimeFailure as e:
                self.io.close()
                self.state = "stopped"
                self.done.set()
                raise runtime_error("OCI runtime exec failed", e) from None
            finally:
                try:
                    os.unlink(spec_file)
                except OSError:
                    pass
            try:
                self.io.started()
                self.pid = read_pid_file(self.pid_file)
            except (StdioError, OSError, ValueError) as e:
                self.io.close()
                raise TtrpcError(UNKNOWN, f"failed to start the exec'd process's I/O or read its pid: {e}") from None
            self.state = "running"

    def kill(self, sig: int) -> None:
        if self.pid == 0:
            raise precondition("process not created")
        if self.exited_ns:
            raise kill_error("already finished")
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise kill_error("no such process") from None

    def delete(self) -> None:
        with self.lock:
            if self.state == "running":
                raise precondition("cannot delete a running process")
            self.release_io()
            self.state = "deleted"
            try:
                os.unlink(self.pid_file)
            except OSError:
                pass
