"""Sim enclave images: what a sim enclave measures, and in which order.

An image is declared by its manifest, ROOTFS/.inclavare/enclave/manifest.json, whose "enclave" object is the enclave
configuration (entry, trusted_files, debug, isv_prod_id, isv_svn, misc_select, xfrm, ssa_frame_size, and argv / env:
the payload's process.args and process.env minus the ENCLAVE_* variables, which the launch check compares with
config.json). The signed
SIGSTRUCT lies next to it as sigstruct.bin. Other manifest keys ("digests", "mr_enclave", "mr_signer") are
informational: they help name what changed, and are never trusted.

Measurement order (the SGX primitive of inclavare.tee.sgx.measure, every page fully EEXTENDed):
  1. ECREATE with the configured SSA frame size and the enclave size: the smallest power of two (>= one page)
     that holds every page below;
  2. the configuration: canonical JSON of the "enclave" object (sorted keys, no spaces, ASCII), zero-padded to
     pages, from offset 0, SECINFO REG|R;
  3. the entry binary, then each trusted file in sorted path order; for each file, at the next page:
       a header page, canonical JSON {"path": PATH, "role": "entry"|"trusted", "size": N}, SECINFO REG|R,
       then the file's bytes zero-padded to pages, SECINFO REG|R|X for the entry and REG|R for trusted files.
Paths are absolute paths inside the rootfs; symlinks are resolved inside the rootfs, never outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inclavare.errors import RuneError
from inclavare.tee.sgx import attributes as attr
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sgx.measure import PAGE_SIZE, SECINFO_R, SECINFO_REG, SECINFO_X, Measurement

ENCLAVE_DIR = ".inclavare/enclave"  # inside the rootfs
MANIFEST = "manifest.json"
SIGSTRUCT = "sigstruct.bin"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class EnclaveConfig:
    entry: str
    trusted_files: tuple[str, ...] = ()
    debug: bool = False
    isv_prod_id: int = 0
    isv_svn: int = 0
    misc_select: int = 0
    xfrm: int = attr.XFRM_LEGACY
    ssa_frame_size: int = 1
    extra: dict[str, object] = field(default_factory=dict)
    argv: tuple[str, ...] | None = None  # the payload's process.args, measured (None: an image signed without)
    env: tuple[str, ...] | None = None  # the payload's process.env minus ENCLAVE_*, measured

    def __post_init__(self) -> None:
        if not self.entry.startswith("/"):
            raise RuneError(f"the enclave entry '{self.entry}' must be an absolute path inside the rootfs")
        for p in self.trusted_files:
            if not p.startswith("/"):
                raise RuneError(f"the trusted file '{p}' must be an absolute path inside the rootfs")
        object.__setattr__(self, "trusted_files", tuple(sorted(set(self.trusted_files) - {self.entry})))
        for name, bits in (("isv_prod_id", 16), ("isv_svn", 16), ("misc_select", 32), ("xfrm", 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << bits:
                raise RuneError(f"the enclave setting '{name}' must be an integer in [0, 2**{bits})")
        if not isinstance(self.ssa_frame_size, int) or not 1 <= self.ssa_frame_size <= 16:
            raise RuneError("the enclave setting 'ssa_frame_size' must be an integer from 1 to 16")
        if not isinstance(self.debug, bool):
            raise RuneError("the enclave setting 'debug' must be true or false")
        for name in ("argv", "env"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, (list, tuple)) or not all(isinstance(a, str) for a in v):
                    raise RuneError(f"the enclave setting '{name}' must be a list of strings")
                object.__setattr__(self, name, tuple(v))

    @property
    def attributes(self) -> Attributes:
        return Attributes(attr.MODE64BIT | (attr.DEBUG if self.debug else 0), self.xfrm)

    def to_json(self) -> dict[str, object]:
        obj: dict[str, object] = {
            **self.extra, "entry": self.entry, "trusted_files": list(self.trusted_files), "debug": self.debug,
            "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn, "misc_select": self.misc_select,
            "xfrm": self.xfrm, "ssa_frame_size": self.ssa_frame_size}
        if self.argv is not None:
            obj["argv"] = list(self.argv)
        if self.env is not None:
            obj["env"] = list(self.env)
        return obj

    @classmethod
    def from_json(cls, obj: object, where: str = "the enclave manifest") -> EnclaveConfig:
        if not isinstance(obj, dict):
            raise RuneError(f"'enclave' in {where} must be an object")
        known = {"entry", "trusted_files", "debug", "isv_prod_id", "isv_svn", "misc_select", "xfrm", "ssa_frame_size",
                 "argv", "env"}
        if not isinstance(obj.get("entry"), str):
            raise RuneError(f"'enclave.entry' in {where} must be a path string")
        files = obj.get("trusted_files", [])
        if not isinstance(files, list) or not all(isinstance(p, str) for p in files):
            raise RuneError(f"'enclave.trusted_files' in {where} must be a list of paths")
        args = {k: obj[k] for k in known - {"trusted_files"} if k in obj}
        return cls(trusted_files=tuple(files), extra={k: v for k, v in obj.items() if k not in known}, **args)


def resolve_in_rootfs(rootfs: str | os.PathLike[str], path: str) -> Path:
    """The host path of `path` inside `rootfs`, resolving symlinks as if rootfs were / (no escape)."""
    root = os.path.realpath(rootfs)
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        if os.path.islink(here):
            links += 1
            if links > 40:
                raise RuneError(f"too many symbolic links resolving '{path}' in the rootfs")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return Path(root, *done)


def _open_regular(rootfs: str | os.PathLike[str], path: str, role: str) -> tuple[int, int]:
    host = resolve_in_rootfs(rootfs, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RuneError(f"the enclave {role} '{path}' cannot be opened in the rootfs: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise RuneError(f"the enclave {role} '{path}' is not a regular file")
    if st.st_nlink > 1:
        os.close(fd)
        raise RuneError(f"the enclave {role} '{path}' has {st.st_nlink} hard links (another name could change it); "
                        f"copy it so that it has one")
    return fd, st.st_size


def _pages_of(fd: int, size: int, path: str) -> Iterator[bytes]:
    left = size
    while left > 0:
        buf = os.read(fd, min(_CHUNK, left))
        if not buf:
            break
        left -= len(buf)
        yield buf
    if left or os.read(fd, 1):
        raise RuneError(f"the trusted file '{path}' changed size while it was being measured")


@dataclass(frozen=True)
class Measured:
    mr_enclave: bytes
    enclave_size: int
    digests: dict[str, str]  # path -> SHA-256 hex of the file's bytes


def measure_image(rootfs: str | os.PathLike[str], config: EnclaveConfig) -> Measured:
    """MRENCLAVE of the sim enclave `config` describes, over the files in `rootfs` (order: module docstring)."""
    cfg = canonical_json(config.to_json())
    files = [(config.entry, "entry")] + [(p, "trusted") for p in config.trusted_files]
    opened: list[tuple[str, str, int, int]] = []
    try:
        for path, role in files:
            fd, size = _open_regular(rootfs, path, "entry binary" if role == "entry" else "trusted file")
            opened.append((path, role, fd, size))
        pages = -(-len(cfg) // PAGE_SIZE) + sum(1 + -(-size // PAGE_SIZE) for _, _, _, size in opened)
        enclave_size = PAGE_SIZE
        while enclave_size < pages * PAGE_SIZE:
            enclave_size *= 2
        m = Measurement()
        m.ecreate(config.ssa_frame_size, enclave_size)
        offset = m.add_pages(0, cfg, SECINFO_REG | SECINFO_R)
        digests: dict[str, str] = {}
        for path, role, fd, size in opened:
            header = canonical_json({"path": path, "role": role, "size": size})
            offset = m.add_pages(offset, header, SECINFO_REG | SECINFO_R)
            flags = SECINFO_REG | SECINFO_R | (SECINFO_X if role == "entry" else 0)
            h = hashlib.sha256()
            pending = b""
            for buf in _pages_of(fd, size, path):
                h.update(buf)
                pending += buf
                whole = len(pending) - len(pending) % PAGE_SIZE
                if whole:
                    offset = m.add_pages(offset, pending[:whole], flags)
                    pending = pending[whole:]
            if pending:
                offset = m.add_pages(offset, pending, flags)
            digests[path] = h.hexdigest()
        return Measured(m.digest(), enclave_size, digests)
    finally:
        for _, _, fd, _ in opened:
            os.close(fd)


def enclave_dir(rootfs: str | os.PathLike[str]) -> Path:
    return Path(rootfs) / ENCLAVE_DIR
