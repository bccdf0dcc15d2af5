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

Mechanism (no FUSE, no thread): the directory is a small tmpfs the runelet mounts at create. `report` and `quote`
are named pipes that the runelet holds open read-write, watched with inotify (IN_OPEN) from its main loop: a payload
that opens one to read gets through at once and blocks reading; the runelet then reads user_report_data (and
target_info) as they are at that moment, writes the evidence, puts a fresh pipe in place for the next reader and
closes its end, so the reader gets exactly one report or quote and then end-of-file. Write user_report_data (and close
it) before opening `quote`; readers of one pipe are served one at a time, so concurrent readers of the same pipe must
take turns (as they must with Gramine's per-process files).
"""

from __future__ import annotations

import ctypes
import os
import struct

REPORT_DATA_SIZE = 64
TARGET_INFO_SIZE = 512
IN_OPEN = 0x20
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class AttestationDev:
    def __init__(self, rootfs: str, uid: int, gid: int) -> None:
        self.rootfs = rootfs  # before pivot_root
        self.dir = "/dev/attestation"  # the path after
        self.uid, self.gid = uid, gid
        self.stopped = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._inotify = -1
        self._watches: dict[int, tuple[str, int, object]] = {}  # wd -> (path, our read-write fd, make)

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
        """After pivot_root: create the files and serve `report` and `quote` (callables of report_data[, ti]) from
        the caller's loop (fileno, on_ready)."""
        d = self.dir
        os.makedirs(f"{d}/keys", 0o755, exist_ok=True)
        _write(f"{d}/attestation_type", b"dcap", 0o444)
        _write(f"{d}/my_target_info", my_target_info, 0o444)
        _write(f"{d}/target_info", bytes(TARGET_INFO_SIZE), 0o644)
        _write(f"{d}/user_report_data", bytes(REPORT_DATA_SIZE), 0o644)
        for name, key in seal_keys.items():
            _write(f"{d}/keys/{name}", key, 0o400)
        self._inotify = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._arm(f"{d}/report", lambda: report(self._read("user_report_data", REPORT_DATA_SIZE),
                                                self._read("target_info", TARGET_INFO_SIZE)))
        self._arm(f"{d}/quote", lambda: quote(self._read("user_report_data", REPORT_DATA_SIZE)))

    def fileno(self) -> int:
        return self._inotify

    def _arm(self, path: str, make) -> None:  # noqa: ANN001
        """A fresh pipe at `path`, held open read-write (a reader's open returns at once) and watched for opens."""
        tmp = f"{path}.next"
        os.mkfifo(tmp, 0o644)
        fd = os.open(tmp, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        wd = self._libc.inotify_add_watch(self._inotify, os.fsencode(tmp), IN_OPEN)
        if wd < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {tmp} failed")
        os.rename(tmp, path)
        self._watches[wd] = (path, fd, make)

    def on_ready(self) -> None:
        """Serve the pipes that were opened since the last call."""
        try:
            data = os.read(self._inotify, 4096)
        except BlockingIOError:
            return
        opened: list[int] = []
        off = 0
        while off + _EVENT.size <= len(data):
            wd, mask, _cookie, n = _EVENT.unpack_from(data, off)
            off += _EVENT.size + n
            if mask & IN_OPEN and wd in self._watches and wd not in opened:
                opened.append(wd)
        for wd in opened:
            path, fd, make = self._watches.pop(wd)
            try:
                if not self.stopped:
                    os.write(fd, make())  # the evidence fits the pipe's buffer (a quote is a few KiB)
            except Exception as e:  # noqa: BLE001 - a failed quote: the reader gets end-of-file, the next is served
                try:
                    os.write(2, f"rune: /dev/attestation: {path}: {e}\n".encode())
                except OSError:
                    pass
            finally:
                try:
                    self._arm(path, make)
                finally:
                    os.close(fd)  # the reader sees end-of-file after the evidence
                    self._libc.inotify_rm_watch(self._inotify, wd)

    def _read(self, name: str, size: int) -> bytes:
        try:
            with open(f"{self.dir}/{name}", "rb") as f:
                data = f.read(size)
        except OSError:
            data = b""
        return data.ljust(size, b"\0")


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
