"""Launch control for sim enclaves: EINIT's rules and the host launch policy.

`launch_check(rootfs)` is what the runtime calls at create, before anything of the payload runs. It refuses, with
one sentence each (RuneError):
  - a missing or unreadable signed enclave (ROOTFS/.inclavare/enclave/{manifest.json,sigstruct.bin});
  - a SIGSTRUCT whose RSA signature (or q1/q2) does not verify;
  - an image whose measurement differs from the SIGSTRUCT's enclave_hash (any changed byte of the entry, of a
    trusted file or of the enclave configuration), naming the changed file when it can;
  - SECS attributes / MISCSELECT that differ from the signed ones under ATTRIBUTEMASK / MISCMASK;
  - a signer (MRSIGNER) the host launch policy does not allow, or a DEBUG enclave when the policy forbids debug.

Host launch policy: the `policy` argument, else the JSON file $INCLAVARE_SIM_DIR/launch-policy.json (or
/var/lib/inclavare/sim/launch-policy.json) when it exists, else "any signer, debug allowed":
    {"allowed_mrsigners": ["<64 hex>", ...], "allow_debug": true}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from inclavare.errors import RuneError
from inclavare.tee.sgx import sigstruct as ss_mod
from inclavare.tee.sgx.attributes import DEBUG, Attributes
from inclavare.tee.sgx.report import Report, TargetInfo
from inclavare.tee.sim import image
from inclavare.tee.sim.identity import EnclaveIdentity

POLICY_FILE = "launch-policy.json"


@dataclass(frozen=True)
class LaunchPolicy:
    allowed_mrsigners: frozenset[bytes] | None = None  # None: any signer
    allow_debug: bool = True
    source: str = "the default launch policy"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LaunchPolicy:
        try:
            obj = json.loads(Path(path).read_text())
        except OSError as e:
            raise RuneError(f"the launch policy {path} cannot be read: {e.strerror}") from None
        except ValueError as e:
            raise RuneError(f"the launch policy {path} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise RuneError(f"the launch policy {path} must be a JSON object")
        signers = obj.get("allowed_mrsigners")
        if signers is not None and (not isinstance(signers, list) or not all(
                isinstance(s, str) and len(s) == 64 for s in signers)):
            raise RuneError(f"'allowed_mrsigners' in the launch policy {path} must be a list of 64-digit hex MRSIGNERs")
        try:
            allowed = None if signers is None else frozenset(bytes.fromhex(s) for s in signers)
        except ValueError:
            raise RuneError(f"'allowed_mrsigners' in the launch policy {path} holds a value that is not hex") from None
        allow_debug = obj.get("allow_debug", True)
        if not isinstance(allow_debug, bool):
            raise RuneError(f"'allow_debug' in the launch policy {path} must be true or false")
        return cls(allowed, allow_debug, f"the launch policy {path}")

    @classmethod
    def for_host(cls, sim_dir: str | os.PathLike[str] | None = None) -> LaunchPolicy:
        from inclavare.tee.sim.platform import platform_dir

        path = platform_dir(sim_dir) / POLICY_FILE
        return cls.load(path) if path.exists() else cls()


@dataclass(frozen=True)
class LaunchedEnclave:
    """An enclave that passed EINIT's rules: its identity and where it came from."""

    rootfs: Path
    config: image.EnclaveConfig
    sigstruct: ss_mod.Sigstruct
    identity: EnclaveIdentity
    sim_dir: str | None = None

    @property
    def mr_enclave(self) -> bytes:
        return self.identity.mr_enclave

    @property
    def mr_signer(self) -> bytes:
        return self.identity.mr_signer

    def _platform(self):  # noqa: ANN202 - Platform, imported lazily
        from inclavare.tee.sim.platform import load_platform

        return load_platform(self.sim_dir)

    def ereport(self, target: TargetInfo, report_data: bytes = b"") -> Report:
        from inclavare.tee.sim.ereport import ereport

        return ereport(self._platform(), self.identity, target, report_data)

    def quote(self, report_data: bytes = b"") -> bytes:
        """A sim quote v3 of this enclave over `report_data` (<= 64 bytes)."""
        from inclavare.tee.sim import qe

        platform = self._platform()
        from inclavare.tee.sim.ereport import ereport

        return qe.gen_quote(platform, ereport(platform, self.identity, qe.qe_target_info(), report_data))

    def seal_key(self, policy: str = "mrenclave", key_id: bytes = bytes(32)) -> bytes:
        from inclavare.tee.sim.ereport import seal_key

        return seal_key(self._platform(), self.identity, policy, key_id)


