"""A pre-initialised enclave from epm's pool for a PAL API v3 runtime: pal_init's `fd` and `addr` (inclavare/epm/
pool.py makes them). rune takes one only after checking it, and otherwise calls pal_init cold (fd -1, addr 0):

  - it came as one file descriptor with epm's answer (SCM_RIGHTS, received close-on-exec, so no payload inherits it);
  - it is a memfd named epm-enclave, sealed against writing, growing, shrinking and further seals (F_GET_SEALS):
    nobody, epm included, can change it after rune has checked it;
  - its size is what epm said and at most MAX_SIZE; its header says EPMENCL1, that size, the id of the very PAL
    library file this runelet loaded (st_dev, st_ino, st_ctime_ns, size: an enclave made for another runtime, or
    for the library before it was replaced or changed, is not this one's), and a nonce that is not zero.
Then it is mapped private and read-only at an address of the kernel's choosing, and fd and address go to pal_init.
Each enclave is epm's only once (PickEnclave takes it out of the pool): no two containers get the same one.
"""

from __future__ import annotations

import os

MAGIC = b"EPMENCL1"  # inclavare.epm.pool.MAGIC
MEMFD_NAME = "epm-enclave"
MAX_SIZE = 1 << 30
_SEALS = 0x1 | 0x2 | 0x4 | 0x8
_F_GET_SEALS = 1034


def runtime_id(path: str) -> bytes:
    """inclavare.epm.pool.runtime_id: no hashing on the launch path."""
    st = os.stat(path)
    return b"".join(v.to_bytes(8, "little") for v in (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size))


def check(fd: int, size: object, runtime: bytes) -> str:
    """Why the enclave `fd` is not one to use, or ""."""
    import fcntl

    if not isinstance(size, int) or isinstance(size, bool) or not 4096 < size <= MAX_SIZE:
        return f"its size {size!r} is not one rune maps"
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
        head = os.pread(fd, 80, 0)
    except OSError as e:
        return f"it cannot be inspected ({e.strerror})"
    if not name.startswith(f"/memfd:{MEMFD_NAME}"):
        return f"it is not epm's memfd ({name})"
    if seals & _SEALS != _SEALS:
        return f"it is not sealed (seals 0x{seals:x})"
    if st.st_size != size:
        return f"it holds {st.st_size} bytes, not the {size} epm announced"
    if head[:8] != MAGIC or int.from_bytes(head[8:16], "little") != size:
        return "its header is not a pre-initialised enclave's"
    if head[16:48] != runtime:
        return "it was made for another enclave runtime"
    if head[48:80] == bytes(32):
        return "it has no nonce of its own"
    return ""


def _mmap(fd: int, size: int) -> int:
    from inclavare.linux import syscalls

    return syscalls.mmap(fd, size, 1, 2)  # PROT_READ, MAP_PRIVATE


def take(session, pal_path: str) -> tuple[int, int] | None:  # noqa: ANN001 - epm_client.Session
    """(fd, addr) of a checked pre-initialised enclave for the PAL library at `pal_path`, or None (debug line)."""
    from inclavare.enclave import epm_client

    try:
        runtime = runtime_id(pal_path)
    except OSError:
        return None
    try:
        resp, fds = session.call_fds({"op": "PickEnclave", "runtime": runtime.hex()})
    except epm_client.EpmError as e:
        epm_client.debug(f"{e}: pal_init without a pre-initialised enclave")
        return None
    enclave = resp.get("enclave")
    why = ""
    if not isinstance(enclave, dict):
        why = "epm has no pre-initialised enclave ready for it"
    elif len(fds) != 1:
        why = f"epm's answer carried {len(fds)} file descriptors, not one"
    else:
        bad = check(fds[0], enclave.get("size"), runtime)
        if bad:
            why = f"epm's pre-initialised enclave is not used: {bad}"
    if why:
        for fd in fds:
            os.close(fd)
        epm_client.debug(f"{why}; pal_init of {pal_path} starts it cold")
        return None
    fd = fds[0]
    try:
        addr = _mmap(fd, enclave["size"])
    except OSError as e:
        os.close(fd)
        epm_client.debug(f"epm's pre-initialised enclave cannot be mapped ({e.strerror}); pal_init starts cold")
        return None
    epm_client.debug(f"pal_init of {pal_path} gets epm's pre-initialised enclave (fd {fd}, addr 0x{addr:x})")
    return fd, addr
