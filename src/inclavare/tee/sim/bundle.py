"""Signing an OCI bundle into a signed `sim` enclave bundle (`sgx-tools sign-bundle`), with the manifest model of
inclavare.tee.sim.manifest:
  - the entry point is process.args[0] of config.json (arguments free unless fixed_args), the measured default
    environment process.env (ENCLAVE_* aside, PATH defaulting as engines default it);
  - trusted tree: the `trusted` argument (paths inside the rootfs), else the config.json annotation
    `enclave.trusted_files` (comma-separated), else the whole rootfs, minus the untrusted paths;
  - writes ROOTFS/.inclavare/enclave/manifest.json and sigstruct.bin;
  - config.json gets annotations enclave.type=sim, enclave.sim.mrenclave, enclave.sim.mrsigner (informational),
    keeps an enclave.runtime.path already set, and an ENCLAVE_TYPE in process.env is set to sim too (env wins over
    annotations when rune reads the enclave config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from inclavare.errors import RuneError
from inclavare.tee.sgx import sigstruct as ss_mod
from inclavare.tee.sim import manifest
from inclavare.tee.sim.manifest import SignedEnclave

ANNOTATION_TRUSTED = "enclave.trusted_files"


def load_key(path: str | os.PathLike[str]):  # noqa: ANN201 - rsa.RSAPrivateKey
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise RuneError(f"the signing key {path} cannot be read: {e.strerror}") from None
    try:
        return ss_mod.load_signing_key(pem)
    except (ValueError, TypeError) as e:
        raise RuneError(f"the signing key {path} is not usable: {e}") from None


def read_bundle(bundle: str | os.PathLike[str]) -> tuple[Path, dict, Path]:
    """(config.json path, its spec, the rootfs)."""
    cfg_path = Path(bundle) / "config.json"
    try:
        spec = json.loads(cfg_path.read_text())
    except OSError as e:
        raise RuneError(f"the bundle config {cfg_path} cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise RuneError(f"the bundle config {cfg_path} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise RuneError(f"the bundle config {cfg_path} is not a JSON object")
    root_path = (spec.get("root") or {}).get("path", "rootfs")
    rootfs = Path(root_path) if os.path.isabs(root_path) else Path(bundle) / root_path
    if not rootfs.is_dir():
        raise RuneError(f"the bundle rootfs {rootfs} (root.path in {cfg_path}) is not a directory")
    return cfg_path, spec, rootfs


def sign_bundle(bundle: str | os.PathLike[str], key: str | os.PathLike[str] | manifest.Signer, *,
                trusted: list[str] | None = None, **options) -> SignedEnclave:
    """Turn the OCI bundle into a signed sim enclave bundle (see the module docstring); `key` is a PEM key path or a
    manifest.Signer; options as manifest.build."""
    cfg_path, spec, rootfs = read_bundle(bundle)
    process = spec.get("process") or {}
    annotations = dict(spec.get("annotations") or {})
    if trusted is None and annotations.get(ANNOTATION_TRUSTED):
        trusted = [p.strip() for p in annotations[ANNOTATION_TRUSTED].split(",") if p.strip()]
    config = manifest.from_process(rootfs, process, trusted_roots=trusted, **options)
    signer = key if hasattr(key, "sign") and hasattr(key, "modulus") else manifest.key_signer(key)
    signed = manifest.sign_rootfs(rootfs, config, signer)
    annotations.update({"enclave.type": "sim", "enclave.sim.mrenclave": signed.mr_enclave.hex(),
                        "enclave.sim.mrsigner": signed.mr_signer.hex()})
    spec["annotations"] = annotations
    if process.get("env"):
        process["env"] = [("ENCLAVE_TYPE=sim" if e.startswith("ENCLAVE_TYPE=") else e) for e in process["env"]]
    manifest.atomic_write(cfg_path, json.dumps(spec, indent=2).encode() + b"\n")
    return signed
