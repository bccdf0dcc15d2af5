"""The init process of a container: `rune create` (stdio or terminal handed over), `start`, `kill`, `pause`,
`resume`, `update`, `delete`, with containerd's rules for which of them each state allows."""

from __future__ import annotations

import os

from inclavare.shim.process import Process, kill_error, precondition
from inclavare.shim.runtime import Rune, RuntimeFailure, read_pid_file
from inclavare.shim.stdio import Stdio, StdioError, open_io
from inclavare.shim.ttrpc import UNKNOWN, TtrpcError


def runtime_error(what: str, e: RuntimeFailure | StdioError) -> TtrpcError:
    return TtrpcError(UNKNOWN, f"{what}: {e}")


class Init(Process):
    def __init__(self, cid: str, bundle: str, rune: Rune, stdio: Stdio, namespace: str, spawn,  # noqa: ANN001
                 no_pivot: bool = False, no_new_keyring: bool = False) -> None:
        super().__init__(cid, stdio)
        self.bundle = bundle
        self.rune = rune
        self.namespace = namespace
        self.spawn = spawn
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.pid_file = os.path.join(bundle, "init.pid")

    def create(self) -> None:
        try:
            if self.stdio.terminal:
                from inclavare.shim.stdio.console import ConsoleIO

                self.io = ConsoleIO(self.stdio)
                console = self.io.console_socket
            else:
                self.io = open_io(self.stdio, self.spawn, self.id, self.namespace)
                console = ""
        except StdioError as e:
            raise runtime_error("failed to create init process I/O", e) from None
        try:
            self.rune.create(self.id, self.bundle, self.pid_file, self.io.child_fds(), console_socket=console,
                             no_pivot=self.no_pivot, no_new_keyring=self.no_new_keyring)
        except RuntimeFailure as e:
            self.io.close()
            raise runtime_error("OCI runtime create failed", e) from None
        try:
            self.io.started()
            self.pid = read_pid_file(self.pid_file)
        except (StdioError, OSError, ValueError) as e:
            self.io.close()
            self.rune_delete(force=True)
            raise TtrpcError(UNKNOWN, f"failed to start the container's I/O or read its pid: {e}") from None

    def _transition(self, want: str, what: str, run, to: str) -> None:  # noqa: ANN001
        """Run the runtime command `run` from state `want` (else FailedPrecondition) and move to `to`, unless the
        process exited meanwhile."""
        with self.lock:
            if self.state != want:
                raise precondition(f"cannot {what} a {self.state} {'process' if what == 'start' else 'container'}")
            try:
                run(self.id)
            except RuntimeFailure as e:
                raise runtime_error(f"OCI runtime {what} failed", e) from None
            if self.state == want:
                self.state = to

    def start(self) -> None:
        self._transition("created", "start", self.rune.start, "running")

    def kill(self, sig: int, all_: bool) -> None:
        if self.state == "deleted":
            raise kill_error("does not exist")
        try:
            self.rune.kill(self.id, sig, all_)
        except RuntimeFailure as e:
            raise kill_error(str(e)) from None

    def kill_all(self) -> None:
        try:
            self.rune.kill(self.id, 9, True)
        except RuntimeFailure:
            pass

    def pause(self) -> None:
        with self.lock:
            if self.state != "running":
                raise precondition(f"cannot pause a {self.state} container")
            self.state = "pausing"
            try:
                self.rune.pause(self.id)
            except RuntimeFailure as e:
                if self.state == "pausing":
                    self.state = "running"
                raise runtime_error("OCI runtime pause failed", e) from None
            if self.state == "pausing":
                self.state = "paused"

    def resume(self) -> None:
        self._transition("paused", "resume", self.rune.resume, "running")

    def update(self, resources: bytes) -> None:
        if self.state in ("stopped", "deleted"):
            raise precondition(f"cannot update a {self.state} container")
        try:
            self.rune.update(self.id, resources)
        except RuntimeFailure as e:
            raise runtime_error("OCI runtime update failed", e) from None

    def set_exited(self, status: int) -> None:
        with self.lock:
            paused = self.state in ("paused", "pausing")
            super().set_exited(status)
        if paused:  # the freezer outlives the processes: thaw it so that delete can remove the cgroup
            try:
                self.rune.resume(self.id)
            except RuntimeFailure:
                pass

    def delete(self) -> None:
        with self.lock:
            if self.state in ("running", "paused", "pausing"):
                raise precondition(f"cannot delete a {self.state} process")
            if self.state == "deleted":
                return
            self.release_io()
            try:
                self.rune.delete(self.id)
            except RuntimeFailure as e:
                if "does not exist" not in str(e):
                    raise runtime_error("failed to delete task", e) from None
            self.state = "deleted"

    def rune_delete(self, force: bool) -> None:
        try:
            self.rune.delete(self.id, force=force)
        except RuntimeFailure:
            pass
