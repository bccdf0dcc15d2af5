"""OCI hooks: each runs with the container state JSON on its stdin, within its timeout.

Failure handling is the caller's (the runtime spec makes prestart/createRuntime/createContainer/startContainer
failures fatal and poststart/poststop failures warnings); `run` raises RuneError naming the hook.
"""

from __future__ import annotations

import os
import time

from inclavare.errors import RuneError, q, shown
from inclavare.oci.schema import HOOK_TIMEOUT_MAX

SPEC_STATE = ("ociVersion", "id", "status", "pid", "bundle", "annotations")


def spec_state(state: dict, status: str, pid: int | None = None) -> dict:
    """The runtime-spec state object (what hooks and seccomp listeners get) from rune's state.json."""
    out = {k: state.get(k) for k in SPEC_STATE}
    out["status"] = status
    if pid is not None:
        out["pid"] = pid
    return out


def run(kind: str, hooks: list[dict], state: dict, execve=os.execve, environ=None, warn=None) -> None:  # noqa: ANN001
    """execve: how the hook's process execs its program (rune's exec trampoline for hooks whose path resolves in the
    container); environ: the environment of a hook without `env` (rune's own by default); warn: for poststart and
    poststop hooks, called with the sentence of each hook that fails, and the remaining hooks still run (runtime
    spec: "the failure MUST be logged as a warning" and the lifecycle goes on). Without it the first failure raises."""
    if not hooks:
        return
    from inclavare.oci import jsonlite

    data = jsonlite.dumps(state).encode()
    for i, h in enumerate(hooks):
        try:
            _run_one(f"hooks.{kind}[{i}]", h, data, execve, os.environ if environ is None else environ)
        except RuneError as e:
            if warn is None:
                raise
            warn(str(e))


def _run_one(field: str, h: dict, data: bytes, execve, environ) -> None:  # noqa: ANN001
    path = h.get("path")
    timeout = h.get("timeout")
    # the config was validated when the container was made; a state.json from elsewhere may hold anything
    if type(path) is not str or not path.startswith("/") or "\0" in path:
        raise RuneError(f"{field}.path: not an absolute path: {shown(path)}")
    if timeout is not None and (type(timeout) is not int or not 0 < timeout <= HOOK_TIMEOUT_MAX):
        raise RuneError(f"{field}.timeout: must be 1 to {HOOK_TIMEOUT_MAX} seconds, got {shown(timeout)}")
    args = h.get("args") or [path]
    # no `env`: the runtime's own environment, as runc (Go's exec.Cmd with a nil Env) gives it; podman's hooks.d and
    # dockerd's libnetwork-setkey rely on it. An `env` given (even empty) is the whole environment.
    given = h.get("env")
    env = environ if given is None else dict(e.split("=", 1) for e in given if "=" in e)
    r, w = os.pipe()
    outr, outw = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(r, 0)
            os.dup2(outw, 1)
            os.dup2(outw, 2)
            execve(path, args, env)
        except BaseException as e:  # noqa: BLE001 - the child only reports
            os.write(2, f"{getattr(e, 'strerror', None) or e}\n".encode(errors="replace"))
        finally:
            os._exit(127)
    os.close(r)
    os.close(outw)
    deadline = time.monotonic() + timeout if timeout else None
    timed_out = RuneError(f"{field}: {q(path)} did not finish within its timeout of {timeout} s and was killed")
    out = b""
    reaped = False
    try:
        try:
            os.write(w, data)
        except BrokenPipeError:
            pass
        finally:
            os.close(w)
        import select

        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([outr], [], [], wait)
                if not ready:
                    raise timed_out
                chunk = os.read(outr, 65536)
                if not chunk:
                    break
                out = (out + chunk)[-4096:]
        finally:
            os.close(outr)
        # end of output is not the end of the hook (it may close stdout and stderr and go on): the deadline holds
        status = _wait(pid, deadline)
        if status is None:
            raise timed_out
        reaped = True
    finally:
        if not reaped:  # timed out, or rune is interrupted: the hook does not outlive it
            _kill(pid)
    if status:
        code = os.waitstatus_to_exitcode(status)
        what = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        last = out.decode(errors="replace").strip().splitlines()
        detail = f": {last[-1]}" if last else ""
        if code == 127 and last and not os.path.exists(path):
            what, detail = "could not be run", f": {q(path)} does not exist"
        elif detail:
            detail = ": " + q(last[-1])
        raise RuneError(f"{field}: {q(path)} {what}{detail}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _wait(pid: int, deadline: float | None) -> int | None:
    """The hook's wait status, or None if it is still running at the deadline."""
    if deadline is None:
        return os.waitpid(pid, 0)[1]
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1  # a kernel before 5.3: poll
    try:
        delay = 0.001
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if pidfd >= 0:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
