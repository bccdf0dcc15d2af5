"""The sim enclave's bundle cache in epm: which inodes of a signed rootfs the launch check has measured, so that a
launch finds them unchanged without reading them again, and without the host's measurement cache (measure_cache).

One epm cache per (rootfs, signed enclave, enclave runtime): type `bundle-cache.sim`, id the SHA-256 of the rootfs
directory's st_dev:st_ino, the SIGSTRUCT's bytes and the enclave type and runtime path. Its options:

    {"format": 1,
     "binding": {"rootfs": "DEV:INO", "mrenclave": HEX, "mrsigner": HEX, "enclave": "TYPE:RUNTIME_PATH",
                 "manifest": HEX},   # the SHA-256 of the manifest bytes the launch read
     "manifest_measured": true,      # those bytes measured to mrenclave (as the host's cache keeps it)
     "keys": HEX}   # per trusted file, in the manifest's order: 32 hex digits, the first 16 bytes of the SHA-256
                    # of its measure_cache.key (device, st_ino, st_ctime_ns, size, mtime, mode, owner, links) when
                    # the launch check matched it with the manifest's digest; 32 zeros when not recorded

What the launch does with it, in the launch child (through the container's root, made private before the check
reads it): the record is used only when its binding is this launch's - the rootfs it opened, the SHA-256 of
the manifest bytes it read, the SIGSTRUCT's enclave_hash and MRSIGNER, this enclave type and runtime - and its key
list has one entry per trusted file. The digests it seeds are this launch's manifest's, never the record's: a
trusted file's digest is taken as the manifest's only when the file the launch finds has exactly the recorded key
(measure_cache's argument: the kernel moves ctime at every change of the inode, and another inode is another
st_dev/st_ino); any other file is hashed. As with the host's cache, manifest bytes that measured to the SIGSTRUCT's
enclave_hash at the launch that saved the record (the same SHA-256) are not measured again. The rest of the launch
check runs in full every time (the signature, every file's size, mode, owner and links, the tree, the process, the
policy): the record can only spare reading what has not changed since it was measured. A record that is malformed,
for another rootfs, manifest or enclave, or from an epm that is not root is not used (a debug line says why) and the
launch is cold: every file hashed, the record saved again.
"""

from __future__ import annotations

import os

from inclavare.tee.sha256 import sha256  # not hashlib's: a warm launch loads no OpenSSL for it
from inclavare.tee.sim.measure_cache import key, key_device, recordable, settle

TYPE = "bundle-cache.sim"
FORMAT = 2  # 1: keys recorded before measure_cache.recordable's rules (not trusted)
_NONE = "0" * 32
_NONE_RAW = bytes(16)


def _hkey(k: str) -> bytes:
    """16 bytes of the SHA-256 of a measure_cache.key (the record holds them in hex)."""
    return sha256(k.encode()).digest()[:16]


class Lookup:
    """What `rune create`'s init found in epm, in the host's namespaces, before the container's exist."""

    def __init__(self, session, cache_id: str, record: dict | None, enclave: str) -> None:  # noqa: ANN001
        self.session = session
        self.id = cache_id
        self.record = record
        self.enclave = enclave
        self.binding: dict | None = None  # this launch's, once the launch child has read the image through the sealed root


def lookup(session, rootfs: str, enclave_type: str, runtime_path: str) -> Lookup | None:  # noqa: ANN001
    """This rootfs's record from epm over `session` (an epm_client.Session); None when epm failed (a debug line
    says why: rune starts cold with the host's measurement cache)."""
    from inclavare.enclave import epm_client
    from inclavare.tee.sim.image import SIGSTRUCT, enclave_path

    enclave = f"{enclave_type}:{runtime_path}"
    try:
        st = os.stat(rootfs)
        with open(os.path.join(enclave_path(rootfs), SIGSTRUCT), "rb") as f:
            sig = f.read(4096)
    except OSError:
        return None  # the launch check says what is missing
    h = sha256(f"{TYPE}:{FORMAT}:{st.st_dev}:{st.st_ino}:{enclave}:".encode())
    h.update(sig)
    cache_id = h.hexdigest()
    try:
        rec = session.call({"op": "GetCache", "type": TYPE, "id": cache_id}).get("cache")
    except epm_client.EpmError as e:
        epm_client.debug(f"{e}: the enclave starts cold")
        return None
    if rec is None:
        epm_client.debug(f"epm has no bundle cache for this enclave ({TYPE} {cache_id[:16]}): cold start, "
                         "every trusted file measured")
    return Lookup(session, cache_id, rec if isinstance(rec, dict) else None, enclave)


