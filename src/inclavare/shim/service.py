"""containerd.task.v2.Task: the task service, which decodes each request, dispatches it to the container or
process it names and publishes the events containerd expects (runc's runtime/v2/runc/task/service.go).

Exits: the reaper hands every container process's exit to `on_exit`; one thread matches it to the process by pid and
publishes TaskExit. A process that exits while it is being started (before its pid is known, or before TaskStart /
TaskExecStarted was published) is caught by a subscription taken before the start and handled after the start event,
so that a process's start is always published before its exit.
"""

from __future__ import annotations

import _queue
import os

from inclavare.shim import api, sync
from inclavare.shim.container import Container
from inclavare.shim.process import Process
from inclavare.shim.process.exec import Exec
from inclavare.shim.process.init import Init
from inclavare.shim.runtime import RuntimeFailure
from inclavare.shim.stdio import Stdio
from inclavare.shim.ttrpc import INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, UNKNOWN, TtrpcError

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

SERVICE = "containerd.task.v2.Task"
EMPTY = b""


class Service:
    def __init__(self, namespace: str, reaper, publisher, oom, log: Callable[[str], None],  # noqa: ANN001
                 shutdown: Callable[[], None]) -> None:
        self.namespace = namespace
        self.reaper = reaper
        self.publisher = publisher
        self.oom = oom
        self.log = log
        self.shutdown_cb = shutdown
        self.mu = sync.RLock()
        self.containers: dict[str, Container] = {}
        self.lifecycle = sync.Lock()
        self.running: dict[int, list[tuple[Container, Process]]] = {}
        self.subscribers: list[dict[int, list[int]]] = []
        self.exits: _queue.SimpleQueue = _queue.SimpleQueue()
        reaper.on_exit = self.on_exit
        sync.spawn(self._process_exits)

    def methods(self) -> dict[str, Callable[[bytes], bytes]]:
        return {name: getattr(self, name) for name in (
            "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill", "Exec",
            "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown")}

    # ---- exits --------------------------------------------------------------------------------------------------
    def on_exit(self, pid: int, status: int) -> None:
        self.exits.put((pid, status))

    def _process_exits(self) -> None:
        while True:
            pid, status = self.exits.get()
            with self.lifecycle:
                for sub in self.subscribers:
                    sub.setdefault(pid, []).append(status)
                found = self.running.pop(pid, [])
            for c, p in found:
                self._handle_exit(pid, status, c, p)

    def _handle_exit(self, pid: int, status: int, c: Container, p: Process) -> None:
        with self.mu:
            if isinstance(p, Init) and c.kill_all_on_exit:
                p.kill_all()
            p.set_exited(status)
            self.publisher.publish(api.TaskExit(container_id=c.id, id=p.id, pid=pid, exit_status=status,
                                                exited_at=p.exited_at()))

    def _pre_start(self, c: Container | None):  # noqa: ANN202 - (handle_started, cleanup)
        exits: dict[int, list[int]] = {}
        with self.lifecycle:
            self.subscribers.append(exits)
            if c is not None and c.init.pid:
                left = [cp for cp in self.running.get(c.init.pid, []) if cp[0] is not c]
                if left:
                    self.running[c.init.pid] = left
                else:
                    self.running.pop(c.init.pid, None)
        state = {"subscribed": True}

        def unsubscribe() -> None:
            if state["subscribed"]:
                self.subscribers.remove(exits)
                state["subscribed"] = False

        def handle_started(c: Container, p: Process) -> None:
            with self.lifecycle:
                unsubscribe()
                if not p.pid:
                    return
                got = exits.get(p.pid)
                if got is None:
                    self.running.setdefault(p.pid, []).append((c, p))
                    return
            for status in got:
                self._handle_exit(p.pid, status, c, p)

        def cleanup() -> None:
            with self.lifecycle:
                unsubscribe()

        return handle_started, cleanup

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _container(self, cid: str) -> Container:
        with self.mu:
            c = self.containers.get(cid)
        if c is None:
            raise TtrpcError(NOT_FOUND, "container not created: not found")
        return c

    # ---- the task API -------------------------------------------------------------------------------------------
    def Create(self, data: bytes) -> bytes:  # noqa: N802 - the rpc names
        req = api.CreateTaskRequest.decode(data)
        with self.mu:
            if req.id in self.containers:
                raise TtrpcError(6, f"container {req.id}: already exists")
            handle_started, cleanup = self._pre_start(None)
            try:
                c = Container(req, self.namespace, self.reaper, self.log)
                self.containers[req.id] = c
                self.publisher.publish(api.TaskCreate(
                    container_id=req.id, bundle=req.bundle, rootfs=req.rootfs,
                    io=api.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal),
                    checkpoint=req.checkpoint, pid=c.init.pid))
                handle_started(c, c.init)
            finally:
                cleanup()
        return api.CreateTaskResponse(pid=c.init.pid).encode()

    def Start(self, data: bytes) -> bytes:  # noqa: N802
        req = api.IdRequest.decode(data)
        c = self._container(req.id)
        p = c.process(req.exec_id)
        handle_started, cleanup = self._pre_start(None if req.exec_id else c)
        try:
            try:
                p.start()  # type: ignore[attr-defined]
            except TtrpcError:
                handle_started(c, p)
                raise
            if req.exec_id:
                self.publisher.publish(api.TaskExecStarted(container_id=c.id, exec_id=req.exec_id, pid=p.pid))
            else:
                self.oom.add(c.id, p.pid)
                self.publisher.publish(api.TaskStart(container_id=c.id, pid=p.pid))
            handle_started(c, p)
        finally:
            cleanup()
        return api.PidResponse(pid=p.pid).encode()

    def Delete(self, data: bytes) -> bytes:  # noqa: N802
        req = api.IdRequest.decode(data)
        c = self._container(req.id)
        p = c.delete(req.exec_id)
        if not req.exec_id:
            with self.mu:
                self.containers.pop(req.id, None)
            self.oom.remove(c.id)
            self.publisher.publish(api.TaskDelete(container_id=c.id, pid=p.pid, exit_status=p.exit_status,
                                                  exited_at=p.exited_at(), id=c.id))
        return api.DeleteResponse(pid=p.pid, exit_status=p.exit_status, exited_at=p.exited_at()).encode()

    def Exec(self, data: bytes) -> bytes:  # noqa: N802
        req = api.ExecProcessRequest.decode(data)
        c = self._container(req.id)
        if req.spec is None or not req.spec.value:
            raise TtrpcError(INVALID_ARGUMENT, f"exec {req.exec_id}: no process spec")
        c.add_exec(req.exec_id, Stdio(req.stdin, req.stdout, req.stderr, req.terminal), req.spec.value)
        self.publisher.publish(api.TaskExecAdded(container_id=c.id, exec_id=req.exec_id))
        return EMPTY

    def ResizePty(self, data: bytes) -> bytes:  # noqa: N802
        req = api.ResizePtyRequest.decode(data)
        self._container(req.id).process(req.exec_id).resize(req.width, req.height)
        return EMPTY

    def State(self, data: bytes) -> bytes:  # noqa: N802
        req = api.IdRequest.decode(data)
        c = self._container(req.id)
        p = c.process(req.exec_id)
        status = p.status if isinstance(p, Exec) else p.state
        s = p.stdio
        return api.StateResponse(id=p.id, bundle=c.bundle, pid=p.pid, status=api.STATUS.get(status, api.UNKNOWN),
                                 stdin=s.stdin, stdout=s.stdout, stderr=s.stderr, terminal=s.terminal,
                                 exit_status=p.exit_status, exited_at=p.exited_at(), exec_id=req.exec_id).encode()

    def Pause(self, data: bytes) -> bytes:  # noqa: N802
        c = self._container(api.TaskIdRequest.decode(data).id)
        c.init.pause()
        self.publisher.publish(api.TaskPaused(container_id=c.id))
        return EMPTY

    def Resume(self, data: bytes) -> bytes:  # noqa: N802
        c = self._container(api.TaskIdRequest.decode(data).id)
        c.init.resume()
        self.publisher.publish(api.TaskResumed(container_id=c.id))
        return EMPTY

    def Kill(self, data: bytes) -> bytes:  # noqa: N802
        req = api.KillRequest.decode(data)
        c = self._container(req.id)
        p = c.process(req.exec_id)
        if isinstance(p, Init):
            p.kill(req.signal, req.all)
        else:
            p.kill(req.signal)  # type: ignore[attr-defined]
        return EMPTY

    def Pids(self, data: bytes) -> bytes:  # noqa: N802
        c = self._container(api.TaskIdRequest.decode(data).id)
        try:
            pids = c.rune.ps(c.id)
        except RuntimeFailure as e:
            raise TtrpcError(UNKNOWN, f"failed to list the container's processes: {e}") from None
        by_pid = {e.pid: e.id for e in list(c.execs.values()) if e.pid}
        processes = []
        for pid in pids:
            info = None
            if pid in by_pid:
                info = api.Any(type_url=api.PROCESS_DETAILS, value=api.ProcessDetails(exec_id=by_pid[pid]).encode())
            processes.append(api.ProcessInfo(pid=pid, info=info))
        return api.PidsResponse(processes=processes).encode()

    def CloseIO(self, data: bytes) -> bytes:  # noqa: N802
        req = api.CloseIORequest.decode(data)
        p = self._container(req.id).process(req.exec_id)
        if req.stdin:
            p.close_stdin()
        return EMPTY

    def Checkpoint(self, data: bytes) -> bytes:  # noqa: N802
        req = api.CheckpointTaskRequest.decode(data)
        self._container(req.id)
        raise TtrpcError(UNIMPLEMENTED, f"containerd-shim-rune-v2 does not checkpoint containers ({req.id}): CRIU "
                                        "checkpoints are not supported by rune's shim, and an enclave's memory "
                                        "cannot be dumped")

    def Update(self, data: bytes) -> bytes:  # noqa: N802
        req = api.UpdateTaskRequest.decode(data)
        c = self._container(req.id)
        if req.resources is None or not req.resources.value:
            raise TtrpcError(INVALID_ARGUMENT, f"update of {req.id}: no resources given")
        c.init.update(req.resources.value)
        return EMPTY

    def Wait(self, data: bytes) -> bytes:  # noqa: N802
        req = api.IdRequest.decode(data)
        p = self._container(req.id).process(req.exec_id)
        p.wait()
        return api.WaitResponse(exit_status=p.exit_status, exited_at=p.exited_at()).encode()

    def Stats(self, data: bytes) -> bytes:  # noqa: N802
        from inclavare.shim import stats

        c = self._container(api.TaskIdRequest.decode(data).id)
        try:
            data_ = c.rune.stats(c.id)
        except RuntimeFailure as e:
            raise TtrpcError(NOT_FOUND if "does not exist" in str(e) else UNKNOWN,
                             f"failed to read the container's statistics: {e}") from None
        return api.StatsResponse(stats=stats.metrics_any(data_)).encode()

    def Connect(self, data: bytes) -> bytes:  # noqa: N802
        req = api.TaskIdRequest.decode(data)
        with self.mu:
            c = self.containers.get(req.id)
        return api.ConnectResponse(shim_pid=os.getpid(), task_pid=c.init.pid if c else 0).encode()

    def Shutdown(self, data: bytes):  # noqa: N802, ANN201 - (payload, what to do once it is sent)
        with self.mu:
            if self.containers:
                return EMPTY
        return EMPTY, self.shutdown_cb
