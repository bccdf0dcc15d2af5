"""epm's bundle caches: records by (type, id), kept in memory and, one file each, under cache_dir/TYPE/ID.json.

Bounded by max_entries and max_bytes (the sum of the records' serialized sizes): the oldest saved goes first.
A file that is corrupt, not a cache record, or filed under another type/id than its own is dropped at load (and
removed): the daemon never serves what it cannot read back exactly as it was saved.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}$")
MARKER = ".epm-cache"  # in cache_dir: epm made the directory or took it over empty; no other directory is used


class StoreError(ValueError):
    pass


def validate(cache: object) -> dict:
    if not isinstance(cache, dict):
        raise StoreError("'cache' must be an object")
    out: dict = {}
    for k in ("type", "id"):
        v = cache.get(k)
        if not isinstance(v, str) or not NAME.match(v):
            raise StoreError(f"'cache.{k}' must be 1-200 letters, digits or ._:+- (not starting with a mark)")
        out[k] = v
    for k in ("subtype", "parent"):
        v = cache.get(k, "")
        if not isinstance(v, str) or len(v) > 200:
            raise StoreError(f"'cache.{k}' must be a string of at most 200 characters")
        out[k] = v
    opts = cache.get("options", {})
    if not isinstance(opts, dict):
        raise StoreError("'cache.options' must be an object")
    out["options"] = opts
    extra = set(cache) - {"type", "id", "subtype", "parent", "options", "size", "created"}
    if extra:
        raise StoreError(f"'cache.{sorted(extra)[0]}' is not a field of a cache")
    return out


def claim(d: Path, dry: bool = False) -> None:
    """Make `d` epm's cache directory (0700, with MARKER), or StoreError when it is not epm's to take: a symlink, not
    a directory, or holding files while it has no MARKER and is not a 0700 directory of epm's user (an older epm's).
    epm drops the files it cannot read as records from its own directory: a cache_dir naming another (a typo, /etc)
    must not lose its files. `dry`: only say whether it could (epm --check)."""

    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (20, 40):  # O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR
            if os.path.islink(d):
                raise StoreError(f"{d} is a symlink; name the directory itself") from None
            raise StoreError(f"{d} is not a directory") from None
        if dry and e.errno == 2:
            return  # made at the start
        raise StoreError(f"{d} cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        try:
            os.stat(MARKER, dir_fd=fd, follow_symlinks=False)
            ours = True
        except FileNotFoundError:
            ours = False
        if not ours:
            if os.listdir(fd) and (st.st_uid != os.geteuid() or st.st_mode & 0o077):
                raise StoreError(f"{d} holds files that epm did not put there (no {MARKER} file in it); name a new or "
                                 f"empty directory")
            if not dry:
                os.close(os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd))
        if not dry:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


class Store:
    def __init__(self, directory: Path, max_entries: int, max_bytes: int) -> None:
        self.dir = directory
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, str], dict] = {}  # insertion order = age
        self.bytes = 0
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        claim(self.dir)
        self._load()

    def _file(self, typ: str, cid: str) -> Path:
        return self.dir / typ / f"{cid}.json"

    def _load(self) -> None:
        found = []
        for tdir in self.dir.iterdir():
            if not tdir.is_dir() or tdir.is_symlink():
                continue
            for f in tdir.glob("*.json"):
                try:
                    rec = json.loads(f.read_bytes())
                    clean = validate({k: v for k, v in rec.items() if k not in ("size", "created")})
                    if (clean["type"], clean["id"]) != (tdir.name, f.name[:-5]):
                        raise StoreError("filed under another name")
                    clean["created"] = float(rec["created"])
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    try:
                        f.unlink()
                    except OSError:
                        pass
                    continue
                found.append(clean)
        for rec in sorted(found, key=lambda r: r["created"]):
            self._insert(rec)

    def _size(self, rec: dict) -> int:
        return len(json.dumps(rec, separators=(",", ":")))

    def _insert(self, rec: dict) -> None:
        k = (rec["type"], rec["id"])
        if k in self.entries:
            self._drop(k, unlink=False)
        rec["size"] = self._size(rec)
        self.entries[k] = rec
        self.bytes += rec["size"]
        while self.entries and (len(self.entries) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self.entries)))

    def _drop(self, k: tuple[str, str], unlink: bool = True) -> dict | None:
        rec = self.entries.pop(k, None)
        if rec is not None:
            self.bytes -= rec["size"]
            if unlink:
                try:
                    self._file(*k).unlink()
                except OSError:
                    pass
        return rec

    def save(self, cache: object) -> dict:
        rec = validate(cache)
        rec["created"] = time.time()
        if self._size(rec) + 32 > self.max_bytes:
            raise StoreError(f"the cache is larger than max_bytes ({self.max_bytes})")
        with self.lock:
            tdir = self.dir / rec["type"]
            tdir.mkdir(exist_ok=True, mode=0o700)
            path = self._file(rec["type"], rec["id"])
            tmp = path.with_name(f".{path.name}.tmp{threading.get_ident()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(rec, f, separators=(",", ":"))
            os.replace(tmp, path)
            self._insert(rec)
            return dict(rec)

    def get(self, typ: str, cid: str) -> dict | None:
        with self.lock:
            rec = self.entries.get((typ, cid))
            return dict(rec) if rec is not None else None

    def pick(self, typ: str, subtype: str | None) -> dict | None:
        with self.lock:
            for k, rec in self.entries.items():
                if k[0] == typ and (subtype is None or rec["subtype"] == subtype):
                    return self._drop(k)
            return None

    def list(self, typ: str | None) -> list[dict]:
        with self.lock:
            return [dict(r) for k, r in self.entries.items() if typ is None or k[0] == typ]

    def delete(self, typ: str, cid: str) -> bool:
        with self.lock:
            return self._drop((typ, cid)) is not None
