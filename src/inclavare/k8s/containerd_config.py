"""Adding rune to containerd's configuration, edited in place with tomlkit: comments, order and every other key kept.

The CRI plugin's runtime handler table depends on the file's `version`: 1 (containerd 1.x's default when the key is
absent) `plugins.cri.containerd.runtimes.NAME`, 2 `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME`,
3 (containerd 2.x) `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.NAME`. The handler is either
- the shim (`shim="rune"`): runtime_type io.containerd.rune.v2, options.ConfigPath naming
  /etc/inclavare-containers/config.toml (containerd hands it to the shim as runtimeoptions.v1.Options), or
- runc's shim calling rune as a drop-in (`shim="runc"`): runtime_type io.containerd.runc.v2, options.BinaryName.
Pods may pass the enclave.* annotations through to the OCI config (pod_annotations). The edit is idempotent: a file
that already says all this is not written again, and `changed` tells the caller whether containerd needs a restart.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import tomlkit
from tomlkit.exceptions import TOMLKitError

from inclavare.errors import RuneError

RUNE_SHIM = "io.containerd.rune.v2"
RUNC_SHIM = "io.containerd.runc.v2"
SHIM_CONFIG = "/etc/inclavare-containers/config.toml"
CRI_PLUGIN = {1: ("plugins", "cri"), 2: ("plugins", "io.containerd.grpc.v1.cri"),
              3: ("plugins", "io.containerd.cri.v1.runtime")}
POD_ANNOTATIONS = ["enclave.*"]


@dataclass
class Runtime:
    name: str = "rune"
    shim: str = "rune"  # "rune": containerd-shim-rune-v2; "runc": runc's shim with BinaryName = rune
    rune: str = "/usr/local/bin/rune"  # BinaryName, with shim="runc"
    runtime_path: str = ""  # the shim's absolute path, when containerd would not find it on its PATH
    config_path: str = SHIM_CONFIG  # options.ConfigPath, with shim="rune"
    default: bool = False  # make it default_runtime_name

    def table(self) -> dict:
        t: dict = {"runtime_type": RUNE_SHIM if self.shim == "rune" else RUNC_SHIM}
        if self.runtime_path:
            t["runtime_path"] = self.runtime_path
        t["pod_annotations"] = POD_ANNOTATIONS
        t["options"] = {"ConfigPath": self.config_path} if self.shim == "rune" else {"BinaryName": self.rune}
        return t


def load(path: str) -> tomlkit.TOMLDocument:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return tomlkit.document()
    except OSError as e:
        raise RuneError(f"containerd config {path}: {e.strerror}") from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:
        raise RuneError(f"containerd config {path} is not valid TOML: {e}") from None


def _version(doc: tomlkit.TOMLDocument, path: str) -> int:
    v = doc.get("version", 1 if doc else 2)
    if v not in CRI_PLUGIN:
        raise RuneError(f"containerd config {path}: version = {v!r} is not one this command knows (1, 2 or 3)")
    return int(v)


def _table(parent, key: str, path: str, where: str, create: bool = True):
    """parent[key] as a table, made (as a super-table, no header of its own) when missing; None if create=False."""
    if key not in parent:
        if not create:
            return None
        parent[key] = tomlkit.table(is_super_table=True)
    t = parent[key]
    if not isinstance(t, dict):
        raise RuneError(f"containerd config {path}: {where}.{key} is not a table")
    return t


def _containerd_table(doc, path: str, version: int, create: bool = True):
    where = ""
    t = doc
    for key in (*CRI_PLUGIN[version], "containerd"):
        t = _table(t, key, path, where.lstrip("."), create)
        if t is None:
            return None
        where += f".{key}"
    return t


def _set(table, key: str, value) -> bool:
    """table[key] = value, keeping the key's place and comments when it is there; True when something changed."""
    if isinstance(value, dict):
        changed = key not in table
        if changed:
            table[key] = tomlkit.table()
        sub = table[key]
        if not isinstance(sub, dict):
            raise RuneError(f"containerd config: {key} is not a table")
        for k, v in value.items():
            changed |= _set(sub, k, v)
        return changed
    if key in table and table[key] == value:
        return False
    table[key] = value
    return True


def containerd_table(doc: tomlkit.TOMLDocument, path: str):  # noqa: ANN201 - a tomlkit table, or {}
    """The CRI plugin's `containerd` table of doc, or {} when it has none."""
    t = _containerd_table(doc, path, _version(doc, path), create=False)
    return {} if t is None else t


def systemd_cgroup(containerd, name: str) -> bool:  # noqa: ANN001 - a tomlkit table
    """The node's runc handler (default_runtime_name's, else `runc`) has SystemdCgroup = true: the kubelet of such a
    node runs with cgroupDriver systemd and every runtime must use the systemd cgroup driver."""
    runtimes = containerd.get("runtimes", {}) if isinstance(containerd, dict) else {}
    other = containerd.get("default_runtime_name", "runc")
    if other == name or other not in runtimes:
        other = "runc"
    rt = runtimes.get(other) if other != name else None
    opts = rt.get("options", {}) if isinstance(rt, dict) else {}
    return isinstance(opts, dict) and opts.get("SystemdCgroup") is True


def add_runtime(doc: tomlkit.TOMLDocument, path: str, rt: Runtime) -> bool:
    """Add (or correct) the runtime handler in doc; True when doc changed. With runc's shim, the handler takes the
    node's SystemdCgroup (systemd_cgroup); the rune shim reads it from its own configuration instead."""
    version = _version(doc, path)
    changed = False
    if "version" not in doc and not doc:
        doc["version"] = 2
        changed = True
    containerd = _containerd_table(doc, path, version)
    runtimes = _table(containerd, "runtimes", path, "containerd")
    if rt.name not in runtimes:
        runtimes[rt.name] = tomlkit.table()
        changed = True
    want = rt.table()
    if rt.shim == "runc" and systemd_cgroup(containerd, rt.name):
        want["options"]["SystemdCgroup"] = True
    for key, value in want.items():
        changed |= _set(runtimes[rt.name], key, value)
    if rt.shim == "rune":  # a BinaryName (or SystemdCgroup) left from the runc-shim form is not the shim's option
        opts = runtimes[rt.name].get("options", {})
        for key in ("BinaryName", "SystemdCgroup"):
            if key in opts:
                del opts[key]
                changed = True
    if rt.default:
        changed |= _set(containerd, "default_runtime_name", rt.name)
    return changed


def remove_runtime(doc: tomlkit.TOMLDocument, path: str, name: str) -> bool:
    version = _version(doc, path)
    containerd = _containerd_table(doc, path, version, create=False)
    if containerd is None:
        return False
    changed = False
    runtimes = containerd.get("runtimes")
    if isinstance(runtimes, dict) and name in runtimes:
        del runtimes[name]
        changed = True
    if containerd.get("default_runtime_name") == name:
        del containerd["default_runtime_name"]
        changed = True
    return changed


def write(doc: tomlkit.TOMLDocument, path: str) -> None:
    """Atomically: a temporary file in the same directory, fsync'd, renamed; the old file's mode and owner kept."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.toml.", dir=directory)
    except OSError as e:
        raise RuneError(f"containerd config {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(tomlkit.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise RuneError(f"containerd config {path}: {e.strerror}") from None
