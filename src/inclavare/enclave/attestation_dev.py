"""/dev/attestation inside a `sim` enclave container: Gramine's pseudo-files, served by the init-runelet, usable
from any language with plain file I/O (busybox `dd` and `cat` included).

    attestation_type      "dcap" (the quote has the DCAP quote v3 layout; it is marked SIMULATED inside)
    my_target_info        512 bytes: this enclave's TARGETINFO
    target_info           write 512 bytes: the enclave `report` is made for (initially zeros)
    user_report_data      write up to 64 bytes (zero-padded): the report_data of the next report or quote
    report                read: a 432-byte REPORT over user_report_data for target_info
    quote                 read: a sim quote v3 over user_report_data
    keys/_sgx_mrenclave   16 bytes: sealing key bound to MRENCLAVE
    keys/_sgx_mrsigner    16 bytes: sealing key bound to MRSIGNER

Mechanism (no FUSE): the directory is a small tmpfs the runelet mounts at create. `report` and `quote` are named
pipes, each with a thread of the runelet blocked opening it for writing: a payload that opens one to read meets that
open at once; the thread puts a fresh pipe in place for the next reader, reads user_report_data (and target_info) as
they are at that moment, writes the evidence and closes its end, so the reader gets exactly one report or quote and
then end-of-file. Write user_report_data (and close it) before opening `quote`; readers of one pipe are served one at
a time, so concurrent readers of the same pipe must take turns (as they must with Gramine's per-process files), and
a reader must open without O_NONBLOCK (which meets no writer and reads end-of-file at once). Threads rather than
inotify from the main loop: an inotify instance costs its process a wait for the kernel (synchronize_srcu, 10-20 ms
measured here) when it is closed at the container's exit, which `rune run` and `docker run --rm` wait for.
"""

from __future__ import annotations

import os
import stat

REPORT_DATA_SIZE = 64
TARGET_INFO_SIZE = 512


class AttestationDev:
    def __init__(self, rootfs: str, uid: int, gid: int) -> None:
        self.rootfs = rootfs  # before pivot_root
        self.dir = "/dev/attestation"  # the path after
        self.uid, self.gid = uid, gid
        self.stopped = False

    def mount(self) -> None:
        """Before pivot_root, privileged: a tmpfs at /dev/attestation of the rootfs, owned by the container's user,
        made and mounted through directory fds (an image whose /dev is a symlink resolves inside the rootfs)."""
        from inclavare.linux import syscalls
        from inclavare.linux.securejoin import secure_join
        from inclavare.runtime.rootfs import Target

        t = Target(self.rootfs, secure_join(self.rootfs, self.dir), "dir")
        try:
            syscalls.mount("tmpfs", t.proc, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
                           f"size=1m,mode=0755,uid={self.uid},gid={self.gid}")
        finally:
            t.close()

    def start(self, report, quote, seal_keys: dict[str, bytes], my_target_info: bytes) -> None:
        """After pivot_root: create the files and serve `report` and `quote` (callables of report_data[, ti]), each
        from a thread of its own."""
        import _thread

        d = self.dir
        os.makedirs(f"{d}/keys", 0o755, exist_ok=True)
        _write(f"{d}/attestation_type", b"dcap", 0o444)
        _write(f"{d}/my_target_info", my_target_info, 0o444)
        _write(f"{d}/target_info", bytes(TARGET_INFO_SIZE), 0o644)
        _write(f"{d}/user_report_data", bytes(REPORT_DATA_SIZE), 0o644)
        for name, key in seal_keys.items():
            _write(f"{d}/keys/{name}", key, 0o400)
        pipes = {
            f"{d}/report": lambda: report(self._read("user_report_data", REPORT_DATA_SIZE),
                                          self._read("target_info", TARGET_INFO_SIZE)),
            f"{d}/quote": lambda: quote(self._read("user_report_data", REPORT_DATA_SIZE)),
        }
        for path in pipes:
            _arm(path)  # both in place before the payload starts
        for path, make in pipes.items():
            _thread.start_new_thread(self._serve, (path, make))

    def _serve(self, path: str, make) -> None:  # noqa: ANN001
        """Meet each reader of `path` (blocked in open until one comes) with one piece of evidence."""
        while not self.stopped:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except InterruptedError:
                continue
            except OSError:  # the payload removed or replaced it (its own directory): a fresh pipe
                fd = -1
            try:
                if fd >= 0 and not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.close(fd)
                    fd = -1
                _arm(path)  # the next reader opens a pipe of its own
                if fd >= 0 and not self.stopped:
                    os.write(fd, make())  # the evidence fits the pipe's buffer (a quote is a few KiB)
            except BrokenPipeError:
                pass  # the reader closed before the evidence came: nothing to tell it
            except Exception as e:  # noqa: BLE001 - a failed quote: the reader gets end-of-file, the next is served
                try:
                    os.write(2, f"rune: /dev/attestation: {path}: {e}\n".encode())
                except OSError:
                    pass
                if fd < 0:
                    return  # cannot even make a pipe: stop serving this file
            finally:
                if fd >= 0:
                    os.close(fd)  # the reader sees end-of-file after the evidence

    def _read(self, name: str, size: int) -> bytes:
        try:
            with open(f"{self.dir}/{name}", "rb") as f:
                data = f.read(size)
        except OSError:
            data = b""
        return data.ljust(size, b"\0")


def _arm(path: str) -> None:
    """A fresh named pipe at `path`."""
    tmp = f"{path}.next"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.mkfifo(tmp, 0o644)
    os.rename(tmp, path)


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
