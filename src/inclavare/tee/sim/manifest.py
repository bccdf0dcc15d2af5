"""The enclave-image signing model as a library: build an enclave manifest from an image config (or an OCI process),
sign it with a local key or an external signer, and write the artefacts into a rootfs.

What `sgx-tools sign-bundle`, `sgx-tools sign-image` and containerd-shim-rune-v2 use; stable API:

    from inclavare.tee.sim import manifest
    cfg = manifest.from_image_config(rootfs, image_config, untrusted_env=("PORT",))   # or from_process(rootfs, proc)
    signer = manifest.key_signer("owner.pem")                                         # or callback_signer(pem, fn)
    signed = manifest.sign(cfg, signer)          # SignedEnclave: manifest and SIGSTRUCT bytes, MRENCLAVE, MRSIGNER
    manifest.write(signed, rootfs)               # ROOTFS/.inclavare/enclave/{manifest.json,sigstruct.bin}
    # or, in one call: manifest.sign_rootfs(rootfs, cfg, signer)

The measurement covers the image's files and the manifest, not what an engine injects; see inclavare.tee.sim.image
for the manifest's fields and docs/enclave-containers.md for the model and its threat assumptions. MRENCLAVE depends
on the manifest alone (which holds every trusted file's digest), so `sign` needs no rootfs: a signing server or the
shim can sign a manifest built elsewhere. A rootfs launches only with its artefacts and with every trusted file
as signed (inclavare.tee.sim.launch.launch_check).

An external signer (an HSM, the original's signing server: POST /api/v1/signature/pkcs1) is any object with
`modulus` (the RSA-3072 public modulus, exponent 3) and `sign(data) -> signature`: data is the SIGSTRUCT's 256 signed
bytes (header || body), the signature RSA-3072 PKCS#1 v1.5 over SHA-256, big-endian (384 bytes). Its answer is
verified before it is used.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inclavare.errors import RuneError
from inclavare.tee.sim import image
from inclavare.tee.sim.image import DEFAULT_PATH, EnclaveConfig, Entrypoint

__all__ = ["EnclaveConfig", "Entrypoint", "SignedEnclave", "Signer", "build", "callback_signer", "from_image_config",
           "from_process", "key_signer", "sign", "sign_rootfs", "write"]


class Signer(Protocol):
    modulus: int

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignedEnclave:
    config: EnclaveConfig
    manifest: bytes  # manifest.json
    sigstruct: bytes  # sigstruct.bin (1808 bytes)
    mr_enclave: bytes
    mr_signer: bytes


# ---- building -------------------------------------------------------------------------------------------------


def from_image_config(rootfs: str | os.PathLike[str], image_config: dict, **options) -> EnclaveConfig:
    """The manifest for an OCI/Docker image config (the whole config blob, or its "config" object): the entry point
    is Entrypoint + Cmd's argv[0], the measured defaults are Env (PATH defaulting as engines default it). Options:
    see build."""
    cfg = image_config.get("config", image_config) if isinstance(image_config, dict) else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    argv = list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])
    return build(rootfs, argv, list(cfg.get("Env") or []), cwd=cfg.get("WorkingDir") or "/", **options)


def from_process(rootfs: str | os.PathLike[str], process: dict, **options) -> EnclaveConfig:
    """The manifest for an OCI runtime-spec process (a bundle's config.json "process"). Options: see build."""
    return build(rootfs, list(process.get("args") or []), list(process.get("env") or []),
                 cwd=process.get("cwd") or "/", **options)


def build(rootfs: str | os.PathLike[str], argv: list[str], env: list[str], *, cwd: str = "/",
          entrypoints: Iterable[str] = (), fixed_args: bool = False, extra_env: Iterable[str] = (),
          untrusted_env: Iterable[str] = (), untrusted_paths: Iterable[str] = (),
          trusted_roots: Iterable[str] | None = None, debug: bool = False, isv_prod_id: int = 0,
          isv_svn: int = 0) -> EnclaveConfig:
    """The manifest of the rootfs for a process `argv` with environment `env` ("NAME=VALUE", ENCLAVE_* dropped).

    entrypoints: more programs that may be started (absolute paths, or names looked up in the measured PATH);
    fixed_args: the argv of the default entry point is fixed (else arguments are free);
    extra_env: more measured defaults ("NAME=VALUE"); untrusted_env: more names (or NAME* prefixes) the untrusted
    side may set, besides image.UNTRUSTED_ENV; untrusted_paths: more paths outside the measurement (volumes, caches),
    besides image.UNTRUSTED_PATHS; trusted_roots: the signed trees (default the whole rootfs)."""
    measured = {"PATH": DEFAULT_PATH}
    for item in [*env, *extra_env]:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise RuneError(f"the environment entry {item!r} is not NAME=VALUE")
        if not name.startswith("ENCLAVE_"):
            measured[name] = value
    skip = tuple(dict.fromkeys([*image.UNTRUSTED_PATHS, *(_abs(p, "untrusted path") for p in untrusted_paths)]))
    roots = [_abs(p, "trusted path") for p in (trusted_roots if trusted_roots is not None else ["/"])]
    path_env = measured["PATH"]
    eps: list[Entrypoint] = []
    if argv:
        eps.append(Entrypoint(_program(rootfs, argv[0], path_env, cwd, "the image's entry point (argv[0])"),
                              tuple(argv) if fixed_args else None))
    elif fixed_args:
        raise RuneError("--fixed-args needs an entry point in the image (Entrypoint or Cmd)")
    for p in entrypoints:
        eps.append(Entrypoint(_program(rootfs, p, path_env, cwd, "the entry point")))
    if not eps:
        raise RuneError("the image has no Entrypoint or Cmd: name the enclave's entry points (--entrypoint PATH)")
    seen: dict[str, Entrypoint] = {}
    for e in eps:
        seen.setdefault(e.path, e)
    real_root = os.path.realpath(rootfs)
    programs = {e.path: "/" + os.path.relpath(image.resolve_in_rootfs(rootfs, e.path), real_root) for e in eps}
    for rel in programs.values():  # an entry point is always trusted, whatever the trusted roots
        if not image.under(rel, roots):
            roots.append(rel)
    tree = image.walk_tree(rootfs, roots, skip)
    for start in roots:
        if image.under(start, skip) or not any(image.under(p, (start,)) for p in [*tree.files, *tree.symlinks]):
            raise RuneError(f"the trusted path '{start}' does not exist in the rootfs {rootfs} or holds no file")
    if tree.others:
        path = sorted(tree.others)[0]
        raise RuneError(f"the trusted tree holds {path}, which is not a regular file, directory or symlink; list it "
                        f"as an untrusted path or remove it from the image")
    image.check_hard_links(tree.files, "at signing")
    files = {p: image.hash_file(rootfs, p)[0] for p in sorted(tree.files)}
    for path, rel in programs.items():
        if rel not in files:
            raise RuneError(f"the entry point {path} resolves to {rel}, which is an untrusted path of the image")
    return EnclaveConfig(
        entrypoints=tuple(seen.values()), trusted_files=files, symlinks=tree.symlinks, trusted_roots=tuple(roots),
        untrusted_paths=skip, env=measured,
        untrusted_env=tuple(dict.fromkeys([*image.UNTRUSTED_ENV, *untrusted_env])),
        debug=debug, isv_prod_id=isv_prod_id, isv_svn=isv_svn)


def _abs(p: str, what: str) -> str:
    if not p.startswith("/"):
        raise RuneError(f"the {what} '{p}' must be absolute inside the rootfs")
    return os.path.normpath(p)


def _program(rootfs: str | os.PathLike[str], name: str, path_env: str, cwd: str, what: str) -> str:
    found = image.lookup_program(rootfs, name, path_env, cwd)
    if found is None or not image.resolve_in_rootfs(rootfs, found).is_file():
        raise RuneError(f"{what} '{name}' is not found in the rootfs (PATH {path_env})")
    return found


# ---- signing --------------------------------------------------------------------------------------------------


class _KeySigner:
    def __init__(self, key) -> None:  # noqa: ANN001 - rsa.RSAPrivateKey
        from inclavare.tee.sgx import sigstruct as ss

        ss._check_key(key.public_key())
        self.key = key
        self.modulus = key.public_key().public_numbers().n

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def key_signer(key: str | os.PathLike[str] | bytes | object) -> Signer:
    """A signer over a local RSA-3072 (e=3) key: a PEM file path, PEM bytes, or a cryptography private key."""
    from inclavare.tee.sgx import sigstruct as ss

    if isinstance(key, (str, os.PathLike)):
        try:
            pem = Path(key).read_bytes()
        except OSError as e:
            raise RuneError(f"the signing key {key} cannot be read: {e.strerror}") from None
        where = str(key)
    elif isinstance(key, bytes):
        pem, where = key, "given"
    else:
        return _KeySigner(key)
    try:
        return _KeySigner(ss.load_signing_key(pem))
    except (ValueError, TypeError) as e:
        raise RuneError(f"the signing key {where} is not usable: {e}") from None


class _CallbackSigner:
    def __init__(self, modulus: int, fn: Callable[[bytes], bytes]) -> None:
        self.modulus = modulus
        self.fn = fn

    def sign(self, data: bytes) -> bytes:
        return self.fn(data)


def callback_signer(public_key_pem: bytes, sign_pkcs1: Callable[[bytes], bytes]) -> Signer:
    """A signer whose private key is elsewhere: `sign_pkcs1(data)` returns the big-endian RSA-3072 PKCS#1 v1.5
    SHA-256 signature of data (e.g. from a signing server); `public_key_pem` is its public key (PEM, e=3)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from inclavare.tee.sgx import sigstruct as ss

    try:
        pub = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as e:
        raise RuneError(f"the signer's public key is not a PEM public key: {e}") from None
    if not isinstance(pub, rsa.RSAPublicKey):
        raise RuneError("the signer's public key is not an RSA key")
    try:
        ss._check_key(pub)
    except ss.SigstructError as e:
        raise RuneError(str(e)) from None
    return _CallbackSigner(pub.public_numbers().n, sign_pkcs1)


def sign(config: EnclaveConfig, signer: Signer, date: datetime.date | None = None) -> SignedEnclave:
    """Measure the manifest `config` and sign its SIGSTRUCT with `signer` (every attribute flag and MISCSELECT bit
    enforced, XFRM left to the host)."""
    from inclavare.tee.sgx import sigstruct as ss
    from inclavare.tee.sgx.attributes import Attributes

    mr_enclave, _size = image.measure_config(config)
    unsigned = ss.Sigstruct(
        date=ss.bcd_date(date or datetime.date.today()), misc_select=config.misc_select, misc_mask=0xFFFFFFFF,
        attributes=config.attributes.to_bytes(), attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0).to_bytes(),
        enclave_hash=mr_enclave, isv_prod_id=config.isv_prod_id, isv_svn=config.isv_svn)
    try:
        signed = ss.sign_with(unsigned, signer.modulus, signer.sign)
    except ss.SigstructError as e:
        raise RuneError(f"signing the enclave failed: {e}") from None
    doc = {"version": image.MANIFEST_VERSION,
           "note": "inclavare sim enclave (SIMULATED TEE); 'enclave' is measured, the rest is informational",
           "enclave": config.to_json(), "mr_enclave": mr_enclave.hex(), "mr_signer": signed.mr_signer.hex()}
    return SignedEnclave(config, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n", signed.to_bytes(),
                         mr_enclave, signed.mr_signer)


def write(signed: SignedEnclave, rootfs: str | os.PathLike[str]) -> Path:
    """Write manifest.json and sigstruct.bin into ROOTFS/.inclavare/enclave (atomically); the directory."""
    d = image.enclave_dir(rootfs)
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    if d.is_symlink() or not stat.S_ISDIR(os.lstat(d).st_mode):
        raise RuneError(f"{d} is not a directory")
    atomic_write(d / image.SIGSTRUCT, signed.sigstruct)
    atomic_write(d / image.MANIFEST, signed.manifest)
    return d


def sign_rootfs(rootfs: str | os.PathLike[str], config: EnclaveConfig, signer: Signer,
                date: datetime.date | None = None) -> SignedEnclave:
    signed = sign(config, signer, date)
    write(signed, rootfs)
    return signed


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
