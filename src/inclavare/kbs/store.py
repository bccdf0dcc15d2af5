"""Secrets and policies at rest: one record file each under STATE_DIR/records, AES-256-GCM with the key file's
key (a random 96-bit nonce per write; the associated data names the record's kind and name, so a record renamed
or moved to another kind does not decrypt). Changes are atomic: write a temporary file (O_EXCL, 0600), fsync,
rename over the record, fsync the directory; a verdictd killed at any point leaves the old record or the new one,
never half of one. Left-over temporary files are removed at load.

Records: "secret" PATH (REPO/TYPE/TAG) -> {"value": base64, "policy": NAME, "updated": unix time};
"policy" NAME -> {"rego": module text or null (the default module), "reference": {...}, "updated"};
"key" NAME -> {"pem": private key PEM} (verdictd's token signing key and TLS key).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inclavare.errors import RuneError

MAGIC = b"VDS1"
KINDS = ("secret", "policy", "key")
SEGMENT = re.compile(r"^[A-Za-z0-9_.+=-]{1,128}$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class StoreError(RuneError):
    pass


def check_path(path: str) -> str:
    """A resource path REPO/TYPE/TAG of three safe segments, as the KBS protocol names resources."""
    parts = path.split("/")
    if len(parts) != 3 or not all(SEGMENT.match(p) and p not in (".", "..") for p in parts):
        raise StoreError(f"resource path {path!r} must be REPO/TYPE/TAG, each segment 1-128 of A-Z a-z 0-9 _ . + = -")
    return path


def check_name(name: str) -> str:
    if not NAME.match(name) or name in (".", ".."):
        raise StoreError(f"policy name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return name


def load_key(path: Path, create: bool = True) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise StoreError(f"the key file {path} does not exist") from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_key(path, create=False)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key
    except OSError as e:
        raise StoreError(f"cannot read the key file {path}: {e.strerror}") from None
    text = data.strip()
    if len(data) == 32:
        return data
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode())
        except ValueError:
            pass
    raise StoreError(f"the key file {path} must hold 32 bytes (raw, or 64 hex digits)")


class Store:
    def __init__(self, directory: Path, key: bytes) -> None:
        self.dir = Path(directory) / "records"
        self.aead = AESGCM(key)
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def _file(self, kind: str, name: str) -> Path:
        return self.dir / f"{kind}.{urllib.parse.quote(name, safe='')}.rec"

    def _aad(self, kind: str, name: str) -> bytes:
        return b"verdictd-store-v1\0" + kind.encode() + b"\0" + name.encode()

    def load(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir.parent, 0o700)
        os.chmod(self.dir, 0o700)
        records: dict[tuple[str, str], dict[str, Any]] = {}
        for f in sorted(self.dir.iterdir()):
            if f.name.startswith(".tmp-"):
                f.unlink(missing_ok=True)  # a write that was killed before its rename
                continue
            kind, _, rest = f.name.partition(".")
            if kind not in KINDS or not rest.endswith(".rec"):
                continue
            name = urllib.parse.unquote(rest[:-4])
            data = f.read_bytes()
            try:
                if data[:4] != MAGIC:
                    raise InvalidTag
                obj = json.loads(self.aead.decrypt(data[4:16], data[16:], self._aad(kind, name)))
            except (InvalidTag, ValueError):
                raise StoreError(f"the record {f} does not decrypt with the key file's key (tampered, renamed, or "
                                 "another key)") from None
            records[(kind, name)] = obj
        with self.lock:
            self.records = records

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.records.get((kind, name))

    def names(self, kind: str) -> list[str]:
        with self.lock:
            return sorted(n for k, n in self.records if k == kind)

    def put(self, kind: str, name: str, obj: dict[str, Any]) -> None:
        obj = dict(obj, updated=int(time.time()), rev=os.urandom(8).hex())  # rev: a change within the same second
        nonce = os.urandom(12)
        blob = MAGIC + nonce + self.aead.encrypt(nonce, json.dumps(obj).encode(), self._aad(kind, name))
        target = self._file(kind, name)
        tmp = self.dir / f".tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        with self.lock:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._sync_dir()
            self.records[(kind, name)] = obj

    def delete(self, kind: str, name: str) -> bool:
        with self.lock:
            if (kind, name) not in self.records:
                return False
            self._file(kind, name).unlink(missing_ok=True)
            self._sync_dir()
            del self.records[(kind, name)]
            return True

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # secrets
    def set_secret(self, path: str, value: bytes, policy: str = "default") -> None:
        self.put("secret", check_path(path), {"value": base64.b64encode(value).decode(), "policy": check_name(policy)})

    def secret(self, path: str) -> tuple[bytes, str] | None:
        r = self.get("secret", path)
        return (base64.b64decode(r["value"]), r.get("policy", "default")) if r else None
