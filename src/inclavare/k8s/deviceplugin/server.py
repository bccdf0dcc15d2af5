"""The generic device plugin server: one gRPC server per extended resource, registered with the kubelet, re-registered
after the kubelet restarts, pushing device health changes through ListAndWatch.

A Resource says what is advertised (its devices and their health) and what a container that gets some of them needs
(Allocate's device nodes, mounts and environment); nothing here knows SGX. The kubelet protocol, from
pkg/kubelet/cm/devicemanager: the plugin serves on <dir>/<socket> before it calls Register; the kubelet then dials it,
asks GetDevicePluginOptions and keeps a ListAndWatch stream open, which gets the whole device list at once and again
on every change. A restarting kubelet removes every socket in the directory and creates kubelet.sock anew: the
Manager notices (its own socket gone, or kubelet.sock another file) and serves and registers again.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from inclavare.k8s.deviceplugin import api_pb2 as api
from inclavare.k8s.deviceplugin import grpcapi

log = logging.getLogger("rune-device-plugin")


class AllocationError(Exception):
    """An Allocate the plugin refuses (unknown device IDs); str() is the sentence the kubelet shows."""


@dataclass
class Allocation:
    """What a container gets for its devices: device nodes (host path, container path), mounts, environment."""

    devices: list[tuple[str, str]] = field(default_factory=list)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # host, container, read-only
    envs: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def response(self) -> api.ContainerAllocateResponse:
        return api.ContainerAllocateResponse(
            envs=self.envs, annotations=self.annotations,
            devices=[api.DeviceSpec(host_path=h, container_path=c, permissions="rw") for h, c in self.devices],
            mounts=[api.Mount(host_path=h, container_path=c, read_only=ro) for h, c, ro in self.mounts])


class Resource:
    """One extended resource: name (vendor/kind) and device IDs that are healthy or not."""

    name = ""

    @property
    def socket(self) -> str:
        """The socket's file name in the kubelet's device-plugin directory: sgx.intel.com-enclave.sock."""
        return self.name.replace("/", "-") + ".sock"

    def device_ids(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        """Whether the node's devices behind this resource are there (every ID shares them)."""
        return True

    def allocation(self, ids: list[str]) -> Allocation:
        raise NotImplementedError

    def devices(self) -> list[api.Device]:
        health = grpcapi.HEALTHY if self.healthy() else grpcapi.UNHEALTHY
        return [api.Device(ID=i, health=health) for i in self.device_ids()]

    def allocate(self, ids: list[str]) -> api.ContainerAllocateResponse:
        known = set(self.device_ids())
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise AllocationError(f"{self.name}: unknown device ID {unknown[0]!r} (this node has {len(known)})")
        if not self.healthy():
            raise AllocationError(f"{self.name}: the devices of this resource are gone from the node")
        return self.allocation(ids).response()


