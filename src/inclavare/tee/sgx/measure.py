"""MRENCLAVE: the SGX measurement, one SHA-256 over 64-byte records in the order the enclave is built.

ECREATE  "ECREATE\\0" || u32 SSA frame size (pages) || u64 enclave size || 44 zero bytes
EADD     "EADD\\0\\0\\0\\0" || u64 page offset || SECINFO flags (first 48 bytes of SECINFO)
EEXTEND  "EEXTEND\\0" || u64 chunk offset || 48 zero bytes, then the 256 bytes of the chunk
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # collections.abc for an annotation only would cost a sim enclave's launch
if TYPE_CHECKING:
    from collections.abc import Iterable

PAGE_SIZE = 4096
CHUNK_SIZE = 256

# SECINFO.FLAGS
SECINFO_R = 0x01
SECINFO_W = 0x02
SECINFO_X = 0x04
PT_SECS = 0
PT_TCS = 1
PT_REG = 2
PT_VA = 3
PT_TRIM = 4
SECINFO_TCS = PT_TCS << 8
SECINFO_REG = PT_REG << 8
SECINFO_RWX_REG = SECINFO_REG | SECINFO_R | SECINFO_W | SECINFO_X


class MeasurementError(ValueError):
    """An enclave build step SGX would refuse."""


class Measurement:
    """A running MRENCLAVE. Call ecreate once, then eadd/eextend (or add_page) per page, then digest()."""

    def __init__(self) -> None:
        import hashlib  # a measurement is computed where files are read (sgx-tools, a cold launch)

        self._h = hashlib.sha256()
        self._size = 0
        self._created = False
        self._pages: set[int] = set()

    def ecreate(self, ssa_frame_size: int, enclave_size: int) -> None:
        if self._created:
            raise MeasurementError("ECREATE was already done for this enclave")
        if enclave_size < PAGE_SIZE or enclave_size & (enclave_size - 1):
            raise MeasurementError(f"the enclave size 0x{enclave_size:x} is not a power of two of at least one page")
        if ssa_frame_size < 1:
            raise MeasurementError("the SSA frame size must be at least one page")
        self._h.update(struct.pack("<8sIQ44x", b"ECREATE", ssa_frame_size, enclave_size))
        self._size = enclave_size
        self._created = True

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        if not self._created:
            raise MeasurementError("EADD before ECREATE")
        if offset % PAGE_SIZE or not 0 <= offset < self._size:
            raise MeasurementError(f"page offset 0x{offset:x} is not a page inside the 0x{self._size:x}-byte enclave")
        if offset in self._pages:
            raise MeasurementError(f"page 0x{offset:x} was already added")
        self._pages.add(offset)
        self._h.update(struct.pack("<8sQQ40x", b"EADD", offset, secinfo_flags))

    def eextend(self, offset: int, chunk: bytes) -> None:
        if len(chunk) != CHUNK_SIZE or offset % CHUNK_SIZE:
            raise MeasurementError("EEXTEND measures one aligned 256-byte chunk")
        if offset - offset % PAGE_SIZE not in self._pages:
            raise MeasurementError(f"EEXTEND of 0x{offset:x} outside an added page")
        self._h.update(struct.pack("<8sQ48x", b"EEXTEND", offset) + chunk)

    def add_page(self, offset: int, data: bytes, secinfo_flags: int, measured: bool = True) -> None:
        """EADD one page (data zero-padded to 4096 bytes) and, if measured, EEXTEND all 16 chunks of it."""
        if len(data) > PAGE_SIZE:
            raise MeasurementError("a page holds at most 4096 bytes")
        self.eadd(offset, secinfo_flags)
        if measured:
            page = data.ljust(PAGE_SIZE, b"\0")
            records = b"".join(
                struct.pack("<8sQ48x", b"EEXTEND", offset + i) + page[i : i + CHUNK_SIZE]
                for i in range(0, PAGE_SIZE, CHUNK_SIZE)
            )
            self._h.update(records)

    def add_pages(self, offset: int, data: bytes, secinfo_flags: int) -> int:
        """Add and fully measure `data` as consecutive pages from `offset`; return the offset after the last page."""
        for i in range(0, max(len(data), 1), PAGE_SIZE):
            self.add_page(offset, data[i : i + PAGE_SIZE], secinfo_flags)
            offset += PAGE_SIZE
        return offset

    def digest(self) -> bytes:
        if not self._created:
            raise MeasurementError("no ECREATE, nothing measured")
        return self._h.copy().digest()


def measure_flat(image: bytes, enclave_size: int, ssa_frame_size: int, tcs_pages: Iterable[int],
                 regular_flags: int = SECINFO_RWX_REG) -> bytes:
    """MRENCLAVE of a flat image loaded at offset 0: pages listed in tcs_pages (page numbers) are TCS pages,
    the others regular pages with `regular_flags`; every page fully measured."""
    if len(image) % PAGE_SIZE:
        image = image.ljust(len(image) + PAGE_SIZE - len(image) % PAGE_SIZE, b"\0")
    if len(image) > enclave_size:
        raise MeasurementError(f"the image (0x{len(image):x} bytes) is larger than the enclave (0x{enclave_size:x})")
    tcs = set(tcs_pages)
    pages = len(image) // PAGE_SIZE
    bad = [p for p in tcs if not 0 <= p < pages]
    if bad:
        raise MeasurementError(f"TCS page {bad[0]} is not a page of the {pages}-page image")
    m = Measurement()
    m.ecreate(ssa_frame_size, enclave_size)
    for p in range(pages):
        m.add_page(p * PAGE_SIZE, image[p * PAGE_SIZE : (p + 1) * PAGE_SIZE], SECINFO_TCS if p in tcs else regular_flags)
    return m.digest()
