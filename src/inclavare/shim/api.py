"""The messages of containerd 1.6's shim v2 protocol, with the field numbers of its public .proto files.

Sources (field numbers in ../shared/reference/containerd-shim.md): ttrpc's request.proto; containerd's
runtime/v2/task/shim.proto, api/types/{mount,task/task}.proto, api/events/task.proto,
api/services/ttrpc/events/v1/events.proto, pkg/runtimeoptions/v1/api.proto, runtime/v2/runc/options/oci.proto;
google/protobuf/{any,timestamp}.proto and google/rpc/status.proto; containerd/cgroups' v1 and v2 metrics.proto.
"""

from __future__ import annotations

import time

from inclavare.shim.protobuf import Message

R = "repeated"


# ---- google.protobuf, google.rpc, ttrpc ---------------------------------------------------------------------

class Any(Message):
    FIELDS = (("type_url", 1, "string"), ("value", 2, "bytes"))


class Timestamp(Message):
    FIELDS = (("seconds", 1, "int64"), ("nanos", 2, "int32"))

    @classmethod
    def from_ns(cls, ns: int) -> Timestamp:
        return cls(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)

    @classmethod
    def now(cls) -> Timestamp:
        return cls.from_ns(time.time_ns())


class Status(Message):
    FIELDS = (("code", 1, "int32"), ("message", 2, "string"), ("details", 3, (R, Any)))


class KeyValue(Message):
    FIELDS = (("key", 1, "string"), ("value", 2, "string"))


class Request(Message):
    FIELDS = (("service", 1, "string"), ("method", 2, "string"), ("payload", 3, "bytes"),
              ("timeout_nano", 4, "int64"), ("metadata", 5, (R, KeyValue)))


class Response(Message):
    FIELDS = (("status", 1, Status), ("payload", 2, "bytes"))


class Empty(Message):
    FIELDS = ()


# ---- containerd types -----------------------------------------------------------------------------------------

class Mount(Message):
    FIELDS = (("type", 1, "string"), ("source", 2, "string"), ("target", 3, "string"), ("options", 4, (R, "string")))


class ProcessInfo(Message):
    FIELDS = (("pid", 1, "uint32"), ("info", 2, Any))


class ProcessDetails(Message):  # containerd.runc.v1.ProcessDetails, the info of an exec'd process in Pids
    FIELDS = (("exec_id", 1, "string"),)


class RuntimeOptions(Message):  # runtimeoptions.v1.Options: a non-runc runtime's options (ctr, CRI)
    FIELDS = (("type_url", 1, "string"), ("config_path", 2, "string"))


class RuncOptions(Message):  # containerd.runc.v1.Options, sent when a client treats us as runc
    FIELDS = (("no_pivot_root", 1, "bool"), ("no_new_keyring", 2, "bool"), ("shim_cgroup", 3, "string"),
              ("io_uid", 4, "uint32"), ("io_gid", 5, "uint32"), ("binary_name", 6, "string"), ("root", 7, "string"),
              ("criu_path", 8, "string"), ("systemd_cgroup", 9, "bool"), ("criu_image_path", 10, "string"),
              ("criu_work_path", 11, "string"))


# containerd.v1.types.Status
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED, PAUSING = range(6)
STATUS = {"created": CREATED, "running": RUNNING, "stopped": STOPPED, "paused": PAUSED, "pausing": PAUSING}


# ---- containerd.task.v2 -----------------------------------------------------------------------------------------

class CreateTaskRequest(Message):
    FIELDS = (("id", 1, "string"), ("bundle", 2, "string"), ("rootfs", 3, (R, Mount)), ("terminal", 4, "bool"),
              ("stdin", 5, "string"), ("stdout", 6, "string"), ("stderr", 7, "string"), ("checkpoint", 8, "string"),
              ("parent_checkpoint", 9, "string"), ("options", 10, Any))


class CreateTaskResponse(Message):
    FIELDS = (("pid", 1, "uint32"),)


class IdRequest(Message):  # StartRequest, StateRequest, WaitRequest, DeleteRequest
    FIELDS = (("id", 1, "string"), ("exec_id", 2, "string"))


class PidResponse(Message):  # StartResponse
    FIELDS = (("pid", 1, "uint32"),)


class DeleteResponse(Message):
    FIELDS = (("pid", 1, "uint32"), ("exit_status", 2, "uint32"), ("exited_at", 3, Timestamp))


class StateResponse(Message):
    FIELDS = (("id", 1, "string"), ("bundle", 2, "string"), ("pid", 3, "uint32"), ("status", 4, "enum"),
              ("stdin", 5, "string"), ("stdout", 6, "string"), ("stderr", 7, "string"), ("terminal", 8, "bool"),
              ("exit_status", 9, "uint32"), ("exited_at", 10, Timestamp), ("exec_id", 11, "string"))