class PluginServer:
    """The DevicePlugin service of one resource on <plugin_dir>/<resource.socket>."""

    def __init__(self, resource: Resource, plugin_dir: str) -> None:
        self.resource = resource
        self.path = os.path.join(plugin_dir, resource.socket)
        self.server: grpc.Server | None = None
        self.inode = 0
        self.changed = threading.Condition()
        self.generation = 0  # bumped on every change of the device list, and on stop
        self.stopping = False
        self.current = resource.devices()

    # -- serving --

    def start(self) -> None:
        try:
            os.unlink(self.path)  # a socket left by an earlier run
        except FileNotFoundError:
            pass
        self.stopping = False
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=self.resource.socket))
        self.server.add_generic_rpc_handlers((grpcapi.device_plugin_handler(self),))
        self.server.add_insecure_port(f"unix://{self.path}")
        self.server.start()
        self.inode = os.stat(self.path).st_ino
        log.info("serving %s on %s", self.resource.name, self.path)

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.generation += 1
            self.changed.notify_all()
        if self.server is not None:
            self.server.stop(grace=1).wait()
            self.server = None
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def socket_gone(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def register(self, kubelet_socket: str) -> None:
        options = api.DevicePluginOptions(get_preferred_allocation_available=True)
        grpcapi.register(kubelet_socket, api.RegisterRequest(
            version=grpcapi.VERSION, endpoint=os.path.basename(self.path), resource_name=self.resource.name,
            options=options))
        log.info("registered %s with the kubelet (%d devices, %s)", self.resource.name, len(self.current),
                 self.current[0].health if self.current else "none")

    def refresh(self) -> bool:
        """Look at the devices again; True (and ListAndWatch streams told) when the list or a health changed."""
        devices = self.resource.devices()
        if devices == self.current:
            return False
        with self.changed:
            self.current = devices
            self.generation += 1
            self.changed.notify_all()
        health = {d.health for d in devices}
        log.info("%s: %d devices, %s", self.resource.name, len(devices), "/".join(sorted(health)) or "none")
        return True

    # -- the DevicePlugin service --

    def GetDevicePluginOptions(self, request: api.Empty, context: grpc.ServicerContext) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request: api.Empty, context: grpc.ServicerContext):
        with self.changed:
            seen, devices = self.generation, list(self.current)
        yield api.ListAndWatchResponse(devices=devices)
        while context.is_active():
            with self.changed:
                self.changed.wait(timeout=1.0)  # a change, a stop, or a second to look at the stream again
                if self.stopping:
                    return
                if self.generation == seen:
                    continue
                seen, devices = self.generation, list(self.current)
            yield api.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(self, request: api.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> api.PreferredAllocationResponse:
        """The IDs that must be included, then the lowest available ones (the devices are interchangeable)."""
        out = []
        for r in request.container_requests:
            chosen = list(r.must_include_deviceIDs)
            rest = sorted((i for i in r.available_deviceIDs if i not in chosen), key=_natural)
            chosen += rest[: max(0, r.allocation_size - len(chosen))]
            out.append(api.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request: api.AllocateRequest, context: grpc.ServicerContext) -> api.AllocateResponse:
        responses = []
        for r in request.container_requests:
            try:
                responses.append(self.resource.allocate(list(r.devices_ids)))
            except AllocationError as e:
                log.warning("Allocate refused: %s", e)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        log.info("Allocate %s: %s", self.resource.name, [list(r.devices_ids) for r in request.container_requests])
        return api.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: api.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()


def _natural(device_id: str) -> tuple[str, int]:
    head, _, tail = device_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (device_id, -1)


class Manager:
    """Runs the plugin servers of every resource until stop(): registers each, and again whenever the kubelet
    restarts; looks at device health every interval seconds; on_register runs after each (re-)registration."""

    def __init__(self, resources: list[Resource], plugin_dir: str = grpcapi.DEVICE_PLUGIN_PATH,
                 interval: float = 5.0, on_register=None) -> None:
        self.plugin_dir = plugin_dir
        self.kubelet_socket = os.path.join(plugin_dir, grpcapi.KUBELET_SOCKET)
        self.servers = [PluginServer(r, plugin_dir) for r in resources]
        self.interval = interval
        self.on_register = on_register
        self.done = threading.Event()
        self.kubelet_id: tuple[int, int] = (0, 0)
        self.registered: set[str] = set()

    def _kubelet_id(self) -> tuple[int, int]:
        """kubelet.sock's inode and change time: a new socket, even on a reused inode, is another file."""
        try:
            st = os.stat(self.kubelet_socket)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_ctime_ns)

    def step(self) -> None:
        """One look: restart what the kubelet removed, register what is not registered, refresh health."""
        kubelet = self._kubelet_id()
        if kubelet != self.kubelet_id:
            if self.kubelet_id[0]:
                log.info("the kubelet restarted (%s is a new socket): registering again", self.kubelet_socket)
            self.kubelet_id = kubelet
            self.registered.clear()
        for s in self.servers:
            if s.server is None or s.socket_gone():
                if s.server is not None:
                    log.info("%s was removed: serving again", s.path)
                    s.stop()
                s.start()
                self.registered.discard(s.resource.name)
            s.refresh()
            if s.resource.name not in self.registered and kubelet[0]:
                try:
                    s.register(self.kubelet_socket)
                except grpc.RpcError as e:
                    log.warning("registering %s with the kubelet at %s failed: %s", s.resource.name,
                                self.kubelet_socket, e.details() if hasattr(e, "details") else e)
                    continue
                self.registered.add(s.resource.name)
                if self.on_register is not None:
                    self.on_register()

    def run(self) -> None:
        os.makedirs(self.plugin_dir, exist_ok=True)
        try:
            while not self.done.is_set():
                self.step()
                self.done.wait(self.interval)
        finally:
            for s in self.servers:
                s.stop()

    def stop(self) -> None:
        self.done.set()
