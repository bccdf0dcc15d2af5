"""`run`: create, start at once (no exec fifo), and in the foreground wait for the container, forwarding signals
and the terminal, then delete it and return its exit status."""

from __future__ import annotations

import os

from inclavare.errors import RuneError
from inclavare.runtime import init as cinit
from inclavare.runtime.create import Created, Options, create


def run(root: str, cid: str, opts: Options, keep: bool = False) -> int:
    c = create(root, cid, opts)
    pid = c.pid
    if not opts.detach:
        _forward_signals(pid, c.pty_master)
    try:
        go(c)
    except BaseException:
        from inclavare.runtime.delete import destroy

        destroy(c.container, c.state, "running")
        raise
    hooks = (c.state.get("config") or {}).get("hooks") or {}
    if hooks.get("poststart"):
        from inclavare.runtime.start import run_poststart

        run_poststart(hooks["poststart"], c.state)
    c.container.unlock()
    if opts.detach:
        return 0
    if c.pty_master >= 0:
        _proxy_tty(c.pty_master, pid)
    status = _wait(pid)
    if not keep and c.container.lock():  # False: someone deleted it meanwhile
        from inclavare.runtime.delete import destroy

        destroy(c.container, c.state, "stopped")
    return status


def go(c: Created) -> None:
    """Let the init exec, and wait until it has (its end of the sync socket closes on exec)."""
    sock = c.sock
    try:
        sock.send(cinit.MSG_GO)
        msg = sock.recv(1 << 16)
    except OSError:
        msg = b""  # the init is gone: its exit status tells the rest
    finally:
        sock.close()
    if msg[:1] == cinit.MSG_ERROR:
        raise RuneError(msg[1:].decode(errors="replace"))
    failed = cinit.exec_failure(msg, c.state["config"]["process"]["args"][0])
    if failed:
        raise RuneError(failed)


_NO_FORWARD = (9, 17, 19)  # SIGKILL, SIGCHLD, SIGSTOP


def _forward_signals(pid: int, pty_master: int) -> None:
    import _signal

    def forward(signum: int, _frame: object) -> None:
        if signum == _signal.SIGWINCH and pty_master >= 0:
            _copy_winsize(0, pty_master)
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in range(1, 32):
        if sig not in _NO_FORWARD:
            try:
                _signal.signal(sig, forward)
            except (OSError, ValueError):
                pass


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            # not our child (--no-subreaper): poll until it is gone
            import time

            from inclavare.linux import proc

            while proc.alive(pid):
                time.sleep(0.01)
            return 0
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def _proxy_tty(master: int, pid: int) -> None:
    """Copy our stdin to the pty and the pty to our stdout until the container's side closes."""
    import select
    import termios
    import tty

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        _copy_winsize(0, master)
    try:
        fds = [master, 0]
        while True:
            ready, _, _ = select.select(fds, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                    continue
                os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
