"""rune-device-plugin: the kubelet device plugin for enclave resources (see inclavare.k8s.deviceplugin).

    rune-device-plugin [--resources auto|sgx|sim|sgx,sim] [--socket-dir DIR] [--interval SECONDS]
                       [--enclave-limit N] [--provision-limit N] [--sim-limit N] [--aesmd-dir DIR]
                       [--node-name NAME] [--kubeconfig FILE] [--root DIR]

auto (the default) advertises the SGX resources on a node with an SGX enclave device and the sim resource
elsewhere. With --node-name (or $NODE_NAME) and API credentials (--kubeconfig, or the pod's service account), the EPC
size is published as sgx.intel.com/epc in the node's status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

PROG = "rune-device-plugin"


def parse(argv: list[str]) -> argparse.Namespace:
    from inclavare.about import add_version_flag
    from inclavare.cli.usage import Parser

    p = Parser(prog=PROG, description="kubelet device plugin for SGX and sim enclave resources")
    add_version_flag(p, PROG)
    try:
        from inclavare.k8s.deviceplugin import grpcapi, sgx, sim
    except ImportError as e:
        p.parse_known_args(argv)  # --version still answers where the plugin's dependencies are missing
        p.exit(1, f"{PROG}: a Python package is missing ({e.name}); install grpcio and protobuf\n")
    p.add_argument("--resources", default="auto", help="auto (default), sgx, sim, or sgx,sim")
    p.add_argument("--socket-dir", default=grpcapi.DEVICE_PLUGIN_PATH,
                   help=f"the kubelet's device-plugin directory ({grpcapi.DEVICE_PLUGIN_PATH})")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between looks at the devices and the kubelet")
    p.add_argument("--enclave-limit", type=int, default=sgx.DEFAULT_LIMIT, help="sgx.intel.com/enclave devices")
    p.add_argument("--provision-limit", type=int, default=sgx.DEFAULT_LIMIT, help="sgx.intel.com/provision devices")
    p.add_argument("--sim-limit", type=int, default=sim.DEFAULT_LIMIT, help="inclavare-containers.io/sim-enclave devices")
    p.add_argument("--aesmd-dir", default=sgx.AESMD_DIR, help=f"aesmd's socket directory ({sgx.AESMD_DIR})")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""), help="this node, to publish the EPC size")
    p.add_argument("--kubeconfig", default="", help="API credentials (default: the pod's service account)")
    p.add_argument("--root", default="", help=argparse.SUPPRESS)  # prefixes /dev and /sys (tests)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    a = p.parse_args(argv)
    for name in ("enclave_limit", "provision_limit", "sim_limit"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.interval <= 0:
        p.error("--interval must be positive")
    kinds = set(a.resources.split(","))
    if not kinds <= {"auto", "sgx", "sim"} or ("auto" in kinds and len(kinds) > 1):
        p.error(f"--resources: {a.resources!r} is not auto, sgx, sim or sgx,sim")
    return a


def resources(a: argparse.Namespace) -> list:
    from inclavare.k8s.deviceplugin import sgx, sim

    kinds = set(a.resources.split(","))
    if "auto" in kinds:
        kinds = {"sgx"} if sgx.is_sgx_node(a.root) else {"sim"}
    out: list = []
    if "sgx" in kinds:
        out += [sgx.SgxEnclave(a.root, a.aesmd_dir, a.enclave_limit),
                sgx.SgxProvision(a.root, a.aesmd_dir, a.provision_limit)]
        epc = sgx.EpcMiB(a.root, a.aesmd_dir)
        if epc.mib:
            out.append(epc)
    if "sim" in kinds:
        out.append(sim.SimEnclave(a.sim_limit))
    return out


def epc_publisher(a: argparse.Namespace, log: logging.Logger):
    """A callback that publishes sgx.intel.com/epc in the node's status, or None when it cannot or need not."""
    from inclavare.k8s import apiserver
    from inclavare.k8s.deviceplugin import sgx

    total = sgx.epc_bytes(a.root)
    if not total or not a.node_name:
        return None
    try:
        client = (apiserver.ApiClient.from_kubeconfig(a.kubeconfig) if a.kubeconfig
                  else apiserver.ApiClient.in_cluster())
    except apiserver.ApiError as e:
        log.warning("sgx.intel.com/epc is not published: %s", e)
        return None

    def publish() -> None:
        try:
            client.set_node_extended_resource(a.node_name, "sgx.intel.com/epc", str(total))
            log.info("published sgx.intel.com/epc=%d on node %s", total, a.node_name)
        except apiserver.ApiError as e:
            log.warning("publishing sgx.intel.com/epc on node %s failed: %s", a.node_name, e)

    return publish


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger(PROG)
    try:
        from inclavare.k8s.deviceplugin.server import Manager
    except ImportError as e:
        print(f"{PROG}: a Python package is missing ({e.name}); install grpcio and protobuf", file=sys.stderr)
        return 1
    chosen = resources(a)
    if not chosen:
        print(f"{PROG}: nothing to advertise on this node", file=sys.stderr)
        return 1
    manager = Manager(chosen, a.socket_dir, a.interval, on_register=epc_publisher(a, log))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: manager.stop())
    log.info("%s: %s, kubelet socket %s", PROG, ", ".join(r.name for r in chosen), manager.kubelet_socket)
    try:
        manager.run()
    except OSError as e:
        print(f"{PROG}: {e.filename or a.socket_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
