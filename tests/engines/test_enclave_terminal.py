"""`docker run -it` of enclave containers, driven from a pseudo-terminal as a user's terminal drives it: the payload
has the container's pty as its controlling terminal and is in its foreground process group, so Ctrl-C typed at the
user's terminal reaches it as SIGINT, a window change as SIGWINCH with the new size, and what is typed reaches its
stdin; in a signed sim enclave and in PAL enclaves (v1, v2, v3). PAL v1's signal delivery is also checked without a
terminal: `docker kill -s HUP` reaches a payload that traps it instead of ending the container."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time
import uuid

import pytest
from tests.engines import daemons as d
from tests.engines.conftest import SIGNED

pytestmark = pytest.mark.engines

# The payload: reports its terminal, traps INT and WINCH, and leaves with status 5 when it reads "q".
SCRIPT = ("trap 'echo got-INT' INT; trap 'echo size-$(stty size | tr \" \" x)' WINCH; "
          "echo tty-$(tty | tr / _) size-$(stty size | tr ' ' x); echo ready; "
          "while :; do if read -t 1 l; then [ \"$l\" = q ] && exit 5; echo read-$l; fi; done")


class Terminal:
    """A client (docker) on a pty of ours, as a user's terminal emulator runs it."""

    def __init__(self, cmd: list[str], env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = pty.openpty()
        self.resize(rows, cols)

        def ctty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env,
                                     preexec_fn=ctty)
        os.close(slave)
        self.out = b""

    def resize(self, rows: int, cols: int) -> None:
        """The window changes: the kernel sends SIGWINCH to the client, which passes the size on."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, text: str, timeout: float = 20) -> None:
        import select

        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.text()}")
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                try:
                    self.out += os.read(self.master, 4096)
                except OSError:
                    break
        if text.encode() not in self.out:
            raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.text()}")

    def text(self) -> str:
        return self.out.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> int:
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        os.close(self.master)
        return rc


def _docker(dockerd: d.Dockerd) -> tuple[list[str], dict[str, str]]:
    cmd = ["docker", "-H", f"unix://{dockerd.sock}", "run", "--rm", "-it", "--network", "none", "--runtime", "rune",
           "--cgroup-parent", "/rune-test-docker"]
    return cmd, dict(os.environ, DOCKER_CONFIG=str(dockerd.base / "client"))


def _interact(t: Terminal) -> None:
    t.expect("ready")
    # the size at start is racy under Docker 20.10, for runc too (the client sends it after start): not checked
    assert "tty-_dev_pts_" in t.text(), t.text()
    t.send(b"\x03")  # Ctrl-C at the user's terminal
    t.expect("got-INT")
    # Docker's client sends the first size after start, possibly after ours: a new size until one is seen
    for rows in range(40, 45):
        t.resize(rows, 100)
        try:
            t.expect(f"size-{rows}x100", timeout=5)
            break
        except AssertionError:
            if rows == 44:
                raise
    t.send(b"hello\r")
    t.expect("read-hello")
    t.send(b"q\r")


@pytest.mark.parametrize("kind", ["sim-signed", "pal-v1", "pal-v2", "pal-v3"])
def test_interactive_enclave_through_docker(kind, dockerd, loaded, pal_libs):
    cmd, env = _docker(dockerd)
    if kind == "sim-signed":
        argv = [*cmd, SIGNED, "sh", "-c", SCRIPT]
    else:
        pal = pal_libs[int(kind[-1])]
        argv = [*cmd, "-e", "ENCLAVE_TYPE=sim", "-e", f"ENCLAVE_RUNTIME_PATH={pal}", d.IMAGE, "sh", "-c", SCRIPT]
    t = Terminal(argv, env)
    try:
        _interact(t)
    finally:
        rc = t.close()
    assert rc == 5, t.text()


def test_pal_v1_delivers_handled_signals(dockerd, pal_libs):
    """PAL API v1 has no pal_kill: rune sends the signal to the payload's processes (kill(-1) from PID 1), so a payload
    that traps HUP lives on, and `docker stop` ends it through its TERM trap."""
    name = f"v1hup-{uuid.uuid4().hex[:8]}"
    cmd, env = _docker(dockerd)
    run = [c for c in cmd if c not in ("--rm", "-it")]
    script = "trap 'echo got-HUP' HUP; trap 'exit 7' TERM; echo up; while :; do sleep 0.1; done"
    d.run([*run, "-d", "--name", name, "-e", "ENCLAVE_TYPE=sim", "-e", f"ENCLAVE_RUNTIME_PATH={pal_libs[1]}", d.IMAGE,
           "sh", "-c", script], env=env)
    k = dockerd.docker
    try:
        deadline = time.monotonic() + 20
        while "up" not in k("logs", name).stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        k("kill", "-s", "HUP", name)
        while "got-HUP" not in k("logs", name).stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "got-HUP" in k("logs", name).stdout
        assert k("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
        k("stop", "-t", "10", name)
        assert k("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "7"
    finally:
        k("rm", "-f", name, check=False)
