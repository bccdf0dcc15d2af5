"""verdictd's configuration file (TOML). Every key is optional; relative paths are relative to the file.

    state_dir = "/var/lib/verdictd"          # secrets and policies (encrypted records), the token and TLS keys
    key_file = "/etc/verdictd/secrets.key"   # 32 bytes: the AES-256-GCM key of the records (made, 0600, if absent)
    admin_socket = "/run/verdictd/admin.sock"
    audit_log = "/var/log/verdictd/audit.log" # JSON lines; "-" for stderr

    [kbs]                                   # the KBS protocol over HTTP
    listen = "127.0.0.1:8080"               # "" to disable
    session_timeout = 300                   # seconds a session (cookie) lives
    token_lifetime = 300                    # seconds an attestation token lives

    [attested_tls]                          # secrets over mutual attested TLS, for enclave containers
    listen = ["127.0.0.1:1234"]             # "HOST:PORT" or "unix:PATH"

    [attestation]
    collateral = []                         # DCAP collateral files (dcap-qvl JSON); shell patterns allowed
    pccs_url = ""                           # fetch missing collateral from this PCCS / Intel PCS base URL
    sim_roots = []                          # simulated root CAs (PEM) sim evidence may chain to
    root_ca = ""                            # a DCAP root CA (DER or PEM) instead of Intel's (private deployments, tests)

    [limits]
    max_connections = 256                   # per listener; more are closed at once
    max_body = 1048576                      # bytes of an HTTP request body or attested-TLS request
    io_timeout = 10                         # seconds a client may take to send its request
"""

from __future__ import annotations

import glob
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inclavare.errors import RuneError


class ConfigError(RuneError):
    pass


@dataclass
class Config:
    path: Path
    state_dir: Path
    key_file: Path
    admin_socket: Path
    audit_log: str
    kbs_listen: str = "127.0.0.1:8080"
    session_timeout: int = 300
    token_lifetime: int = 300
    ratls_listen: list[str] = field(default_factory=list)
    collateral: list[Path] = field(default_factory=list)
    pccs_url: str = ""
    sim_roots: list[Path] = field(default_factory=list)
    root_ca: Path | None = None
    max_connections: int = 256
    max_body: int = 1 << 20
    io_timeout: float = 10.0


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    v = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        raise ConfigError(f"{where}: {key} must be {' or '.join(k.__name__ for k in kinds)}")
    return v


def load(path: str | Path) -> Config:
    p = Path(path).resolve()
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the verdictd config {p}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"the verdictd config {p} is not valid TOML: {e}") from None
    base = p.parent
    known = {"state_dir", "key_file", "admin_socket", "audit_log", "kbs", "attested_tls", "attestation", "limits"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")

    def path_of(v: str) -> Path:
        return (base / v).resolve() if v else Path()

    w = str(p)
    state = path_of(_get(data, "state_dir", str, "/var/lib/verdictd", w))
    c = Config(p, state, path_of(_get(data, "key_file", str, str(state / "secrets.key"), w)),
               path_of(_get(data, "admin_socket", str, "/run/verdictd/admin.sock", w)),
               _get(data, "audit_log", str, "/var/log/verdictd/audit.log", w))
    if c.audit_log not in ("-", ""):
        c.audit_log = str(path_of(c.audit_log))
    kbs = _get(data, "kbs", dict, {}, w)
    c.kbs_listen = _get(kbs, "listen", str, c.kbs_listen, f"{w} [kbs]")
    c.session_timeout = _get(kbs, "session_timeout", int, 300, f"{w} [kbs]")
    c.token_lifetime = _get(kbs, "token_lifetime", int, 300, f"{w} [kbs]")
    tls = _get(data, "attested_tls", dict, {}, w)
    listen = tls.get("listen", [])
    listen = [listen] if isinstance(listen, str) else listen
    if not isinstance(listen, list) or not all(isinstance(x, str) for x in listen):
        raise ConfigError(f"{w} [attested_tls]: listen must be an address or a list of addresses")
    c.ratls_listen = [("unix:" + str(path_of(x[5:]))) if x.startswith("unix:") else x for x in listen]
    att = _get(data, "attestation", dict, {}, w)
    for key in ("collateral", "sim_roots"):
        vals = att.get(key, [])
        if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals):
            raise ConfigError(f"{w} [attestation]: {key} must be a list of paths")
        paths: list[Path] = []
        for v in vals:
            hits = sorted(glob.glob(str(path_of(v)))) if any(ch in v for ch in "*?[") else [str(path_of(v))]
            paths += [Path(h) for h in hits]
        setattr(c, key, paths)
    c.pccs_url = _get(att, "pccs_url", str, "", f"{w} [attestation]")
    root = _get(att, "root_ca", str, "", f"{w} [attestation]")
    c.root_ca = path_of(root) if root else None
    lim = _get(data, "limits", dict, {}, w)
    c.max_connections = _get(lim, "max_connections", int, 256, f"{w} [limits]")
    c.max_body = _get(lim, "max_body", int, 1 << 20, f"{w} [limits]")
    c.io_timeout = float(_get(lim, "io_timeout", (int, float), 10, f"{w} [limits]"))
    for name in ("session_timeout", "token_lifetime", "max_connections", "max_body"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{w}: {name} must be positive")
    return c
