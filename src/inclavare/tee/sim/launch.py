"""Launch control for sim enclaves: EINIT's rules and the host launch policy.

`launch_check(rootfs)` is what the runtime calls at create, before anything of the payload runs. It refuses, with
one sentence each (RuneError):
  - a missing or unreadable signed enclave (ROOTFS/.inclavare/enclave/{manifest.json,sigstruct.bin});
  - a SIGSTRUCT whose RSA signature (or q1/q2) does not verify;
  - a manifest whose measurement differs from the SIGSTRUCT's enclave_hash (any change to the manifest);
  - a trusted file changed since signing (content, size, mode, owner, a hard link), added or removed under a trusted
    root, a symlink retargeted, added or removed: naming the file (untrusted paths and mount destinations aside);
  - SECS attributes / MISCSELECT that differ from the signed ones under ATTRIBUTEMASK / MISCMASK;
  - a signer (MRSIGNER) the host launch policy does not allow, or a DEBUG enclave when the policy forbids debug.

Host launch policy: the `policy` argument, else the JSON file $INCLAVARE_SIM_DIR/launch-policy.json (or
/var/lib/inclavare/sim/launch-policy.json) when it exists, else "any signer, debug allowed":
    {"allowed_mrsigners": ["<64 hex>", ...], "allow_debug": true}

`check_process(config, process, rootfs)` then applies the manifest to the process the engine asks for: argv[0] must
be an entry point (and the argv the fixed one, if fixed), every environment variable a measured default with its
value or an untrusted name; it returns the environment the payload gets (measured defaults first).
"""

from __future__ import annotations

import os
import stat

from inclavare.errors import RuneError
from inclavare.oci import jsonlite
from inclavare.tee import records
from inclavare.tee.sgx import sigstruct as ss_mod
from inclavare.tee.sgx.attributes import DEBUG, Attributes
from inclavare.tee.sgx.report import Report, TargetInfo
from inclavare.tee.sim import image
from inclavare.tee.sim.identity import EnclaveIdentity

POLICY_FILE = "launch-policy.json"


@records.record
class LaunchPolicy:
    allowed_mrsigners: frozenset[bytes] | None = None  # None: any signer
    allow_debug: bool = True
    source: str = "the default launch policy"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LaunchPolicy:
        try:
            with open(path, "rb") as f:
                obj = jsonlite.loads(f.read())
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
        from inclavare.tee.sim.platform import platform_path

        path = os.path.join(platform_path(sim_dir), POLICY_FILE)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return cls()  # none: any signer
        except OSError as e:  # never the default policy for one that cannot be seen (a user namespace's root)
            raise RuneError(f"the launch policy {path} cannot be read: {e.strerror}") from None
        return cls.load(path)


@records.record
class LaunchedEnclave:
    """An enclave that passed EINIT's rules: its identity and where it came from."""

    rootfs: str
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


HINT = "re-sign the image with 'sgx-tools sign-image' (or the bundle with 'sgx-tools sign-bundle')"


MAX_MANIFEST = 64 << 20  # bytes: a manifest of 200,000 trusted files is about 45 MB
MAX_SIGSTRUCT = 64 << 10


def signed_files(rootfs: str | os.PathLike[str]) -> tuple[str, str]:
    """The host paths of the signed image's manifest and SIGSTRUCT: their directory resolved inside the rootfs (a
    symlink on the way, /.inclavare or /.inclavare/enclave, leads to a path of the rootfs, never out of it), the
    files themselves never followed."""
    d = image.resolve_path(rootfs, "/" + image.ENCLAVE_DIR)
    return os.path.join(d, image.MANIFEST), os.path.join(d, image.SIGSTRUCT)


