"""The sim enclave resource, for nodes without SGX: `inclavare-containers.io/sim-enclave`.

The sim TEE (inclavare.tee.sim) needs no device: rune's init-runelet hosts the enclave and holds the node's sim
platform keys. What the resource gives is a bounded number of sim enclaves per node (limit, as many as pods by
default), a scheduler that places enclave pods only on nodes that run this plugin (those with rune), and the
environment that makes a container a sim enclave container whatever its image says: ENCLAVE_TYPE=sim. The
devices are always healthy: nothing of the node can vanish under them.
"""

from __future__ import annotations

from inclavare.k8s.deviceplugin.server import Allocation, Resource

DEFAULT_LIMIT = 110


class SimEnclave(Resource):
    name = "inclavare-containers.io/sim-enclave"

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit

    def device_ids(self) -> list[str]:
        return [f"sim-enclave-{i}" for i in range(self.limit)]

    def allocation(self, ids: list[str]) -> Allocation:
        return Allocation(envs={"ENCLAVE_TYPE": "sim"})