class EpmMeasurements:
    """A measurement cache (the interface of measure_cache.MeasurementCache that image.hash_file uses) seeded from
    a verified epm record, recording the keys of the files this launch sees."""

    def __init__(self, seeded: dict[bytes, str], measured: bytes | None = None, host=None) -> None:  # noqa: ANN001
        self.seeded = seeded  # _hkey -> the manifest's digest of the file recorded with that key
        self.measured = measured  # the MRENCLAVE these very manifest bytes measured to at a launch before, if known
        self.seen: dict[str, str] = {}  # measure_cache.key -> digest this launch got for it (hashed or hit)
        self.hits = 0
        self._fs: dict = {}  # st_dev -> what measure_cache.key_device found of it
        # the host's measurement cache (measure_cache.MeasurementCache) for what the record does not hold: a new
        # container's rootfs (an engine's new overlay mount) has no record yet, but the host's cache keys the
        # layers' inodes that earlier containers measured
        self.host = host
        self.mountinfo = getattr(host, "mountinfo", None)  # the launch's mount table (measure_cache.key_device)

    def select(self, image: str) -> None:
        if self.host is not None:  # the record is this enclave's already (its binding); the host's cache is per image
            self.host.select(image)

    def mr_enclave(self) -> bytes | None:
        if self.measured is None and self.host is not None:
            self.measured = self.host.mr_enclave()
        return self.measured  # from a record bound to the SHA-256 of the manifest bytes this launch read

    def set_mr_enclave(self, mr: bytes) -> None:
        self.measured = mr
        if self.host is not None:
            self.host.set_mr_enclave(mr)

    def lookup(self, host: str, st: os.stat_result) -> str | None:
        """get() for a file known by its lstat through the container's root (launch.check_files)."""
        dev = key_device(self._fs, host, st, table=self.mountinfo)
        if dev is None:
            return None
        k = key(st, dev)  # as get(), inline: once per trusted file
        digest = self.seeded.get(sha256(k.encode()).digest()[:16])
        if digest is None and self.host is not None:
            digest = self.host.lookup(host, st)
        if digest is not None:
            self.hits += 1
            self.seen[k] = digest
        return digest

    def lookup_tree(self, root: str, files: dict[str, os.stat_result]) -> dict[str, str]:
        """lookup() of each file of a walk of the rootfs (MeasurementCache.lookup_tree): path -> digest, hits only."""
        out = {}
        for path, st in files.items():
            digest = self.lookup(root + path, st)
            if digest is not None:
                out[path] = digest
        return out

    def get(self, fd: int, st: os.stat_result, host: str) -> str | None:
        dev = key_device(self._fs, host, st, fd, self.mountinfo)
        if dev is None:
            return None
        k = key(st, dev)
        digest = self.seeded.get(_hkey(k))
        if digest is None and self.host is not None:
            digest = self.host.get(fd, st, host)
        if digest is not None:
            self.hits += 1
            self.seen[k] = digest
        return digest

    def settle(self, fd: int, host: str | None = None) -> int | None:
        return settle(fd, host)  # the record keeps what this launch saw, whether or not the host's cache is on

    def put(self, fd: int, before: os.stat_result, digest: str, host: str, since: int | None = None) -> None:
        if not recordable(before, since):  # the host cache's rules (measure_cache): only root can write it, settled
            return
        dev = key_device(self._fs, host, before, fd, self.mountinfo)
        if dev is None:
            return
        if key(os.fstat(fd), dev) == key(before, dev):  # unchanged while it was hashed
            self.seen[key(before, dev)] = digest
            if self.host is not None:
                self.host.put(fd, before, digest, host, since)

    def save(self) -> None:
        """The host's cache (what this launch hashed); epm's record is saved by `save` below, once the whole launch
        check has passed."""
        if self.host is not None:
            self.host.save()


