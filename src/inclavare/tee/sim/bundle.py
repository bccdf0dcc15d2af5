"""Signing: a sim enclave image into a rootfs, and an OCI bundle into a signed `sim` enclave bundle.

`sign_bundle(bundle, key_pem)`:
  - the entry is process.args[0] of config.json (looked up in the rootfs through process.env PATH when relative);
  - trusted files: the `trusted` argument (paths or directories inside the rootfs), else the config.json annotation
    `enclave.trusted_files` (comma-separated), else every regular file of the rootfs outside /proc, /sys, /dev,
    /tmp, /run, /var/tmp, /var/run and /.inclavare;
  - writes ROOTFS/.inclavare/enclave/manifest.json and sigstruct.bin;
  - config.json gets annotations enclave.type=sim, enclave.sim.mrenclave, enclave.sim.mrsigner (informational),
    keeps an enclave.runtime.path already set, and an ENCLAVE_TYPE in process.env is set to sim too (env wins over
    annotations when rune reads the enclave config).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from inclavare.errors import RuneError
from inclavare.tee.sgx import sigstruct as ss_mod
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sim import image

SKIP_DIRS = ("/proc", "/sys", "/dev", "/tmp", "/run", "/var/tmp", "/var/run", "/" + image.ENCLAVE_DIR.split("/")[0])
ANNOTATION_TRUSTED = "enclave.trusted_files"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SignedImage:
    config: image.EnclaveConfig
    sigstruct: ss_mod.Sigstruct
    mr_enclave: bytes
    mr_signer: bytes


def load_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise RuneError(f"the signing key {path} cannot be read: {e.strerror}") from None
    try:
        return ss_mod.load_signing_key(pem)
    except (ValueError, TypeError) as e:
        raise RuneError(f"the signing key {path} is not usable: {e}") from None


def sign_image(rootfs: str | os.PathLike[str], key: rsa.RSAPrivateKey, config: image.EnclaveConfig,
               date: datetime.date | None = None) -> SignedImage:
    """Measure `config` over `rootfs`, sign it, and write the manifest and SIGSTRUCT into the rootfs."""
    measured = image.measure_image(rootfs, config)
    attributes = config.attributes
    unsigned = ss_mod.Sigstruct(
        date=ss_mod.bcd_date(date or datetime.date.today()),
        misc_select=config.misc_select, misc_mask=0xFFFFFFFF,
        attributes=attributes.to_bytes(),
        attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0).to_bytes(),  # every flag enforced; XFRM left to the host
        enclave_hash=measured.mr_enclave, isv_prod_id=config.isv_prod_id, isv_svn=config.isv_svn,
    )
    signed = ss_mod.sign(unsigned, key)
    d = image.enclave_dir(rootfs)
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    manifest = {
        "version": image.MANIFEST_VERSION,
        "note": "inclavare sim enclave (SIMULATED TEE); 'enclave' is measured, the rest is informational",
        "enclave": config.to_json(),
        "digests": measured.digests,
        "mr_enclave": measured.mr_enclave.hex(),
        "mr_signer": signed.mr_signer.hex(),
    }
    _atomic_write(d / image.SIGSTRUCT, signed.to_bytes())
    _atomic_write(d / image.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    return SignedImage(config, signed, measured.mr_enclave, signed.mr_signer)


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _walk_regular(rootfs: Path, start: str) -> list[str]:
    """Regular files under `start` (a path inside the rootfs), without following symlinks, minus SKIP_DIRS."""
    return walk_tree(rootfs, start)[0]


def walk_tree(rootfs: Path, start: str) -> tuple[list[str], dict[str, str]]:
    """(regular files, {symlink: target}) under `start` (a path inside the rootfs), without following symlinks,
    minus SKIP_DIRS: what a signature covers, and what the launch check finds again."""
    host = image.resolve_in_rootfs(rootfs, start)
    real_root = os.path.realpath(rootfs)
    if host.is_file() and not host.is_symlink():
        return ["/" + os.path.relpath(host, real_root)], {}
    found: list[str] = []
    links: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(host):
        rel = "/" + os.path.relpath(dirpath, real_root).lstrip(".")
        rel = "/" if rel in ("/", "/.") else rel.rstrip("/")
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):  # os.walk lists symlinked directories here
                dirnames.remove(name)
                filenames.append(name)
        dirnames[:] = sorted(d for d in dirnames if os.path.join(rel, d) not in SKIP_DIRS)
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                links[os.path.join(rel, name)] = os.readlink(p)
            elif os.path.isfile(p):
                found.append(os.path.join(rel, name))
    return found, links


def payload_env(env: object) -> list[str]:
    """process.env as the payload gets it, minus what rune adds: no ENCLAVE_* variable, strings only."""
    return [e for e in env or () if isinstance(e, str) and not e.startswith("ENCLAVE_")] if isinstance(
        env, (list, tuple)) else []


def _entry(rootfs: Path, args: list[str], env: list[str]) -> str:
    if not args:
        raise RuneError("config.json has no process.args; the enclave entry is process.args[0]")
    arg0 = args[0]
    if "/" in arg0:
        return arg0 if arg0.startswith("/") else "/" + arg0
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for d in path.split(":"):
        candidate = os.path.join(d or "/", arg0)
        if image.resolve_in_rootfs(rootfs, candidate).is_file():
            return candidate
    raise RuneError(f"the enclave entry '{arg0}' (process.args[0]) is not found in the rootfs PATH {path}")


def sign_bundle(bundle: str | os.PathLike[str], key_path: str | os.PathLike[str], *,
                trusted: list[str] | None = None, debug: bool = False, isv_prod_id: int = 0,
                isv_svn: int = 0) -> SignedImage:
    """Turn the OCI bundle into a signed sim enclave bundle (see the module docstring)."""
    bdir = Path(bundle)
    cfg_path = bdir / "config.json"
    try:
        spec = json.loads(cfg_path.read_text())
    except OSError as e:
        raise RuneError(f"the bundle config {cfg_path} cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise RuneError(f"the bundle config {cfg_path} is not valid JSON: {e}") from None
    root_path = (spec.get("root") or {}).get("path", "rootfs")
    rootfs = Path(root_path) if os.path.isabs(root_path) else bdir / root_path
    if not rootfs.is_dir():
        raise RuneError(f"the bundle rootfs {rootfs} (root.path in {cfg_path}) is not a directory")
    process = spec.get("process") or {}
    entry = _entry(rootfs, list(process.get("args") or []), list(process.get("env") or []))
    annotations = dict(spec.get("annotations") or {})
    if trusted is None and annotations.get(ANNOTATION_TRUSTED):
        trusted = [p.strip() for p in annotations[ANNOTATION_TRUSTED].split(",") if p.strip()]
    files: list[str] = []
    links: dict[str, str] = {}
    roots = trusted if trusted is not None else ["/"]
    for start in roots:
        if not start.startswith("/"):
            raise RuneError(f"the trusted path '{start}' must be absolute inside the rootfs")
        found, found_links = walk_tree(rootfs, start)
        if not found:
            raise RuneError(f"the trusted path '{start}' does not exist in the rootfs {rootfs} or holds no regular file")
        files.extend(found)
        links.update(found_links)
    # the symlinks and the trusted roots are part of the measured configuration: the launch check finds the same
    # tree again (a symlink retargeted or a file added under a trusted root is refused)
    config = image.EnclaveConfig(entry=entry, trusted_files=tuple(files), debug=debug, isv_prod_id=isv_prod_id,
                                 isv_svn=isv_svn, argv=tuple(process.get("args") or ()),
                                 env=tuple(payload_env(process.get("env") or ())),
                                 extra={"symlinks": links, "trusted_roots": list(roots)})
    signed = sign_image(rootfs, load_key(key_path), config)
    annotations.update({"enclave.type": "sim", "enclave.sim.mrenclave": signed.mr_enclave.hex(),
                        "enclave.sim.mrsigner": signed.mr_signer.hex()})
    spec["annotations"] = annotations
    if process.get("env"):
        process["env"] = [("ENCLAVE_TYPE=sim" if e.startswith("ENCLAVE_TYPE=") else e) for e in process["env"]]
    _atomic_write(cfg_path, json.dumps(spec, indent=2).encode() + b"\n")
    return signed