def _read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file `path` (not a symlink, FIFO, device or directory; at most `limit` bytes)."""
    try:
        fd = image.open_regular(path)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the file itself is a symlink
            raise RuneError(f"the signed sim enclave's {path} is a symlink, not the file sign-bundle writes; {HINT}") \
                from None
        raise
    if fd < 0:
        raise RuneError(f"the signed sim enclave's {path} is not a regular file; {HINT}")
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise RuneError(f"the signed sim enclave's {path} has {st.st_size} bytes, more than the {limit} a "
                            f"launch reads; {HINT}")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise RuneError(f"the signed sim enclave's {path} grew beyond {limit} bytes while it was read; {HINT}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_signed_image(rootfs: str | os.PathLike[str]) -> tuple[image.EnclaveConfig, ss_mod.Sigstruct, bytes]:
    """The signed image's configuration, its SIGSTRUCT, and the SHA-256 of the very manifest bytes the configuration
    was parsed from (the key of its measurement in the cache). The files are found inside the rootfs (signed_files)
    and read only if regular files of a bounded size."""
    from inclavare.tee.sha256 import sha256

    d = image.enclave_path(rootfs)
    hint = "sign the image with 'sgx-tools sign-image' or the bundle with 'sgx-tools sign-bundle --key KEY.pem BUNDLE'"
    try:
        manifest_path, sigstruct_path = signed_files(rootfs)
        data = _read_regular(manifest_path, MAX_MANIFEST)
        digest = sha256(data).digest()
        manifest = jsonlite.loads(data)
        raw = _read_regular(sigstruct_path, MAX_SIGSTRUCT)
    except FileNotFoundError as e:
        raise RuneError(f"the rootfs has no signed sim enclave ({e.filename} is missing); {hint}") from None
    except OSError as e:
        raise RuneError(f"the signed sim enclave in {d} cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise RuneError(f"the enclave manifest {manifest_path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != image.MANIFEST_VERSION:
        raise RuneError(f"the enclave manifest {manifest_path} is not a version {image.MANIFEST_VERSION} "
                        f"manifest; {HINT}")
    config = image.EnclaveConfig.from_json(manifest.get("enclave"), manifest_path)
    try:
        sig = ss_mod.Sigstruct.from_bytes(raw, strict=False)
    except ValueError as e:
        raise RuneError(f"the SIGSTRUCT {sigstruct_path} is malformed: {e}") from None
    return config, sig, digest


def _refuse(root: str, what: str, fix: str = "restore it or " + HINT) -> RuneError:
    return RuneError(f"the enclave in {root} does not match its signature: {what}; {fix}")


def check_files(root: str, config: image.EnclaveConfig, mounts: tuple[str, ...] = (),
                cache=None) -> None:  # noqa: ANN001 - MeasurementCache
    """Every trusted file as signed, and nothing added under the trusted roots (the untrusted paths and the mount
    destinations aside, whose trusted files are still checked one by one). With a measurement cache, an inode
    unchanged since the launch check last hashed it is not read again (inclavare.tee.sim.measure_cache)."""
    skip = set(config.untrusted_paths) | {os.path.normpath(m) for m in mounts}
    tree = image.walk_tree(root, config.trusted_roots, skip)
    found: dict[str, os.stat_result] = {}
    memo: dict[str, str] = {}
    walked = tree.files
    # the digests of the walked files whose inodes are unchanged since the launch check hashed them: the walk's
    # lstat of each very path (no symlink on the way, as the walk follows none), a regular file
    real_root = os.path.realpath(root)
    cached = cache.lookup_tree(real_root, walked) if cache is not None else {}
    for path, want in config.trusted_files.items():
        digest = cached.get(path)
        if digest is not None:
            st = walked[path]
            found[path] = st
            if (digest, st.st_size, st.st_mode, st.st_uid, st.st_gid) == want:
                continue
            _compare(root, path, image.TrustedFile(digest, st.st_size, st.st_mode, st.st_uid, st.st_gid), want)
        host = image.host_path(root, path, memo)
        if host != os.path.join(real_root, os.path.normpath("/" + path).lstrip("/")):
            # a directory on its way is a symlink now (signing records each file at its own path, through none),
            # which only a path outside the walk can hold (a mount destination, an untrusted path): it would be
            # checked, and read by the payload, wherever that symlink leads, e.g. a volume the mounts that hold
            # trusted paths (enclave.sim_runtime.seal_mounts) do not include, whose host source can still change
            raise _refuse(root, f"a directory of the trusted file {path} was replaced by a symlink since signing "
                                f"(it resolves to /{os.path.relpath(host, real_root)})")
        try:
            mode = os.lstat(host).st_mode
        except OSError:
            raise _refuse(root, f"the trusted file {path} was removed since signing") from None
        if not stat.S_ISREG(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "a special file"
            raise _refuse(root, f"the trusted file {path} was replaced by {kind} since signing")
        try:
            got, st = image.hash_file(root, path, cache, host)
        except RuneError as e:
            raise _refuse(root, str(e)) from None
        found[path] = st
        _compare(root, path, got, want)
    image.check_hard_links(found, "at launch")
    _check_tree(root, config, tree, skip)


def _compare(root: str, path: str, got: image.TrustedFile, want: image.TrustedFile) -> None:
    for prop, label in (("size", "size"), ("sha256", "content"), ("mode", "mode"), ("uid", "owner"),
                        ("gid", "group")):
        a, b = getattr(got, prop), getattr(want, prop)
        if a != b and prop in ("uid", "gid") and _unmapped(prop, a):
            what, ids = ("owner", "uid") if prop == "uid" else ("group", "gid")
            raise _refuse(root, f"the {what} of the trusted file {path} ({ids} {b} when signed) is not mapped in the "
                          f"container's user namespace (it shows as the overflow {ids} {a})",
                          f"map it in config.json linux.{ids}Mappings, or own the rootfs by the mapped range "
                          f"(as Podman chowns an image for --userns)")
        if a != b:
            shown = (f"{stat.filemode(b)} -> {stat.filemode(a)}" if prop == "mode" else
                     f"{b} -> {a}" if prop != "sha256" else "")
            raise _refuse(root, f"the {label} of the trusted file {path} changed since signing"
                          + (f" ({shown})" if shown else ""))


def _unmapped(prop: str, value: int) -> bool:
    """`value` is the kernel's overflow uid (gid) and this process is in a user namespace: an id not mapped in it."""
    try:
        with open(f"/proc/sys/kernel/overflow{prop}", "rb") as f:
            if int(f.read()) != value:
                return False
        with open(f"/proc/self/{prop}_map", "rb") as f:
            return f.read().split() != [b"0", b"0", b"4294967295"]
    except (OSError, ValueError):
        return False


