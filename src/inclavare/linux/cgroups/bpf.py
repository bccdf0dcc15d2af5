"""The few bpf(2) commands the device program needs, through ctypes (imported only when a v2 device filter is set)."""

from __future__ import annotations

import ctypes
import os
import struct

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "ppc64": 361, "s390x": 351,
           "i686": 357, "i386": 357, "armv7l": 386, "loongarch64": 280}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_ATTR_SIZE = 128  # larger than every struct used below; the kernel wants the tail zero
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_log = ctypes.create_string_buffer(0)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(38, os.strerror(38))  # ENOSYS: an architecture this table does not know
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), attr, ctypes.c_ulong(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def prog_load(insns: bytes) -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd. On failure the verifier log is in last_log()."""
    global _log
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name
    struct.pack_into("=IIQQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                     ctypes.addressof(code), ctypes.addressof(license_))
    struct.pack_into("=16s", attr, 48, b"rune_devices")
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError:
        # Again with the verifier's log, to say why.
        _log = ctypes.create_string_buffer(16384)
        struct.pack_into("=IIQ", attr, 24, 1, len(_log), ctypes.addressof(_log))
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError:
            pass
        raise


def last_log() -> str:
    return _log.value.decode(errors="replace").strip().replace("\n", "; ")[-300:]


def prog_attach(cgroup_fd: int, prog_fd: int) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # target_fd, attach_bpf_fd, attach_type, attach_flags
    struct.pack_into("=IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
    _bpf(BPF_PROG_ATTACH, attr)


def query_device_progs(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached directly to the cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
    struct.pack_into("=IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64)
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("=I", attr, 24)[0]
    return list(ids[:count])


def detach_by_id(cgroup_fd: int, prog_id: int) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=I", attr, 0, prog_id)
    prog_fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    try:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=III", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)
        _bpf(BPF_PROG_DETACH, attr)
    finally:
        os.close(prog_fd)
