"""The state store: one directory per container under the runtime root, holding state.json, config.json, the
exec fifo and the lock.

state.json is small (ids, pids, cgroup paths, which hook kinds the config has): every command reads it. config.json,
the config as create loaded it, is read only by the commands that need it (exec, update, and start or delete when
the config has poststart or poststop hooks). A state.json with the config inside (written by rune before the split)
is still read.

Writes are atomic (temp file, fsync, rename) and every command that changes a container holds its lock
(flock on the container directory), so two commands on one container never interleave. A command killed half-way
leaves a state that `delete --force` can clean.
"""

from __future__ import annotations

import fcntl
import os

from inclavare.errors import RuneError, q

STATE = "state.json"
CONFIG = "config.json"
FIFO = "exec.fifo"
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(cid: str) -> None:
    if not cid:
        raise RuneError("container id cannot be empty")
    if cid in (".", "..") or not ID_CHARS.issuperset(cid) or len(cid) > 1024:
        raise RuneError(f"invalid container id {cid!r}: use letters, digits, '_', '+', '-' and '.' only")


class Container:
    """A container's directory in the store. `lock()` before reading a state you are going to change."""

    def __init__(self, root: str, cid: str) -> None:
        check_id(cid)
        self.root = root
        self.id = cid
        self.dir = os.path.join(root, cid)
        self._lockfd = -1

    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, STATE)

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, CONFIG)

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.dir, FIFO)

    def make(self) -> None:
        """Create the container directory, locked; RuneError if the id is taken."""
        try:
            makedirs(self.root)
            os.mkdir(self.dir, 0o711)
        except FileExistsError:
            if not os.path.isdir(self.root):
                raise RuneError(f"--root {q(self.root)}: not a directory") from None
            raise RuneError(f"container {self.id!r} already exists (in {q(self.root)})") from None
        except OSError as e:
            raise RuneError(f"--root {q(self.root)}: cannot make the container's state directory: {e.strerror}") from None
        if not self.lock():  # a `delete --force` took it between our mkdir and our lock
            raise RuneError(f"container {self.id!r} was deleted while it was being created")

    def lock(self, shared: bool = False) -> bool:
        """Take the container's lock (shared: for commands that only read); False if the container does not exist
        (or vanished while waiting)."""
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise RuneError(f"{q(self.dir)} is not a container directory: is --root {q(self.root)} right?") from None
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:  # deleted while we waited
            os.close(fd)
            return False
        self._lockfd = fd
        return True

    def unlock(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)
            self._lockfd = -1

    def read(self) -> dict | None:
        """state.json, or None when there is none yet (a create still running, or killed before writing it).
        Anything else than what rune writes (checked against oci/schema.py's STATE) is a corrupt state."""
        return read_state(self.state_path)

    def write(self, state: dict, sync: bool = True) -> None:
        """state.json: the state without its "config" (which a command may hold in memory; write_config stores it),
        but with the kinds of hooks that config has."""
        from inclavare.oci import jsonlite

        if "config" in state:
            from inclavare.oci.schema import HOOK_KINDS

            hooks = state["config"].get("hooks") or {}
            state = {k: v for k, v in state.items() if k != "config"}
            state["hooks"] = [kind for kind in HOOK_KINDS if hooks.get(kind)]
        write_atomic(self.state_path, jsonlite.dumps(state).encode(), mode=0o600, sync=sync)

    def write_config(self, config: dict, sync: bool = True) -> None:
        from inclavare.oci import jsonlite

        # 0600: process.env may hold secrets
        write_atomic(self.config_path, jsonlite.dumps(config).encode(), mode=0o600, sync=sync)

    def config(self, state: dict | None) -> dict:
        """The container's config (config.json, or the state's own from before the split); {} when there is none
        (a create killed before it wrote it)."""
        if state is not None and "config" in state:
            return state["config"] or {}
        from inclavare.oci import jsonlite, schema

        path = self.config_path
        try:
            config = jsonlite.read_json(path, 8 << 20, depth=schema.STATE_DEPTH)
            schema.validate(config, schema.STORED_CONFIG)
        except FileNotFoundError:
            return {}
        except (OSError, RuneError, schema.Refusal) as e:
            why = e.strerror if isinstance(e, OSError) else str(e).removeprefix(q(path) + ": ")
            raise RuneError(f"{q(path)}: corrupt state ({why}); remove the container with delete --force") from None
        if state is not None:
            state["config"] = config
        return config

    def hooks(self, state: dict | None, kind: str) -> list:
        """The config's hooks of one kind, reading config.json only when state.json says there are some."""
        if state is None or ("config" not in state and kind not in (state.get("hooks") or ())):
            return []
        return (self.config(state).get("hooks") or {}).get(kind) or []

    def remove(self) -> None:
        """Remove the directory and all it holds."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for n in names:
            p = os.path.join(self.dir, n)
            try:
                os.unlink(p)
            except IsADirectoryError:
                import shutil

                shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass
        self.unlock()


def read_state(path: str) -> dict | None:
    from inclavare.oci import jsonlite, schema

    try:
        state = jsonlite.read_json(path, (8 << 20) + (1 << 20), depth=schema.STATE_DEPTH)  # a config and more
        if type(state) is not dict:
            raise RuneError(f"holds {schema.describe(state)}, not an object")
        config = state.pop("config", None)  # a state written before config.json
        schema.validate(state, schema.STATE)
        if config is not None:
            schema.validate(config, schema.STORED_CONFIG, "config")
            state["config"] = config
    except FileNotFoundError:
        return None
    except (OSError, RuneError, schema.Refusal) as e:
        why = e.strerror if isinstance(e, OSError) else str(e).removeprefix(q(path) + ": ")
        raise RuneError(f"{q(path)}: corrupt state ({why}); remove the container with delete --force") from None
    return state


def makedirs(path: str, mode: int = 0o700) -> None:
    """mkdir -p, one level at a time (os.makedirs recurses once per level: a path thousands of levels deep would
    exhaust the stack)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            pass


def write_atomic(path: str, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def write_pid_file(path: str, pid: int) -> None:
    """--pid-file: the pid without a newline, as runc writes it, atomically."""
    path = os.path.abspath(path)
    try:
        write_atomic(path, str(pid).encode(), sync=False)
    except OSError as e:
        raise RuneError(f"--pid-file {q(path)}: cannot write it: {e.strerror}") from None


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if not n.startswith("."))
    except FileNotFoundError:
        return []