def _check_tree(root: str, config: image.EnclaveConfig, tree: image.Tree, skip: set[str]) -> None:
    """Nothing added under the trusted roots, no symlink added, retargeted or removed."""
    for path in tree.files:
        if path not in config.trusted_files:
            start = next((r for r in config.trusted_roots if image.under(path, (r,))), "/")
            raise _refuse(root, f"the file {path} was added under the trusted path {start} since signing",
                          "remove it, mount it as a volume, or " + HINT)
    for path in tree.others:
        raise _refuse(root, f"the special file {path} was added since signing", "remove it or " + HINT)
    for path, target in tree.symlinks.items():
        if config.symlinks.get(path) != target:
            what = "retargeted" if path in config.symlinks else "added"
            raise _refuse(root, f"the symlink {path} -> {target} was {what} since signing")
    skipped = image.prefix_set(skip)
    for path in config.symlinks:
        if path not in tree.symlinks and not image._under_set(path, skipped):
            raise _refuse(root, f"the symlink {path} was removed since signing")


def launch_check(rootfs: str | os.PathLike[str], *, policy: LaunchPolicy | None = None, debug: bool | None = None,
                 sim_dir: str | os.PathLike[str] | None = None, mounts: tuple[str, ...] = (),
                 cache=None, signed: tuple | None = None) -> LaunchedEnclave:  # noqa: ANN001 - MeasurementCache
    """Apply EINIT's rules to the sim enclave signed into `rootfs`; return it, or raise RuneError (one sentence).

    `debug`: the SECS DEBUG bit the runtime asks for; None takes the signed configuration's.
    `policy`: the host launch policy; None reads it as LaunchPolicy.for_host(sim_dir).
    `mounts`: the container's mount destinations, outside the measurement (their trusted files are still checked;
    a container runtime makes the mounts that hold them private first: enclave.sim_runtime.seal_mounts).
    `cache`: a MeasurementCache (inclavare.tee.sim.measure_cache) for the trusted files' digests, or None.
    `signed`: what read_signed_image(rootfs) returned, when the caller read it already; None reads it here.
    """
    root = os.path.normpath(os.fspath(rootfs))
    config, sig, manifest_digest = signed if signed is not None else read_signed_image(root)
    where = os.path.join(image.enclave_path(root), image.SIGSTRUCT)
    try:
        mr_signer = ss_mod.verify(sig)
    except ss_mod.SigstructError as e:
        raise RuneError(f"the enclave SIGSTRUCT {where} is refused: {e}") from None
    if cache is not None:
        cache.select(manifest_digest.hex())  # this signed image's measurements only
    mr_enclave = cache.mr_enclave() if cache is not None else None  # the manifest's, when these bytes were measured
    if mr_enclave is None:
        mr_enclave, _size = image.measure_config(config)
        if cache is not None and mr_enclave == sig.enclave_hash:
            cache.set_mr_enclave(mr_enclave)
    if mr_enclave != sig.enclave_hash:
        raise _refuse(root, f"the enclave manifest {os.path.join(image.enclave_path(root), image.MANIFEST)} changed since signing "
                            f"(MRENCLAVE {mr_enclave.hex()} != enclave_hash {sig.enclave_hash.hex()})")
    check_files(root, config, mounts, cache)
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
        mr_enclave=mr_enclave, mr_signer=mr_signer, attributes=secs, misc_select=config.misc_select,
        isv_prod_id=sig.isv_prod_id, isv_svn=sig.isv_svn, isv_family_id=sig.isv_family_id,
        isv_ext_prod_id=sig.isvext_prod_id,
    )
    return LaunchedEnclave(root, config, sig, identity, None if sim_dir is None else str(sim_dir))