def _binding(rootfs: str, signed: tuple, enclave: str) -> dict:
    """This launch's binding: the rootfs it opened, the SIGSTRUCT's enclave_hash (MRENCLAVE as signed; the
    launch check refuses a manifest that does not measure to it) and MRSIGNER, the enclave type and runtime."""
    _config, sig, manifest_digest = signed
    st = os.stat(rootfs)
    return {"rootfs": f"{st.st_dev}:{st.st_ino}", "mrenclave": sig.enclave_hash.hex(), "mrsigner": sig.mr_signer.hex(),
            "enclave": enclave, "manifest": manifest_digest.hex()}


def measurements(found: Lookup, rootfs: str, signed: tuple, host=None) -> EpmMeasurements:  # noqa: ANN001
    """The measurement cache for this launch: seeded from epm's record when it is this launch's, else empty; with
    `host` (the host's measure_cache.MeasurementCache) for what the record does not hold."""
    from inclavare.enclave import epm_client

    config, sig_hash = signed[0], signed[1].enclave_hash
    binding = _binding(rootfs, signed, found.enclave)
    found.binding = binding
    rec = found.record
    if rec is None:
        return EpmMeasurements({}, host=host)
    opts = rec.get("options")
    why = ""
    if not isinstance(opts, dict) or opts.get("format") != FORMAT or not isinstance(opts.get("keys"), str):
        why = "is malformed"
    elif opts.get("binding") != binding:
        why = "is for another rootfs, manifest, enclave or signer"
    else:
        keys = opts["keys"]
        files = list(config.trusted_files.values())
        if len(keys) != 32 * len(files) or keys.strip("0123456789abcdef"):
            why = "does not list the manifest's trusted files"
    if why:
        epm_client.debug(f"epm's bundle cache {found.id[:16]} {why}: not used, cold start, every trusted file "
                         "measured")
        found.record = None
        return EpmMeasurements({}, host=host)
    raw = bytes.fromhex(keys)
    seeded = {}
    for i, want in enumerate(files):
        hk = raw[16 * i:16 * i + 16]
        if hk != _NONE_RAW:
            seeded[hk] = want.sha256  # taken only for the very inode recorded, checked against the manifest as ever
    # the manifest bytes (their SHA-256 in the binding) measured to the SIGSTRUCT's enclave_hash at the launch that
    # saved the record: as the host's cache, not measured again
    measured = sig_hash if opts.get("manifest_measured") is True else None
    epm_client.debug(f"epm's bundle cache {found.id[:16]} is this enclave's: {len(seeded)} of {len(files)} "
                     "trusted files recorded")
    return EpmMeasurements(seeded, measured, host)


def save(found: Lookup, rootfs: str, signed: tuple, cache: EpmMeasurements) -> None:
    """After a launch check that passed: record the key of every trusted file it matched, when that differs from
    what epm holds (a cold start, or files changed since)."""
    from inclavare.enclave import epm_client
    from inclavare.tee.sim import image

    binding = found.binding
    if found.session is None or binding is None:
        return
    config = signed[0]
    measured = cache.measured is not None and cache.measured == signed[1].enclave_hash
    old = (found.record or {}).get("options") or {}
    if found.record is not None and cache.hits == len(config.trusted_files) and \
            old.get("manifest_measured") is measured:
        return  # every file as recorded: nothing new
    memo: dict[str, str] = {}
    parts = []
    for path, want in config.trusted_files.items():
        try:
            host = image.host_path(rootfs, path, memo)  # through the root the launch sealed
            st = os.lstat(host)
            dev = key_device(cache._fs, host, st, table=cache.mountinfo)
            k = key(st, dev) if dev is not None else ""
        except OSError:
            k = ""
        parts.append(_hkey(k).hex() if cache.seen.get(k) == want.sha256 else _NONE)
    keys = "".join(parts)
    if old.get("keys") == keys and old.get("binding") == binding and old.get("manifest_measured") is measured:
        return
    cache_rec = {"type": TYPE, "id": found.id, "subtype": "measurements",
                 "options": {"format": FORMAT, "binding": binding, "keys": keys, "manifest_measured": measured}}
    try:
        found.session.call({"op": "SaveCache", "cache": cache_rec})
    except epm_client.EpmError as e:
        epm_client.debug(f"the bundle cache was not saved to epm: {e}")
        return
    epm_client.debug(f"saved the bundle cache {found.id[:16]} to epm ({len(parts) - parts.count(_NONE)} of "
                     f"{len(parts)} trusted files)")
