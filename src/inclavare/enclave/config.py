"""The enclave configuration of a container, read as the original rune reads it (libenclave/check.go).

Each setting comes from process.env first, then from its annotation; a value of one character counts as empty (the
original's `len > 1` test). The ENCLAVE_* variables are removed from the payload's environment. No enclave type:
not an enclave container, and rune behaves as runc.

| env                      | annotation                                   |
|--------------------------|----------------------------------------------|
| ENCLAVE_TYPE             | enclave.type                                 |
| ENCLAVE_RUNTIME_PATH     | enclave.runtime.path                         |
| ENCLAVE_RUNTIME_ARGS     | enclave.runtime.args  (commas become spaces) |
| ENCLAVE_RUNTIME_LOGLEVEL | enclave.runtime.loglevel (unknown -> info)   |
| ENCLAVE_RA_TYPE          | enclave.attestation.ra_type                  |
| ENCLAVE_RA_EPID_SPID     | enclave.attestation.ra_epid_spid             |
| ENCLAVE_RA_EPID_SUB_KEY  | enclave.attestation.ra_epid_subscription_key |
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

INTEL_SGX = "intelSgx"
SIM = "sim"
TYPES = (INTEL_SGX, SIM)
UNSUPPORTED_TYPES = ("AwsNitroEnclaves", "Jailhouse")  # the original's other hardware types
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "fatal", "panic", "off")
RA_TYPES = ("epidUnlinkable", "epidLinkable", "ecdsa")

KEYS = {  # field: (env var, annotation)
    "type": ("ENCLAVE_TYPE", "enclave.type"),
    "runtime_path": ("ENCLAVE_RUNTIME_PATH", "enclave.runtime.path"),
    "runtime_args": ("ENCLAVE_RUNTIME_ARGS", "enclave.runtime.args"),
    "loglevel": ("ENCLAVE_RUNTIME_LOGLEVEL", "enclave.runtime.loglevel"),
    "ra_type": ("ENCLAVE_RA_TYPE", "enclave.attestation.ra_type"),
    "ra_epid_spid": ("ENCLAVE_RA_EPID_SPID", "enclave.attestation.ra_epid_spid"),
    "ra_epid_subscription_key": ("ENCLAVE_RA_EPID_SUB_KEY", "enclave.attestation.ra_epid_subscription_key"),
}
ENV_VARS = frozenset(env for env, _ in KEYS.values())


class EnclaveConfig:
    """type; runtime_path: host path of a PAL .so, "" for the type's built-in runtime (sim); runtime_args: as
    pal_init gets them (commas already spaces); loglevel; ra_type and the EPID settings."""

    __slots__ = ("type", "runtime_path", "runtime_args", "loglevel", "ra_type", "ra_epid_spid",
                 "ra_epid_subscription_key")

    def __init__(self, type: str, runtime_path: str = "", runtime_args: str = "", loglevel: str = "info",  # noqa: A002
                 ra_type: str = "", ra_epid_spid: str = "", ra_epid_subscription_key: str = "") -> None:
        self.type = type
        self.runtime_path = runtime_path
        self.runtime_args = runtime_args
        self.loglevel = loglevel
        self.ra_type = ra_type
        self.ra_epid_spid = ra_epid_spid
        self.ra_epid_subscription_key = ra_epid_subscription_key

    def record(self) -> dict[str, str]:
        """What state.json keeps (the EPID subscription key is a secret: only whether it was set)."""
        return {"type": self.type, "runtime_path": self.runtime_path, "runtime_args": self.runtime_args,
                "loglevel": self.loglevel, "ra_type": self.ra_type, "ra_epid_spid": self.ra_epid_spid,
                "ra_epid_subscription_key_set": bool(self.ra_epid_subscription_key)}


def _value(v: str | None) -> str:
    return v if v is not None and len(v) > 1 else ""


def read(config: dict) -> dict[str, str]:
    """The raw settings: process.env first, then annotations; one-character values count as empty."""
    env: dict[str, str] = {}
    for e in (config.get("process") or {}).get("env") or ():
        k, _, v = e.partition("=")
        if k in ENV_VARS:
            env[k] = v
    annotations = config.get("annotations") or {}
    out = {}
    for field, (var, annotation) in KEYS.items():
        out[field] = _value(env.get(var)) or _value(annotations.get(annotation))
    return out


def strip_env(config: dict) -> None:
    """Remove the ENCLAVE_* variables from process.env (the payload never sees them)."""
    process = config.get("process")
    if process and process.get("env"):
        process["env"] = [e for e in process["env"] if e.partition("=")[0] not in ENV_VARS]


def detect(config: dict) -> EnclaveConfig | None:
    """The container's enclave configuration, validated; None when it is not an enclave container.

    Raises RuneError naming the setting at fault."""
    raw = read(config)
    typ = raw["type"]
    if not typ:
        return None
    if typ in UNSUPPORTED_TYPES:
        raise RuneError(f"enclave type {typ!r} (ENCLAVE_TYPE / enclave.type) is not supported by this rune; "
                        f"use {INTEL_SGX!r} or {SIM!r}")
    if typ not in TYPES:
        raise RuneError(f"unknown enclave type {typ!r} in ENCLAVE_TYPE / enclave.type: use {INTEL_SGX!r} or {SIM!r}")
    path = raw["runtime_path"]
    if path:
        if not os.path.isabs(path):
            raise RuneError(f"enclave runtime path {path!r} (ENCLAVE_RUNTIME_PATH / enclave.runtime.path) must be "
                            "an absolute path on the host")
        if not os.path.isfile(path):
            raise RuneError(f"enclave runtime {path} (ENCLAVE_RUNTIME_PATH / enclave.runtime.path) does not exist "
                            "on the host")
        from inclavare.linux.pathtrust import writable_by_others

        unsafe = writable_by_others(path)
        if unsafe:
            raise RuneError(f"enclave runtime {path} (ENCLAVE_RUNTIME_PATH / enclave.runtime.path) is not loaded: "
                            f"{unsafe}, and rune would run its code as root; install it where only root can write")
    elif typ == INTEL_SGX:
        raise RuneError("enclave type intelSgx needs an enclave runtime: set ENCLAVE_RUNTIME_PATH or the "
                        "enclave.runtime.path annotation to the PAL library (liberpal-*.so) on the host")
    level = raw["loglevel"] if raw["loglevel"] in LOG_LEVELS else "info"
    ra = raw["ra_type"] if raw["ra_type"] in RA_TYPES else ""
    if ra.startswith("epid") and not (raw["ra_epid_spid"] and raw["ra_epid_subscription_key"]):
        raise RuneError(f"remote attestation type {ra} needs ENCLAVE_RA_EPID_SPID and ENCLAVE_RA_EPID_SUB_KEY "
                        "(or the enclave.attestation.ra_epid_* annotations)")
    return EnclaveConfig(type=typ, runtime_path=path, runtime_args=raw["runtime_args"].replace(",", " "),
                         loglevel=level, ra_type=ra, ra_epid_spid=raw["ra_epid_spid"] if ra else "",
                         ra_epid_subscription_key=raw["ra_epid_subscription_key"] if ra else "")


def user_namespace(config: dict) -> bool:
    """config.json makes a user namespace (linux.namespaces has one of type user)."""
    return any(isinstance(ns, dict) and ns.get("type") == "user"
               for ns in (config.get("linux") or {}).get("namespaces") or ())
