"""EINITTOKEN (304 bytes): the launch token a Launch Enclave issues on hosts without Flexible Launch Control."""

from __future__ import annotations

from inclavare.tee.sgx.layout import Structure, raw, structure, u16, u32


@structure(304)
class EInitToken(Structure):
    valid: int = u32(0)
    attributes: bytes = raw(48, 16)
    mr_enclave: bytes = raw(64, 32)
    mr_signer: bytes = raw(128, 32)
    cpu_svn_le: bytes = raw(192, 16)
    isv_prod_id_le: int = u16(208)
    isv_svn_le: int = u16(210)
    masked_misc_select_le: int = u32(236)
    attributes_le: bytes = raw(240, 16)
    key_id: bytes = raw(256, 32)
    mac: bytes = raw(288, 16)
