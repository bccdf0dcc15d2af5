"""What a launched sim enclave's runelet keeps for its whole life to answer for the enclave: EREPORT for any target,
the sim QE's quote, the sealing keys. Made once at launch by the launch check (from the platform's files, in a
short-lived process), then used with inclavare.tee.openssl alone, so no process of the launch holds `cryptography`,
and the long-lived one holds neither the platform's PCK key nor its CAs.

It holds: the report body of the enclave (report_data aside), the platform secret (a REPORT's MAC key derives from
it and the target's identity, as in SGX) and CPUSVN, the quoting key (DER), a quote's fixed parts (header, and the
QE report signed by the PCK key over the attestation key and a QE auth data drawn at launch), this enclave's sealing
keys and TARGETINFO. Offsets are those of inclavare.tee.sgx.report and .quote (REPORT: body 0-384, key_id, mac;
TARGETINFO: mr_enclave 0, attributes 32, config_svn 50, misc_select 52, config_id 64; quote: header 48 bytes, body,
u32 signature data length, ISV signature 64 bytes, the rest); the sim construction is ereport's and qe's, which
tests check byte for byte.
"""

from __future__ import annotations

import os
import struct

from inclavare.tee.sha256 import hkdf_sha256  # here, not in report(): PID 1 reports after pivot_root

REPORT_DATA_OFFSET = 320


class Evidence:
    FIELDS = ("body", "secret", "cpu_svn", "quoting_key", "quote_header", "quote_tail", "target_info",
              "seal_mrenclave", "seal_mrsigner")

    def __init__(self, **fields: bytes) -> None:
        for name in self.FIELDS:
            setattr(self, name, fields[name])

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name).hex() for name in self.FIELDS}

    @classmethod
    def from_json(cls, obj: dict) -> Evidence:
        return cls(**{name: bytes.fromhex(obj[name]) for name in cls.FIELDS})

    def _body(self, report_data: bytes) -> bytes:
        if len(report_data) > 64:
            raise ValueError("report_data is at most 64 bytes")
        return self.body[:REPORT_DATA_OFFSET] + report_data.ljust(64, b"\0")

    def report(self, lib, target_info: bytes, report_data: bytes = b"") -> bytes:  # noqa: ANN001 - LibCrypto
        """A REPORT (432 bytes) of the enclave for the enclave `target_info` (512 bytes) designates."""
        if len(target_info) != 512:
            raise ValueError(f"a TARGETINFO is 512 bytes, got {len(target_info)}")
        ti = target_info
        config_svn, misc_select = struct.unpack_from("<HI", ti, 50)
        info = b"".join([b"inclavare-sim REPORT v1", ti[0:32], ti[32:48], struct.pack("<IH", misc_select, config_svn),
                         ti[64:128], self.cpu_svn])
        key_id = os.urandom(32)
        body = self._body(report_data)
        return body + key_id + lib.cmac_aes128(hkdf_sha256(self.secret, key_id, info), body)

    def quote(self, lib, report_data: bytes = b"") -> bytes:  # noqa: ANN001 - LibCrypto
        """A sim quote v3 of the enclave over report_data."""
        signed = self.quote_header + self._body(report_data)
        sig = lib.ecdsa_p256_sign(self.quoting_key, signed)
        rest = sig + self.quote_tail
        return signed + struct.pack("<I", len(rest)) + rest


def make(platform, identity) -> Evidence:  # noqa: ANN001 - PlatformKeys (or a Platform), EnclaveIdentity
    """At launch: the evidence material of the enclave `identity`, from the platform's files alone (no quote is made
    and nothing is signed here; the quote's enclave-independent parts come from the platform's quote template)."""
    from inclavare.tee.sim import ereport
    from inclavare.tee.sim.platform import PlatformKeys, load_keys

    keys = platform if isinstance(platform, PlatformKeys) else load_keys(platform.directory)
    body = identity.report_body(keys.cpu_svn, b"").to_bytes()
    return Evidence(body=body, secret=keys.secret, cpu_svn=keys.cpu_svn, quoting_key=keys.quoting_key_der,
                    quote_header=keys.quote_template[:48], quote_tail=keys.quote_template[48:],
                    target_info=identity.target_info().to_bytes(),
                    seal_mrenclave=ereport.seal_key(keys, identity, "mrenclave"),
                    seal_mrsigner=ereport.seal_key(keys, identity, "mrsigner"))
