"""epm's configuration file, TOML (.toml) or JSON (.json). Every key is optional; relative paths are relative to the
file.

    socket = "/run/epm/epm.sock"   # the Unix socket (made 0600, its directory 0700)
    cache_dir = "/var/lib/epm"   # one file per cache, under TYPE/ID.json
    max_entries = 10000            # caches held, all types; the oldest saved goes first
    max_bytes = 67108864           # the idle memory bound: the sum of the caches' sizes held (and on disk)
    max_entry_bytes = 1048576      # one SaveCache request line at most
    io_timeout = 5                 # seconds a client may take to send its request
    pool_runtimes = []             # PAL v3 libraries to keep pre-initialised enclaves for (pool.py)
    pool_size = 0                  # enclaves kept ready per runtime (0: no pool)
    enclave_size = 1048576         # bytes of one pooled enclave (a multiple of 4096)
    max_idle_bytes = 67108864      # pool_size x enclave_size x runtimes must stay within it
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from inclavare.errors import RuneError

DEFAULT_SOCKET = "/run/epm/epm.sock"
DEFAULT_CACHE_DIR = "/var/lib/epm"


class ConfigError(RuneError):
    pass


@dataclass
class Config:
    path: Path
    socket: Path
    cache_dir: Path
    max_entries: int = 10_000
    max_bytes: int = 64 << 20
    max_entry_bytes: int = 1 << 20
    io_timeout: float = 5.0
    pool_runtimes: tuple[Path, ...] = ()
    pool_size: int = 0
    enclave_size: int = 1 << 20
    max_idle_bytes: int = 64 << 20


_INTS = {"max_entries": (1, 10_000_000), "max_bytes": (1, 1 << 40), "max_entry_bytes": (256, 64 << 20),
         "pool_size": (0, 1024), "enclave_size": (8192, 1 << 30), "max_idle_bytes": (0, 1 << 40)}


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"the epm configuration {p} cannot be read: {e.strerror}") from None
    try:
        doc = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        kind = "JSON" if p.suffix == ".json" else "TOML"
        raise ConfigError(f"the epm configuration {p} is not valid {kind}: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"the epm configuration {p} must be an object (a table)")
    known = {"socket", "cache_dir", "io_timeout", "pool_runtimes", *_INTS}
    for k in doc:
        if k not in known:
            raise ConfigError(f"'{k}' in the epm configuration {p} is not a known key ({', '.join(sorted(known))})")
    base = p.parent

    def path_of(key: str, default: str) -> Path:
        v = doc.get(key, default)
        if not isinstance(v, str):
            raise ConfigError(f"'{key}' in the epm configuration {p} must be a string (a path), not {type(v).__name__}")
        if not v:
            raise ConfigError(f"'{key}' in the epm configuration {p} must be a non-empty path")
        return (base / v) if not v.startswith("/") else Path(v)

    c = Config(path=p, socket=path_of("socket", DEFAULT_SOCKET), cache_dir=path_of("cache_dir", DEFAULT_CACHE_DIR))
    for k, (lo, hi) in _INTS.items():
        if k in doc:
            v = doc[k]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"'{k}' in the epm configuration {p} must be an integer from {lo} to {hi}")
            setattr(c, k, v)
    if "io_timeout" in doc:
        v = doc["io_timeout"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v <= 600:
            raise ConfigError(f"'io_timeout' in the epm configuration {p} must be a number of seconds above 0 and at most 600")
        c.io_timeout = float(v)
    runtimes = doc.get("pool_runtimes", [])
    if not isinstance(runtimes, list) or not all(isinstance(r, str) and r for r in runtimes):
        raise ConfigError(f"'pool_runtimes' in the epm configuration {p} must be a list of PAL library paths")
    c.pool_runtimes = tuple((base / r) if not r.startswith("/") else Path(r) for r in runtimes)
    if c.enclave_size % 4096:
        raise ConfigError(f"'enclave_size' in the epm configuration {p} must be a multiple of 4096")
    idle = c.pool_size * c.enclave_size * len(c.pool_runtimes)
    if idle > c.max_idle_bytes:
        raise ConfigError(f"the epm pool would keep {idle} bytes idle (pool_size x enclave_size x pool_runtimes), "
                          f"more than max_idle_bytes ({c.max_idle_bytes}) in {p}; lower pool_size or enclave_size")
    if len(str(c.socket).encode()) > 107:
        raise ConfigError(f"'socket' in the epm configuration {p} is longer than a Unix socket path may be (107 bytes)")
    return c
