"""/etc/inclavare-containers/config.toml: the shim's configuration (the original's keys where they still make sense).

    log_level = "info"                      # debug, info, warning, error: the shim's log (containerd's log)
    [containerd]
      socket = "/run/containerd/containerd.sock"   # informational: the shim is told containerd's address
    [rune]
      binary = ""                           # default: the rune next to this shim, else rune on PATH
      root = "/run/containerd/rune"         # rune --root is ROOT/NAMESPACE
      systemd_cgroup = false                # rune --systemd-cgroup (runc's SystemdCgroup option, which containerd
                                            # sends only to io.containerd.runc.v2 handlers)
      fork_server = true                    # run rune's commands in forks of a process that has rune loaded, when
                                            # the binary is this installation's rune (false: exec it every time)
    [enclave_runtime]
      signature_method = "server"           # "server": the shim signs at Create; "client": images come signed
      sim_dir = ""                          # INCLAVARE_SIM_DIR for rune (sim platform keys, launch policy)
    [signature]
      server_address = ""                   # http://HOST:9080 of a rune-signing-server; else the local key below
      private_key = "/etc/inclavare-containers/enclave-signing-key.pem"
      debug = false                         # sign debug enclaves
    [cache]
      dir = "/var/lib/inclavare-containers/shim-cache"
      max_entries = 64

The file is optional (defaults above). Its path is, in order: the runtime options' ConfigPath (`ctr run
--runtime-config-path`, a CRI handler's `options.ConfigPath`), $INCLAVARE_SHIM_CONFIG, the default path.

Reading: a config in the subset of TOML written above (tables, `key = "string" | 'literal' | integer | true |
false | ["strings"]`, comments) is read here; anything else goes to the standard library's tomllib. The subset
reader exists because importing tomllib costs about 14 ms (re, typing, datetime), paid on every container start.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

DEFAULT_PATH = "/etc/inclavare-containers/config.toml"
ENV_PATH = "INCLAVARE_SHIM_CONFIG"
DEFAULTS: dict[str, dict[str, object]] = {
    "": {"log_level": "info", "sgx_tool_sign": ""},
    "containerd": {"socket": "/run/containerd/containerd.sock"},
    "epm": {"socket": "/run/epm/epm.sock"},
    "rune": {"binary": "", "root": "/run/containerd/rune", "systemd_cgroup": False, "fork_server": True},
    "enclave_runtime": {"signature_method": "server", "sim_dir": ""},
    "signature": {"server_address": "", "private_key": "/etc/inclavare-containers/enclave-signing-key.pem",
                  "debug": False},
    "cache": {"dir": "/var/lib/inclavare-containers/shim-cache", "max_entries": 64},
}
SIGNATURE_METHODS = ("server", "client")
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")


class _Unsupported(Exception):
    pass


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def _string(text: str, i: int) -> tuple[str, int]:
    """A basic ("...") or literal ('...') single-line string starting at text[i]; (value, index after it)."""
    q = text[i]
    if text.startswith(q * 3, i):
        raise _Unsupported
    out = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == q:
            return "".join(out), i + 1
        if c == "\\" and q == '"':
            e = text[i + 1:i + 2]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
                continue
            if e in ("u", "U"):
                n = 4 if e == "u" else 8
                digits = text[i + 2:i + 2 + n]
                if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise _Unsupported
                out.append(chr(int(digits, 16)))
                i += 2 + n
                continue
            raise _Unsupported
        if c == "\n" or (ord(c) < 0x20 and c != "\t"):
            raise _Unsupported
        out.append(c)
        i += 1
    raise _Unsupported


def _value(text: str, i: int) -> tuple[object, int]:
    c = text[i:i + 1]
    if c in ('"', "'"):
        return _string(text, i)
    if c == "[":
        items: list[object] = []
        i += 1
        while True:
            while i < len(text) and text[i] in " \t":
                i += 1
            if text[i:i + 1] == "]":
                return items, i + 1
            if text[i:i + 1] not in ('"', "'"):
                raise _Unsupported
            v, i = _string(text, i)
            items.append(v)
            while i < len(text) and text[i] in " \t":
                i += 1
            if text[i:i + 1] == ",":
                i += 1
            elif text[i:i + 1] != "]":
                raise _Unsupported
    j = i
    while j < len(text) and text[j] not in " \t#":
        j += 1
    word = text[i:j]
    if word in ("true", "false"):
        return word == "true", j
    digits = word[1:] if word[:1] in "+-" else word
    if digits.isdigit() and (digits == "0" or not digits.startswith("0")):
        return int(word), j
    raise _Unsupported


def _bare_key(key: str) -> bool:
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)


def parse_subset(text: str) -> dict[str, object]:
    """The document as nested dicts, or _Unsupported when it leaves the subset."""
    doc: dict[str, object] = {}
    table = doc
    headers: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if line.startswith("[["):
                raise _Unsupported
            head, sep, rest = line[1:].partition("]")
            rest = rest.strip()
            if not sep or (rest and not rest.startswith("#")):
                raise _Unsupported
            if head.strip() in headers:
                raise _Unsupported
            headers.add(head.strip())
            table = doc
            for part in head.strip().split("."):
                part = part.strip()
                if not _bare_key(part):
                    raise _Unsupported
                table = table.setdefault(part, {})  # type: ignore[assignment]
                if not isinstance(table, dict):
                    raise _Unsupported
            continue
        key, eq, rest = line.partition("=")
        key = key.strip()
        if not eq or not _bare_key(key) or key in table:
            raise _Unsupported
        rest = rest.lstrip(" \t")
        value, end = _value(rest, 0)
        tail = rest[end:].strip()
        if tail and not tail.startswith("#"):
            raise _Unsupported
        table[key] = value
    return doc


def parse(text: str, where: str) -> dict[str, object]:
    try:
        return parse_subset(text)
    except (_Unsupported, IndexError):
        pass
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuneError(f"the shim configuration {where} is not valid TOML: {e}") from None


class Config:
    """The effective configuration: defaults overlaid with the file."""

    def __init__(self, path: str, values: dict[str, dict[str, object]]) -> None:
        self.path = path
        self.values = values

    def get(self, table: str, key: str) -> object:
        return self.values[table][key]

    def text(self, table: str, key: str) -> str:
        return str(self.values[table][key])

    @property
    def log_level(self) -> str:
        return self.text("", "log_level")

    @property
    def signature_method(self) -> str:
        return self.text("enclave_runtime", "signature_method")


def load(path: str) -> Config:
    values = {t: dict(v) for t, v in DEFAULTS.items()}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if path != DEFAULT_PATH:
            raise RuneError(f"the shim configuration {path} does not exist") from None
        return Config(path, values)
    except (OSError, UnicodeDecodeError) as e:
        raise RuneError(f"the shim configuration {path} cannot be read: {getattr(e, 'strerror', e)}") from None
    doc = parse(text, path)
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in values:
                continue  # tables of other tools (the original's [enclave_runtime.occlum] and the like)
            for k, v in value.items():
                _check(path, key, k, v, values[key])
                values[key][k] = v
        else:
            _check(path, "", key, value, values[""])
            values[""][key] = value
    method = values["enclave_runtime"]["signature_method"]
    if method not in SIGNATURE_METHODS:
        raise RuneError(f"'enclave_runtime.signature_method' in {path} is {method!r}: use \"server\" or \"client\"")
    if values[""]["log_level"] not in LOG_LEVELS:
        raise RuneError(f"'log_level' in {path} is {values['']['log_level']!r}: use debug, info, warning or error")
    return Config(path, values)


def _check(path: str, table: str, key: str, value: object, defaults: dict[str, object]) -> None:
    name = f"{table}.{key}" if table else key
    if key not in defaults:
        if isinstance(value, dict):
            return  # a sub-table ([enclave_runtime.occlum])
        raise RuneError(f"unknown key '{name}' in the shim configuration {path}")
    want = type(defaults[key])
    if type(value) is not want:
        raise RuneError(f"'{name}' in the shim configuration {path} must be a {want.__name__}")


def path_for(option_path: str = "") -> str:
    return option_path or os.environ.get(ENV_PATH) or DEFAULT_PATH
