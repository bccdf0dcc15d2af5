"""The intelSgx host probe: SGX in the CPU, its device nodes, and what a container needs to reach them.

The original probes CPUID.(EAX=7,ECX=0).EBX bit 2. The kernel reports that bit as the `sgx` flag of
/proc/cpuinfo (and clears it when SGX is disabled in firmware or unusable), which needs neither ctypes nor machine
code. Devices: whichever exist of /dev/sgx_enclave, /dev/sgx/enclave (in-kernel driver; a symlink is accepted),
/dev/isgx (out-of-tree driver), /dev/sgx_provision, /dev/sgx/provision, /dev/gsgx; each gets an `rwm` cgroup rule.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from inclavare.errors import RuneError

ENCLAVE_DEVICES = ("/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/isgx")
OTHER_DEVICES = ("/dev/sgx_provision", "/dev/sgx/provision", "/dev/gsgx")
# bind-mounted when present: aesmd's socket. Not epm's: rune talks to epm before the container exists, and a
# container's root reaching epm could plant bundle-cache records (epm refuses peers outside its namespaces too).
HOST_DIRS = ("/var/run/aesmd",)
SIM_HINT = "use ENCLAVE_TYPE=sim (the software TEE) on hosts without SGX"


@dataclass
class SgxHost:
    devices: list[dict] = field(default_factory=list)  # OCI linux.devices entries
    rules: list[dict] = field(default_factory=list)  # OCI linux.resources.devices allow rules
    mounts: list[dict] = field(default_factory=list)  # OCI mounts


def cpu_has_sgx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return "sgx" in line.partition(":")[2].split()
    except OSError:
        return False
    return False


def _device(path: str, root: str) -> dict | None:
    host = root + path
    try:
        st = os.stat(host)  # follows a /dev/sgx/enclave symlink, as the original accepts
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return {"path": path, "type": "c", "major": major, "minor": minor, "fileMode": stat.S_IMODE(st.st_mode),
            "uid": 0, "gid": 0}


def probe_sgx(cpuinfo: str = "/proc/cpuinfo", root: str = "") -> SgxHost:
    """Probe this host for SGX; RuneError naming the failed probe (`root` prefixes device paths, for tests)."""
    if not cpu_has_sgx(cpuinfo):
        raise RuneError(f"enclave type intelSgx: the CPUID probe failed: this CPU does not report SGX (no 'sgx' flag in "
                        f"{cpuinfo}, CPUID.7.EBX bit 2); {SIM_HINT}")
    host = SgxHost()
    for path in ENCLAVE_DEVICES + OTHER_DEVICES:
        d = _device(path, root)
        if d is not None:
            host.devices.append(d)
            host.rules.append({"allow": True, "type": "c", "major": d["major"], "minor": d["minor"], "access": "rwm"})
    if not any(d["path"] in ENCLAVE_DEVICES for d in host.devices):
        raise RuneError(f"enclave type intelSgx: the device probe failed: none of {', '.join(ENCLAVE_DEVICES)} is a "
                        f"character device on this host (is the SGX driver loaded?); {SIM_HINT}")
    for d in HOST_DIRS:
        if os.path.isdir(root + d):
            host.mounts.append({"destination": d, "type": "bind", "source": root + d, "options": ["rbind", "rprivate"]})
    return host


def apply(config: dict, host: SgxHost) -> None:
    """Add the devices, their cgroup rules and the host directories to config.json (in memory)."""
    linux = config.setdefault("linux", {})
    have = {d.get("path") for d in linux.get("devices") or ()}
    linux["devices"] = list(linux.get("devices") or ()) + [d for d in host.devices if d["path"] not in have]
    resources = linux.setdefault("resources", {})
    resources["devices"] = list(resources.get("devices") or ()) + host.rules
    dests = {m.get("destination") for m in config.get("mounts") or ()}
    config["mounts"] = list(config.get("mounts") or ()) + [m for m in host.mounts if m["destination"] not in dests]
