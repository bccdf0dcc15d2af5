"""rune-device-plugin: the kubelet device plugin API v1beta1 (gRPC over unix sockets) for enclave resources.

The generic plugin server (`server`: serve, register, ListAndWatch, re-registration after a kubelet restart) is apart
from what is advertised (`sgx`: Intel SGX device nodes and EPC; `sim`: the software TEE), as in Intel's device plugins.
"""
