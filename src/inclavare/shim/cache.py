"""The conversion cache: a signed manifest and SIGSTRUCT per (rootfs, conversion inputs, signer), so that the next
container of the same image skips the measurement and the signature.

The key is a SHA-256 over the conversion model's version, the rootfs' identity, the inputs the signed manifest is
made of (the entry point process.args[0] and cwd, process.env minus ENCLAVE_* and the engine's per-container names,
the enclave.* annotations, the mount destinations, which are left out of the measurement, the debug setting) and
the signer (the key file's identity or the server address).
The rootfs' identity: for an overlay of containerd's snapshots, the lower directories (committed snapshots, which
containerd never changes) by path, inode and change time, and the upper directory's tree; otherwise the whole tree.
A tree is fingerprinted by every entry's path, type, size, inode and modification time (lstat, no file is read), minus
the directories no enclave measures (/proc, /sys, /dev, /tmp, /run, /var/tmp, /var/run).

A hit is only a shortcut: rune's launch check measures the files at every create, so a file changed in place since
(even with its size and time restored) is still refused. Entries live in DIR/<key>/, written to a temporary
directory and renamed; the least recently used beyond max_entries are removed.
"""

from __future__ import annotations

import _sha256
import os
import stat
import time

from inclavare.oci import jsonlite
from inclavare.shim import api

MODEL = "sim-manifest-2"  # the signing model the cached artefacts were made with (convert_worker.MODEL)
UNTRUSTED_ENV = ("HOSTNAME", "TERM", "HOME", "container")  # tee.sim.image.UNTRUSTED_ENV, left out of the manifest
SKIP = ("proc", "sys", "dev", "tmp", "run", "var/tmp", "var/run")
FILES = ("manifest.json", "sigstruct.bin", "meta.json")


def _rmtree(path: str) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            try:
                os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def fingerprint(root: str, h, skip: tuple[str, ...] = SKIP) -> None:  # noqa: ANN001 - a _sha256 object
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel) if rel else root), key=lambda e: e.name)
        except OSError as e:
            h.update(f"{rel}\0error {e.errno}\n".encode())
            continue
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            if path in skip:
                continue
            st = e.stat(follow_symlinks=False)
            h.update(f"{path}\0{st.st_mode:o} {st.st_size} {st.st_ino} {st.st_mtime_ns} {st.st_nlink}\n".encode(
                errors="surrogateescape"))
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)


def _overlay(mounts: list[api.Mount]) -> tuple[list[str], str] | None:
    if len(mounts) != 1 or mounts[0].type != "overlay":
        return None
    lower: list[str] = []
    upper = ""
    for o in mounts[0].options:
        if o.startswith("lowerdir="):
            lower = o[9:].split(":")
        elif o.startswith("upperdir="):
            upper = o[9:]
    return (lower, upper) if lower else None


def rootfs_identity(rootfs: str, mounts: list[api.Mount], h) -> None:  # noqa: ANN001
    ov = _overlay(mounts)
    if ov is None:
        h.update(b"tree\0")
        fingerprint(rootfs, h)
        return
    lower, upper = ov
    for d in lower:
        st = os.stat(d)
        h.update(f"lower\0{d}\0{st.st_ino} {st.st_ctime_ns}\n".encode())
    if upper:
        h.update(b"upper\0")
        fingerprint(upper, h)


def key(rootfs: str, spec: dict, mounts: list[api.Mount], signer: dict, debug: bool) -> str:
    h = _sha256.sha256(f"inclavare-shim-conversion\0{MODEL}\0".encode())
    rootfs_identity(rootfs, mounts, h)
    process = spec.get("process") or {}
    env = [e for e in process.get("env") or () if isinstance(e, str) and not e.startswith("ENCLAVE_")
           and e.partition("=")[0] not in UNTRUSTED_ENV]
    args = process.get("args") or [""]
    inputs = {
        "entry": args[0] if isinstance(args, list) and args else "", "cwd": process.get("cwd") or "/", "env": env,
        "annotations": {k: v for k, v in sorted((spec.get("annotations") or {}).items()) if k.startswith("enclave.")},
        "mounts": sorted({str(m.get("destination", "")) for m in spec.get("mounts") or () if isinstance(m, dict)}),
        "debug": debug, "signer": signer.get("id") or signer.get("address", ""),
    }
    h.update(jsonlite.dumps(inputs).encode())
    return h.hexdigest()


class Cache:
    def __init__(self, directory: str, max_entries: int) -> None:
        self.dir = directory
        self.max_entries = max(1, max_entries)

    def get(self, k: str) -> tuple[bytes, bytes, dict] | None:
        d = os.path.join(self.dir, k)
        try:
            data = []
            for name in FILES:
                with open(os.path.join(d, name), "rb") as f:
                    data.append(f.read())
            meta = jsonlite.loads(data[2])
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or "mr_enclave" not in meta or "mr_signer" not in meta:
            return None
        try:
            os.utime(d)  # most recently used
        except OSError:
            pass
        return data[0], data[1], meta

    def put(self, k: str, manifest: bytes, sigstruct: bytes, meta: dict) -> None:
        os.makedirs(self.dir, 0o700, exist_ok=True)
        tmp = os.path.join(self.dir, f".{k}.{os.getpid()}")
        _rmtree(tmp)
        os.mkdir(tmp, 0o700)
        stamp = dict(meta, created=time.time())
        for name, data in zip(FILES, (manifest, sigstruct, jsonlite.dumps(stamp).encode()), strict=True):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        try:
            os.rename(tmp, os.path.join(self.dir, k))
        except OSError:  # another shim stored the same entry first
            _rmtree(tmp)
        self._evict()

    def _evict(self) -> None:
        try:
            entries = [e for e in os.scandir(self.dir) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return
        if len(entries) <= self.max_entries:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for e in entries[:len(entries) - self.max_entries]:
            _rmtree(e.path)