class WaitResponse(Message):
    FIELDS = (("exit_status", 1, "uint32"), ("exited_at", 2, Timestamp))


class ExecProcessRequest(Message):
    FIELDS = (("id", 1, "string"), ("exec_id", 2, "string"), ("terminal", 3, "bool"), ("stdin", 4, "string"),
              ("stdout", 5, "string"), ("stderr", 6, "string"), ("spec", 7, Any))


class KillRequest(Message):
    FIELDS = (("id", 1, "string"), ("exec_id", 2, "string"), ("signal", 3, "uint32"), ("all", 4, "bool"))


class CloseIORequest(Message):
    FIELDS = (("id", 1, "string"), ("exec_id", 2, "string"), ("stdin", 3, "bool"))


class ResizePtyRequest(Message):
    FIELDS = (("id", 1, "string"), ("exec_id", 2, "string"), ("width", 3, "uint32"), ("height", 4, "uint32"))


class TaskIdRequest(Message):  # PidsRequest, StatsRequest, ConnectRequest, PauseRequest, ResumeRequest
    FIELDS = (("id", 1, "string"),)


class PidsResponse(Message):
    FIELDS = (("processes", 1, (R, ProcessInfo)),)


class CheckpointTaskRequest(Message):
    FIELDS = (("id", 1, "string"), ("path", 2, "string"), ("options", 3, Any))


class UpdateTaskRequest(Message):
    FIELDS = (("id", 1, "string"), ("resources", 2, Any), ("annotations", 3, ("map", "string", "string")))


class StatsResponse(Message):
    FIELDS = (("stats", 1, Any),)


class ConnectResponse(Message):
    FIELDS = (("shim_pid", 1, "uint32"), ("task_pid", 2, "uint32"), ("version", 3, "string"))


class ShutdownRequest(Message):
    FIELDS = (("id", 1, "string"), ("now", 2, "bool"))


# ---- containerd.events ------------------------------------------------------------------------------------------

class TaskIO(Message):
    FIELDS = (("stdin", 1, "string"), ("stdout", 2, "string"), ("stderr", 3, "string"), ("terminal", 4, "bool"))


class TaskCreate(Message):
    TOPIC = "/tasks/create"
    FIELDS = (("container_id", 1, "string"), ("bundle", 2, "string"), ("rootfs", 3, (R, Mount)), ("io", 4, TaskIO),
              ("checkpoint", 5, "string"), ("pid", 6, "uint32"))


class TaskStart(Message):
    TOPIC = "/tasks/start"
    FIELDS = (("container_id", 1, "string"), ("pid", 2, "uint32"))


class TaskExit(Message):
    TOPIC = "/tasks/exit"
    FIELDS = (("container_id", 1, "string"), ("id", 2, "string"), ("pid", 3, "uint32"), ("exit_status", 4, "uint32"),
              ("exited_at", 5, Timestamp))


class TaskDelete(Message):
    TOPIC = "/tasks/delete"
    FIELDS = (("container_id", 1, "string"), ("pid", 2, "uint32"), ("exit_status", 3, "uint32"),
              ("exited_at", 4, Timestamp), ("id", 5, "string"))


class TaskExecAdded(Message):
    TOPIC = "/tasks/exec-added"
    FIELDS = (("container_id", 1, "string"), ("exec_id", 2, "string"))


class TaskExecStarted(Message):
    TOPIC = "/tasks/exec-started"
    FIELDS = (("container_id", 1, "string"), ("exec_id", 2, "string"), ("pid", 3, "uint32"))


class TaskOOM(Message):
    TOPIC = "/tasks/oom"
    FIELDS = (("container_id", 1, "string"),)


class TaskPaused(Message):
    TOPIC = "/tasks/paused"
    FIELDS = (("container_id", 1, "string"),)


class TaskResumed(Message):
    TOPIC = "/tasks/resumed"
    FIELDS = (("container_id", 1, "string"),)


class Envelope(Message):
    FIELDS = (("timestamp", 1, Timestamp), ("namespace", 2, "string"), ("topic", 3, "string"), ("event", 4, Any))


class ForwardRequest(Message):
    FIELDS = (("envelope", 1, Envelope),)


def event_any(event: Message) -> Any:
    """The event packed with a bare type URL (containerd.events.TaskExit): a type.googleapis.com/ prefix is accepted
    by Forward but breaks every subscriber."""
    return Any(type_url="containerd.events." + type(event).__name__, value=event.encode())


# ---- type URLs of Any payloads ------------------------------------------------------------------------------------

PROCESS_SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Process"
LINUX_RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
RUNTIME_OPTIONS = "runtimeoptions.v1.Options"
RUNC_OPTIONS = "containerd.runc.v1.Options"
METRICS_V1 = "io.containerd.cgroups.v1.Metrics"
METRICS_V2 = "io.containerd.cgroups.v2.Metrics"
