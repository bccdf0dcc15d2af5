"""epm's pool of pre-initialised enclaves for PAL API v3 runtimes, handed to `rune create` as file descriptors.

A pooled enclave is what `pal_init`'s v3 `fd` names (the original: an SGX enclave fd that epm keeps after ECREATE,
EADD, EEXTEND and EINIT, mapped by rune at `addr`). Here, where no SGX enclave can be made, it is a sealed memfd of
`enclave_size` bytes, made and written in full by epm before anyone asks (its pages are allocated then), whose
first page is a header (`header`, below) naming the enclave runtime it was made for (`runtime_id`: the PAL library
file's st_dev, st_ino, st_ctime_ns and size, the measurement cache's argument for "this very file, unchanged") and
a nonce of its own. Each enclave is handed out once (PickEnclave takes it out of the pool, epm closes
its copy after sending it) and the pool refills in the background, up to `size` per runtime; the idle memory is
size x enclave_size x runtimes, bounded by `max_idle_bytes` at configuration.

Why the pool holds descriptors and not processes: a process cannot move itself into a PID namespace (setns with
CLONE_NEWPID moves only its future children), so no process made in advance can become a container's PID 1, and a
process forked by epm reports its exit to epm, not to the engine's shim. rune's create still forks the
init-runelet as for any container; what it takes from the pool is state the runelet would otherwise make.
"""

from __future__ import annotations

import os
import threading

MAGIC = b"EPMENCL1"
MEMFD_NAME = "epm-enclave"
HEADER_SIZE = 4096
# header layout: MAGIC (8) | enclave size, u64 little-endian (8) | runtime_id (32) | nonce (32)
_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL, SHRINK, GROW, WRITE
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
REFILL_DELAY = 0.05  # seconds without a pick before the pool refills


def header(size: int, runtime: bytes, nonce: bytes) -> bytes:
    return MAGIC + size.to_bytes(8, "little") + runtime + nonce


def runtime_id(path: str) -> bytes:
    """The PAL library at `path` (symlinks followed, as dlopen does): st_dev, st_ino, st_ctime_ns and st_size, 8 bytes
    each, little-endian. A library replaced or changed is another id (the kernel moves ctime at every change)."""
    st = os.stat(path)
    return b"".join(v.to_bytes(8, "little") for v in (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size))


def make_enclave(size: int, runtime: bytes) -> int:
    """A sealed memfd of `size` bytes: the header, then every page written (allocated now, not at first use)."""
    import fcntl

    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, header(size, runtime, os.urandom(32)).ljust(HEADER_SIZE, b"\0"))
        page = b"\0" * 65536
        left = size - HEADER_SIZE
        while left > 0:
            left -= os.write(fd, page[:min(left, len(page))])
        fcntl.fcntl(fd, F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Pool:
    """`size` pre-made enclaves for each runtime in `runtimes`, refilled by one background thread."""

    def __init__(self, runtimes: list[str], size: int, enclave_size: int) -> None:
        self.size = size
        self.enclave_size = enclave_size
        self.paths = list(runtimes)
        self.ready: dict[bytes, list[int]] = {}
        self.cond = threading.Condition()
        self.stopped = False
        self.stale = False  # a pick named a runtime id not known: stat the libraries again
        self.made = 0
        self.digests: dict[bytes, str] = {}
        for p in self.paths:
            try:
                self.digests[runtime_id(p)] = p
            except OSError:
                pass  # refill() tries again: the runtime may be installed later
        self.thread = threading.Thread(target=self._refill, name="epm-pool", daemon=True)
        if size:
            self.thread.start()

    def _rehash(self) -> None:
        """A runtime library replaced or changed since: its old enclaves go, new ones are made for the new file."""
        now: dict[bytes, str] = {}
        for p in self.paths:
            try:
                now[runtime_id(p)] = p
            except OSError:
                continue
        with self.cond:
            for d in [d for d in self.ready if d not in now]:
                for fd in self.ready.pop(d):
                    os.close(fd)
            self.digests = now

    def _refill(self) -> None:
        while True:
            with self.cond:
                while not self.stopped and not self.stale and \
                        all(len(self.ready.get(d, ())) >= self.size for d in self.digests):
                    if not self.cond.wait(30):
                        break  # every 30 s: a runtime library may have changed
                if self.stopped:
                    return
                stale, self.stale = self.stale, False
            if stale:
                self._rehash()
            # not while the enclave just picked is still being sent, nor between the picks of a burst of starts:
            # the refill waits for a quiet moment (the picks of a burst take what is ready, the rest start cold)
            with self.cond:
                while not self.stopped and self.cond.wait(REFILL_DELAY):
                    pass
                want = [d for d in self.digests if len(self.ready.get(d, ())) < self.size]
            for d in want:
                try:
                    fd = make_enclave(self.enclave_size, d)
                except OSError:
                    continue
                with self.cond:
                    if self.stopped:
                        os.close(fd)
                        return
                    self.ready.setdefault(d, []).append(fd)
                    self.made += 1
                    self.cond.notify_all()
            if not want:
                self._rehash()

    def pick(self, runtime: bytes) -> int | None:
        """One enclave made for `runtime` (the caller sends it and closes it), or None when none is ready."""
        with self.cond:
            fds = self.ready.get(runtime)
            fd = fds.pop(0) if fds else None
            if runtime not in self.digests:
                self.stale = True  # a library replaced or changed since it was looked at: look again
            self.cond.notify_all()  # refill
        return fd

    def wait_full(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(len(self.ready.get(d, ())) >= self.size for d in self.digests),
                                      timeout)

    def stats(self) -> dict:
        with self.cond:
            n = sum(len(v) for v in self.ready.values())
            return {"ready": n, "idle_bytes": n * self.enclave_size, "made": self.made}

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            for fds in self.ready.values():
                for fd in fds:
                    os.close(fd)
            self.ready.clear()
            self.cond.notify_all()
