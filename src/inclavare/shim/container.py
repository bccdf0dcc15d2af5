"""A container in the shim (runc's runtime/v2/runc/container.go): its options and configuration, its root
filesystem mounted from containerd's mounts, the enclave conversion, the init and its exec'd processes.

What the `delete` subcommand needs after a shim died (the rune binary and root) is written to
BUNDLE/rune-shim.json at Create, as runc's shim writes options.json.
"""

from __future__ import annotations

import os
import sys

from inclavare.errors import RuneError
from inclavare.oci import jsonlite
from inclavare.shim import api, config, forkserver
from inclavare.shim.process import Process
from inclavare.shim.process.exec import Exec
from inclavare.shim.process.init import Init
from inclavare.shim.rootfs import RootfsError, mount_all, unmount_all
from inclavare.shim.runtime import Rune
from inclavare.shim.stdio import Stdio
from inclavare.shim.ttrpc import (
    ALREADY_EXISTS,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNIMPLEMENTED,
    UNKNOWN,
    TtrpcError,
)

STATE_FILE = "rune-shim.json"


def find_rune(configured: str) -> str:
    """The rune binary: the configured path, else the rune next to this shim's launcher, else rune on PATH."""
    if configured:
        return configured
    here = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    candidates = [os.path.join(here, "rune")] if here else []
    candidates += [os.path.join(d, "rune") for d in os.environ.get("PATH", "/usr/local/bin:/usr/bin").split(":") if d]
    for c in candidates:
        if os.access(c, os.X_OK) and os.path.isfile(c):
            return c
    raise RuneError("no rune binary: none next to containerd-shim-rune-v2 and none on PATH; set [rune] binary in "
                    "the shim configuration")


class Options:
    """The task's runtime options (CreateTaskRequest.options): a config path, or runc-style options."""

    def __init__(self, any_: api.Any | None) -> None:
        self.config_path = ""
        self.binary = ""
        self.root = ""
        self.no_pivot = False
        self.no_new_keyring = False
        self.systemd_cgroup = False  # runc's SystemdCgroup option: rune --systemd-cgroup, as runc's shim passes it
        if any_ is None or not any_.type_url:
            return
        if any_.type_url.endswith(api.RUNTIME_OPTIONS):
            self.config_path = api.RuntimeOptions.decode(any_.value).config_path
        elif any_.type_url.endswith(api.RUNC_OPTIONS):
            o = api.RuncOptions.decode(any_.value)
            self.binary, self.root = o.binary_name, o.root
            self.no_pivot, self.no_new_keyring = o.no_pivot_root, o.no_new_keyring
            self.systemd_cgroup = bool(o.systemd_cgroup)
        else:
            raise TtrpcError(INVALID_ARGUMENT, f"unknown runtime options type {any_.type_url!r}: use "
                             f"{api.RUNTIME_OPTIONS} (ConfigPath)")


def _kill_all_on_exit(spec: dict) -> bool:
    """Without a pid namespace of its own, the container's processes outlive its init: kill them when it exits."""
    for ns in ((spec.get("linux") or {}).get("namespaces") or ()):
        if isinstance(ns, dict) and ns.get("type") == "pid":
            return bool(ns.get("path"))
    return True