def read_signed_image(rootfs: str | os.PathLike[str]) -> tuple[image.EnclaveConfig, ss_mod.Sigstruct, dict]:
    d = image.enclave_dir(rootfs)
    hint = "sign the bundle with 'sgx-tools sign-bundle --key KEY.pem BUNDLE'"
    try:
        manifest = json.loads((d / image.MANIFEST).read_text())
        raw = (d / image.SIGSTRUCT).read_bytes()
    except FileNotFoundError as e:
        raise RuneError(f"the rootfs has no signed sim enclave ({e.filename} is missing); {hint}") from None
    except OSError as e:
        raise RuneError(f"the signed sim enclave in {d} cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise RuneError(f"the enclave manifest {d / image.MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != image.MANIFEST_VERSION:
        raise RuneError(f"the enclave manifest {d / image.MANIFEST} is not a version {image.MANIFEST_VERSION} manifest")
    config = image.EnclaveConfig.from_json(manifest.get("enclave"), str(d / image.MANIFEST))
    try:
        sig = ss_mod.Sigstruct.from_bytes(raw, strict=False)
    except ValueError as e:
        raise RuneError(f"the SIGSTRUCT {d / image.SIGSTRUCT} is malformed: {e}") from None
    return config, sig, manifest


def _check_tree(root: Path, config: image.EnclaveConfig) -> None:
    """The trusted roots hold what was signed: the same symlinks with the same targets, no file added (images
    signed before the signed configuration recorded its tree are not checked here)."""
    roots = config.extra.get("trusted_roots")
    signed_links = config.extra.get("symlinks")
    if not isinstance(roots, list) or not isinstance(signed_links, dict):
        return
    from inclavare.tee.sim.bundle import walk_tree

    signed_files = set(config.trusted_files) | {config.entry}
    for start in roots:
        files, links = walk_tree(root, start)
        for path in files:
            if path not in signed_files:
                raise RuneError(f"the enclave in {root} does not match its signature: the file {path} was added under "
                                f"the trusted path {start} since signing; remove it or re-sign the bundle")
        for path, target in links.items():
            if signed_links.get(path) != target:
                what = "retargeted" if path in signed_links else "added"
                raise RuneError(f"the enclave in {root} does not match its signature: the symlink {path} -> {target} "
                                f"was {what} since signing; restore it or re-sign the bundle")
    for path in signed_links:
        if not os.path.lexists(str(root) + path):
            raise RuneError(f"the enclave in {root} does not match its signature: the symlink {path} was removed "
                            f"since signing; restore it or re-sign the bundle")


def launch_check(rootfs: str | os.PathLike[str], *, policy: LaunchPolicy | None = None, debug: bool | None = None,
                 sim_dir: str | os.PathLike[str] | None = None) -> LaunchedEnclave:
    """Apply EINIT's rules to the sim enclave signed into `rootfs`; return it, or raise RuneError (one sentence).

    `debug`: the SECS DEBUG bit the runtime asks for; None takes the signed configuration's.
    `policy`: the host launch policy; None reads it as LaunchPolicy.for_host(sim_dir).
    """
    root = Path(rootfs)
    config, sig, manifest = read_signed_image(root)
    where = image.enclave_dir(root) / image.SIGSTRUCT
    try:
        mr_signer = ss_mod.verify(sig)
    except ss_mod.SigstructError as e:
        raise RuneError(f"the enclave SIGSTRUCT {where} is refused: {e}") from None
    measured = image.measure_image(root, config)
    if measured.mr_enclave != sig.enclave_hash:
        digests = manifest.get("digests") if isinstance(manifest, dict) else None
        digests = digests if isinstance(digests, dict) else {}
        changed = [p for p, h in measured.digests.items() if digests.get(p) not in (None, h)]
        what = (f"the {'entry binary' if changed[0] == config.entry else 'trusted file'} {changed[0]} changed"
                if changed else "a trusted file, the entry binary or the enclave configuration changed")
        raise RuneError(
            f"the enclave in {root} does not match its signature: {what} since signing "
            f"(MRENCLAVE {measured.mr_enclave.hex()} != enclave_hash {sig.enclave_hash.hex()}); re-sign the bundle "
            f"or restore the file"
        )
    _check_tree(root, config)
    secs = config.attributes
    if debug is not None:
        secs = Attributes(secs.flags | DEBUG if debug else secs.flags & ~DEBUG, secs.xfrm)
    mask = Attributes.from_bytes(sig.attribute_mask)
    signed = Attributes.from_bytes(sig.attributes)
    if secs & mask != signed & mask:
        raise RuneError(
            f"the enclave attributes {secs.describe()} violate the SIGSTRUCT's (signed {signed.describe()}, "
            f"mask {mask.describe()}); launch it with the attributes it was signed for"
        )
    if config.misc_select & sig.misc_mask != sig.misc_select & sig.misc_mask:
        raise RuneError(f"the enclave MISCSELECT 0x{config.misc_select:x} violates the SIGSTRUCT's under its MISCMASK")
    pol = policy if policy is not None else LaunchPolicy.for_host(sim_dir)
    if pol.allowed_mrsigners is not None and mr_signer not in pol.allowed_mrsigners:
        raise RuneError(f"the enclave signer (MRSIGNER {mr_signer.hex()}) is not allowed by {pol.source}")
    if secs.flags & DEBUG and not pol.allow_debug:
        raise RuneError(f"debug enclaves are not allowed by {pol.source}; sign the enclave without --debug")
    identity = EnclaveIdentity(
        mr_enclave=measured.mr_enclave, mr_signer=mr_signer, attributes=secs, misc_select=config.misc_select,
        isv_prod_id=sig.isv_prod_id, isv_svn=sig.isv_svn, isv_family_id=sig.isv_family_id,
        isv_ext_prod_id=sig.isvext_prod_id,
    )
    return LaunchedEnclave(root, config, sig, identity, None if sim_dir is None else str(sim_dir))


def check_process(config: image.EnclaveConfig, process: object, where: str = "config.json") -> None:
    """Refuse (one sentence) a process whose args or env (minus ENCLAVE_*) differ from those signed into `config`."""
    from inclavare.tee.sim.bundle import payload_env

    proc = process if isinstance(process, dict) else {}
    args = proc.get("args")
    args = list(args) if isinstance(args, (list, tuple)) else []
    if config.argv is not None and args != list(config.argv):
        raise RuneError(f"the process.args in {where} differ from the ones the enclave was signed with "
                        f"({list(config.argv)!r}); re-sign the bundle with sgx-tools sign-bundle")
    if config.env is not None and payload_env(proc.get("env")) != list(config.env):
        raise RuneError(f"the process.env in {where} differs (ENCLAVE_* aside) from the one the enclave was signed "
                        f"with; re-sign the bundle with sgx-tools sign-bundle")
