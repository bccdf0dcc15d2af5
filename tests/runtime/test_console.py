"""process.terminal with --console-socket: the test listens on a unix socket, receives the pty master through
SCM_RIGHTS and reads what the container writes to its terminal."""

from __future__ import annotations

import os
import socket
import threading

from tests.conftest import new_id
from tests.runtime.test_lifecycle import wait_status


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the last slave fd closes
            break
        if not chunk:
            break
        out += chunk
    return out


def test_console_socket_receives_the_pty_master(rune, tmp_path):
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got: dict = {}

    def accept() -> None:
        conn, _ = srv.accept()
        with conn:
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
            got["msg"], got["fds"] = msg, fds

    t = threading.Thread(target=accept)
    t.start()

    def edit(c: dict) -> None:
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 111}

    b = rune.bundle(["sh", "-c", "tty; stty size; readlink /proc/self/fd/0; test -c /dev/console && echo console;"
                                 " echo hello"], edit=edit)  # fmt: skip
    cid = new_id()
    p = rune("create", "--bundle", str(b), "--console-socket", path, cid)
    t.join(10)
    srv.close()
    assert p.returncode == 0, p.stderr
    assert len(got["fds"]) == 1
    master = got["fds"][0]
    try:
        assert rune("start", cid).returncode == 0
        out = _read_all(master).decode().replace("\r\n", "\n")
    finally:
        os.close(master)
    assert wait_status(rune, cid, "stopped")["status"] == "stopped"
    assert rune("delete", cid).returncode == 0
    lines = out.splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[2] == lines[0]
    assert lines[1] == "33 111"
    assert lines[3:] == ["console", "hello"]


def test_console_socket_that_nobody_listens_on(rune, tmp_path):
    cid = new_id()
    b = rune.bundle(["true"], edit=lambda c: c["process"].update(terminal=True))
    p = rune("create", "--bundle", str(b), "--console-socket", str(tmp_path / "none.sock"), cid)
    assert p.returncode == 1
    assert p.stderr == f"--console-socket {tmp_path / 'none.sock'}: cannot connect: No such file or directory\n"
    assert not (rune.root / cid).exists()
