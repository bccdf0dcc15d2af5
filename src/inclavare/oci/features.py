"""The runtime-spec features document (features.md): what this runtime implements, for engines to query with
`rune features`."""

from __future__ import annotations

import os

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"


def features() -> dict:
    from inclavare import __version__
    from inclavare.linux import capabilities, mountopts
    from inclavare.oci.config import HOOK_KINDS, NAMESPACES

    mount_options = sorted(set(mountopts.FLAGS) | set(mountopts.PROPAGATION))
    annotations = {
        "org.inclavare.rune.version": __version__,
        "org.inclavare.rune.enclave.types": "intelSgx,sim",
        "org.opencontainers.runc.checkpoint.enabled": "false",
    }
    linux = {
        "namespaces": sorted(NAMESPACES),
        "capabilities": list(capabilities.NAMES),
        "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": True},
        "seccomp": _seccomp(annotations),
        "apparmor": {"enabled": True},  # supported (applied where the host enables it)
        "selinux": {"enabled": True},
        "intelRdt": {"enabled": False},
        "mountExtensions": {"idmap": {"enabled": False}},
    }
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOK_KINDS),
        "mountOptions": mount_options,
        "linux": linux,
        "annotations": annotations,
    }


def _seccomp(annotations: dict) -> dict:
    """Seccomp support as libseccomp on this host gives it; disabled when the library cannot be loaded."""
    from inclavare.errors import RuneError

    try:
        from inclavare.linux import seccomp
        from inclavare.linux.seccomp import libseccomp, profile

        major, minor, micro = libseccomp.version()
    except (RuneError, OSError):
        return {"enabled": False}
    annotations["io.github.seccomp.libseccomp.version"] = f"{major}.{minor}.{micro}"
    return {
        "enabled": os.path.exists("/proc/sys/kernel/seccomp/actions_avail"),
        "actions": seccomp.supported_actions(),
        "operators": seccomp.supported_operators(),
        "archs": seccomp.supported_archs(),
        "knownFlags": list(profile.FLAGS),
        "supportedFlags": seccomp.supported_flags(),
    }