def check_env(config: image.EnclaveConfig, env: object, where: str = "process.env") -> list[str]:
    """The environment the payload gets under the manifest's policy (see inclavare.tee.sim.envpolicy)."""
    from inclavare.tee.sim import envpolicy

    return envpolicy.apply(config.env, config.untrusted_env, env, where)


def check_process(config: image.EnclaveConfig, process: object, rootfs: str | os.PathLike[str],
                  where: str = "config.json") -> list[str]:
    """Refuse (one sentence naming the argument or variable) a process the manifest does not allow; return the
    environment the payload gets (see check_env)."""
    proc = process if isinstance(process, dict) else {}
    args = proc.get("args")
    args = [a for a in args if isinstance(a, str)] if isinstance(args, (list, tuple)) else []
    env = check_env(config, proc.get("env"), f"process.env in {where}")
    if not args:
        raise RuneError(f"{where} has no process.args; the enclave's entry points are "
                        f"{', '.join(e.path for e in config.entrypoints)}")
    found = image.lookup_program(rootfs, args[0], config.path, proc.get("cwd") or "/")
    if found is None:
        raise RuneError(f'{where} process.args[0]: exec: "{args[0]}": executable file not found in $PATH of the '
                        f"container (the enclave's measured PATH {config.path})")
    program = image.canonical_program(rootfs, found)
    for ep in config.entrypoints:
        if image.canonical_program(rootfs, ep.path) != program:
            continue
        if ep.argv is not None:
            if len(args) != len(ep.argv):
                raise RuneError(f"the process.args in {where} have {len(args)} arguments, the enclave manifest fixes "
                                f"{len(ep.argv)} for {ep.path} ({list(ep.argv)!r}); drop the arguments")
            for i, (a, b) in enumerate(zip(args, ep.argv, strict=True)):
                if a != b:
                    raise RuneError(f"the argument process.args[{i}] {a!r} in {where} differs from the one the "
                                    f"enclave manifest fixes ({b!r}); drop the arguments")
        return env
    raise RuneError(f"the program {found} (process.args[0] {args[0]!r} in {where}) is not an entry point of the "
                    f"signed enclave (entry points: {', '.join(e.path for e in config.entrypoints)}); {HINT} and "
                    f"--entrypoint {found}")
