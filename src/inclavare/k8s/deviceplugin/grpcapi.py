"""The two gRPC services of the device plugin API v1beta1, wired with grpcio's generic handlers.

`v1beta1.DevicePlugin` is served by the plugin on its socket in the kubelet's device-plugin directory;
`v1beta1.Registration` is served by the kubelet on kubelet.sock there. The messages are api_pb2 (generated from the
kubelet's api.proto); the method names and streaming kinds are those of its `service` blocks.
"""

from __future__ import annotations

import grpc

from inclavare.k8s.deviceplugin import api_pb2 as api

VERSION = "v1beta1"
DEVICE_PLUGIN = "v1beta1.DevicePlugin"
REGISTRATION = "v1beta1.Registration"
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"

# method: (request type, response type, server streaming)
DEVICE_PLUGIN_METHODS = {
    "GetDevicePluginOptions": (api.Empty, api.DevicePluginOptions, False),
    "ListAndWatch": (api.Empty, api.ListAndWatchResponse, True),
    "GetPreferredAllocation": (api.PreferredAllocationRequest, api.PreferredAllocationResponse, False),
    "Allocate": (api.AllocateRequest, api.AllocateResponse, False),
    "PreStartContainer": (api.PreStartContainerRequest, api.PreStartContainerResponse, False),
}


def device_plugin_handler(servicer: object) -> grpc.GenericRpcHandler:
    """The DevicePlugin service, each method served by the servicer's method of the same name."""
    handlers = {}
    for name, (req, resp, streaming) in DEVICE_PLUGIN_METHODS.items():
        make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[name] = make(getattr(servicer, name), request_deserializer=req.FromString,
                              response_serializer=resp.SerializeToString)
    return grpc.method_handlers_generic_handler(DEVICE_PLUGIN, handlers)


def register(kubelet_socket: str, request: api.RegisterRequest, timeout: float = 10) -> None:
    """Call the kubelet's Registration.Register; grpc.RpcError when it refuses or cannot be reached."""
    with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
        call = channel.unary_unary(f"/{REGISTRATION}/Register", request_serializer=api.RegisterRequest.SerializeToString,
                                   response_deserializer=api.Empty.FromString)
        call(request, timeout=timeout)


class DevicePluginClient:
    """What the kubelet calls on a plugin's socket (for tools and tests that talk to a plugin directly)."""

    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        for name, (req, resp, streaming) in DEVICE_PLUGIN_METHODS.items():
            make = self.channel.unary_stream if streaming else self.channel.unary_unary
            setattr(self, name, make(f"/{DEVICE_PLUGIN}/{name}", request_serializer=req.SerializeToString,
                                     response_deserializer=resp.FromString))

    def close(self) -> None:
        self.channel.close()
