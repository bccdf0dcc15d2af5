"""What an Intel SGX node advertises, under the names the ecosystem's manifests already request.

- `sgx.intel.com/enclave` and `sgx.intel.com/provision` (Intel's device plugin): as many shared devices as pods may
  ask for (enclave_limit, provision_limit); each gives the enclave device nodes (/dev/sgx_enclave, the legacy
  /dev/sgx/enclave, the out-of-tree /dev/isgx, Graphene's /dev/gsgx, whichever exist) or the provision ones
  (/dev/sgx_provision, /dev/sgx/provision). An enclave container also gets aesmd's socket directory (/var/run/aesmd,
  read-only) and SGX_AESM_ADDR=1, which makes Intel's quote libraries ask aesmd out of process.
- `alibabacloud.com/sgx_epc_MiB` (the original's sgx-device-plugin): one device per MiB of EPC; a container gets what
  an enclave container of the first kind gets.
- `sgx.intel.com/epc` is a quantity of bytes (pods ask for "512Ki"), which a device plugin cannot count in devices:
  as Intel's node-feature-discovery does, it is published as an extended resource in the node's status
  (epc_bytes(); see inclavare.k8s.apiserver), for the scheduler to count.

The EPC size is the sum of the kernel's /sys/devices/system/node/node*/x86/sgx_total_bytes. A device node whose path
is a symlink (udev's /dev/sgx/enclave -> ../sgx_enclave) is given as its target, at the symlink's path in the
container (containerd refuses a symlink as a device). `root` prefixes every host path (tests use stand-in nodes).
"""

from __future__ import annotations

import glob
import os
import stat

from inclavare.enclave.probe import ENCLAVE_DEVICES
from inclavare.k8s.deviceplugin.server import Allocation, Resource

ENCLAVE_NODES = (*ENCLAVE_DEVICES, "/dev/gsgx")
PROVISION_NODES = ("/dev/sgx_provision", "/dev/sgx/provision")
AESMD_DIR = "/var/run/aesmd"
MIB = 1 << 20
DEFAULT_LIMIT = 110  # the kubelet's default maxPods: every pod of a node may hold one


def device_nodes(paths: tuple[str, ...], root: str = "") -> list[tuple[str, str]]:
    """(host path, container path) of each of paths that is a character device on this host."""
    out = []
    for path in paths:
        host = root + path
        try:
            real = os.path.realpath(host)
            if not stat.S_ISCHR(os.stat(real).st_mode):
                continue
        except OSError:
            continue
        out.append((real, path))
    return out


def epc_bytes(root: str = "") -> int:
    total = 0
    for f in glob.glob(f"{root}/sys/devices/system/node/node*/x86/sgx_total_bytes"):
        try:
            with open(f) as fh:
                total += int(fh.read().strip() or 0)
        except (OSError, ValueError):
            continue
    return total


def is_sgx_node(root: str = "") -> bool:
    return bool(device_nodes(ENCLAVE_DEVICES, root))


class SgxResource(Resource):
    """A resource whose devices all share the same device nodes: healthy while some of them exist."""

    nodes: tuple[str, ...] = ENCLAVE_NODES
    with_aesmd = True

    def __init__(self, root: str = "", aesmd_dir: str = AESMD_DIR) -> None:
        self.root = root
        self.aesmd_dir = aesmd_dir

    def healthy(self) -> bool:
        return bool(device_nodes(self.nodes, self.root))

    def allocation(self, ids: list[str]) -> Allocation:
        a = Allocation(devices=device_nodes(self.nodes, self.root))
        if self.with_aesmd and os.path.isdir(self.aesmd_dir):
            a.mounts.append((self.aesmd_dir, AESMD_DIR, True))
            a.envs["SGX_AESM_ADDR"] = "1"
        return a


class SgxEnclave(SgxResource):
    name = "sgx.intel.com/enclave"

    def __init__(self, root: str = "", aesmd_dir: str = AESMD_DIR, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(root, aesmd_dir)
        self.limit = limit

    def device_ids(self) -> list[str]:
        return [f"sgx-enclave-{i}" for i in range(self.limit)]


class SgxProvision(SgxEnclave):
    name = "sgx.intel.com/provision"
    nodes = PROVISION_NODES
    with_aesmd = False

    def device_ids(self) -> list[str]:
        return [f"sgx-provision-{i}" for i in range(self.limit)]


class EpcMiB(SgxResource):
    """One device per MiB of EPC, counted once at start."""

    name = "alibabacloud.com/sgx_epc_MiB"

    def __init__(self, root: str = "", aesmd_dir: str = AESMD_DIR) -> None:
        super().__init__(root, aesmd_dir)
        self.mib = epc_bytes(root) // MIB

    def device_ids(self) -> list[str]:
        return [str(i) for i in range(self.mib)]