class Container:
    def __init__(self, req: api.CreateTaskRequest, namespace: str, reaper, log) -> None:  # noqa: ANN001
        if req.checkpoint:
            raise TtrpcError(UNIMPLEMENTED, "containerd-shim-rune-v2 cannot restore a container from a checkpoint")
        self.id = req.id
        self.bundle = req.bundle
        self.namespace = namespace
        self.log = log
        self.execs: dict[str, Exec] = {}
        self.rootfs = os.path.join(req.bundle, "rootfs")
        self.mounted = bool(req.rootfs)
        opts = Options(req.options)
        try:
            self.config = config.load(config.path_for(opts.config_path))
            binary = find_rune(opts.binary or self.config.text("rune", "binary"))
        except RuneError as e:
            raise TtrpcError(INVALID_ARGUMENT, str(e)) from None
        root = os.path.join(opts.root or self.config.text("rune", "root"), namespace)
        # [epm] socket: where rune finds epm's bundle caches and pre-initialised enclaves ("" turns epm off)
        env = dict(os.environ, INCLAVARE_EPM_SOCKET=self.config.text("epm", "socket"))
        if self.config.text("enclave_runtime", "sim_dir"):
            env["INCLAVARE_SIM_DIR"] = self.config.text("enclave_runtime", "sim_dir")
        fs = forkserver.current
        if fs is not None and (self.config.get("rune", "fork_server") is False or not fs.serves(binary)):
            fs = None
        debug = self.config.log_level in ("debug", "trace")
        self.rune = Rune(reaper, binary, root, os.path.join(req.bundle, "log.json"), debug=debug, env=env,
                         systemd_cgroup=opts.systemd_cgroup or self.config.get("rune", "systemd_cgroup") is True,
                         forkserver=fs, trace=(lambda m, lvl: log(m, lvl, force=True)) if debug else log)
        self.spawn = reaper.spawn
        self.mounts = list(req.rootfs)
        spec = self._spec()
        if fs is not None and forkserver.names_enclave(spec):
            fs.enclave = True  # servers started from now on load the enclave runtime too (a pod's later ones)
        self.kill_all_on_exit = _kill_all_on_exit(spec)
        self._write_state(binary, root)
        if self.mounted:
            try:
                mount_all(req.rootfs, self.rootfs)
            except RootfsError as e:
                raise TtrpcError(UNKNOWN, str(e)) from None
        stdio = Stdio(req.stdin, req.stdout, req.stderr, req.terminal)
        self.init = Init(req.id, req.bundle, self.rune, stdio, namespace, reaper.spawn, no_pivot=opts.no_pivot,
                         no_new_keyring=opts.no_new_keyring)
        try:
            self._convert(spec)
            self.init.create()
        except BaseException:
            self._unmount()
            raise

    def _spec(self) -> dict:
        path = os.path.join(self.bundle, "config.json")
        try:
            with open(path, "rb") as f:
                spec = jsonlite.loads(f.read())
        except (OSError, ValueError) as e:
            raise TtrpcError(INVALID_ARGUMENT, f"the bundle config {path} cannot be read: {e}") from None
        if not isinstance(spec, dict):
            raise TtrpcError(INVALID_ARGUMENT, f"the bundle config {path} is not a JSON object")
        return spec

    def _convert(self, spec: dict) -> None:
        if not forkserver.names_enclave(spec):
            return  # a plain container: the enclave modules stay unloaded
        from inclavare.shim import convert

        if not convert.wants_enclave(spec):
            return
        try:
            convert.convert(self.bundle, spec, self.config, self.log, self.spawn, self.mounts)
        except RuneError as e:
            raise TtrpcError(UNKNOWN, f"enclave conversion failed: {e}") from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise TtrpcError(UNKNOWN, f"enclave conversion failed: {where}{e.strerror or e}") from None

    def _write_state(self, binary: str, root: str) -> None:
        path = os.path.join(self.bundle, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(jsonlite.dumps({"binary": binary, "root": root, "config": self.config.path}))
        os.replace(tmp, path)

    def _unmount(self) -> None:
        if self.mounted:
            unmount_all(self.rootfs)

    # ---- processes ------------------------------------------------------------------------------------------------
    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        p = self.execs.get(exec_id)
        if p is None:
            raise TtrpcError(NOT_FOUND, f"process {exec_id} does not exist in container {self.id}: not found")
        return p

    def add_exec(self, exec_id: str, stdio: Stdio, spec: bytes) -> Exec:
        if exec_id in self.execs:
            raise TtrpcError(ALREADY_EXISTS, f"id {exec_id}: already exists")
        if self.init.state not in ("created", "running"):
            raise TtrpcError(9, f"cannot exec in a {self.init.state} state")
        e = Exec(exec_id, self.init, stdio, spec)
        self.execs[exec_id] = e
        return e

    def delete(self, exec_id: str) -> Process:
        p = self.process(exec_id)
        p.delete()
        if exec_id:
            self.execs.pop(exec_id, None)
        else:
            self._unmount()
        return p
