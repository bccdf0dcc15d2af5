"""SECS.ATTRIBUTES: flags (u64) then xfrm (u64), 16 bytes, as in Intel's sgx_attributes_t."""

from __future__ import annotations

from inclavare.tee import records

INITTED = 0x01
DEBUG = 0x02
MODE64BIT = 0x04
PROVISION_KEY = 0x10
EINITTOKEN_KEY = 0x20
KSS = 0x80

FLAG_NAMES = {INITTED: "INITTED", DEBUG: "DEBUG", MODE64BIT: "MODE64BIT", PROVISION_KEY: "PROVISION_KEY",
              EINITTOKEN_KEY: "EINITTOKEN_KEY", KSS: "KSS"}

XFRM_LEGACY = 0x03  # x87 and SSE state, the minimum every enclave has


@records.record
class Attributes:
    flags: int = MODE64BIT
    xfrm: int = XFRM_LEGACY

    SIZE = 16

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        if len(data) != 16:
            raise ValueError(f"attributes are 16 bytes, got {len(data)}")
        return cls(int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little"))

    def to_bytes(self) -> bytes:
        return self.flags.to_bytes(8, "little") + self.xfrm.to_bytes(8, "little")

    def __and__(self, mask: Attributes) -> Attributes:
        return Attributes(self.flags & mask.flags, self.xfrm & mask.xfrm)

    def describe(self) -> str:
        names = [name for bit, name in FLAG_NAMES.items() if self.flags & bit]
        other = self.flags & ~sum(FLAG_NAMES)
        if other:
            names.append(f"0x{other:x}")
        return f"flags=0x{self.flags:x} ({'|'.join(names) or 'none'}) xfrm=0x{self.xfrm:x}"
