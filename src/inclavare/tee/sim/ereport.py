"""EREPORT and EGETKEY for sim enclaves.

Keys (EGETKEY): 16 bytes = HKDF-SHA256(ikm = platform secret, salt = KEYREQUEST.KEYID,
info = "inclavare-sim EGETKEY v1" || KEYNAME u16 || KEYPOLICY u16 || MRENCLAVE or 32 zero bytes (policy bit
MRENCLAVE) || MRSIGNER or zeros (policy bit MRSIGNER) || ISVPRODID u16 (zero with NOISVPRODID) || ISVSVN u16 (the
requested one) || CPUSVN 16 (the requested one) || ATTRIBUTES & ATTRIBUTEMASK || ATTRIBUTEMASK || MISCSELECT & MISCMASK
|| MISCMASK || CONFIGID or zeros || CONFIGSVN || ISVFAMILYID or zeros || ISVEXTPRODID or zeros). As in SGX, a request
for an ISVSVN or CPUSVN above the enclave's own is refused, so keys of older versions stay reachable and newer ones do
not. The REPORT key always binds the requesting enclave's MRENCLAVE, attributes, MISCSELECT and CONFIG (the fields of
a TARGETINFO).

REPORT MAC: AES-128-CMAC over the 384-byte report body, keyed with the REPORT key of the *target* enclave for the
report's KEYID, exactly SGX's construction; the target checks it with its own REPORT key.
"""

from __future__ import annotations

import os
import struct

from inclavare.errors import RuneError
from inclavare.tee.sgx import attributes as attr
from inclavare.tee.sgx import report as r
from inclavare.tee.sgx.attributes import Attributes
from inclavare.tee.sgx.report import KeyRequest, Report, ReportBody, TargetInfo
from inclavare.tee.sim.identity import EnclaveIdentity

TYPE_CHECKING = False  # importing typing costs a sim enclave start
if TYPE_CHECKING:
    from inclavare.tee.sim.platform import Platform

ALL_ONES_16 = b"\xff" * 16


def _svn_above(requested: bytes, have: bytes) -> bool:
    return any(a > b for a, b in zip(requested, have, strict=True))


_lib: list = []  # inclavare.tee.openssl.LibCrypto once loaded, or None where libcrypto 3 is missing


def _libcrypto():  # noqa: ANN202 - LibCrypto | None
    """libcrypto through ctypes (no `cryptography` import) when the host has OpenSSL 3, else None."""
    if not _lib:
        from inclavare.tee import openssl

        try:
            _lib.append(openssl.load())
        except (OSError, AttributeError):
            _lib.append(None)
    return _lib[0]


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    # neither libcrypto nor `cryptography`: the launch derives the sealing keys with this
    from inclavare.tee.sha256 import hkdf_sha256

    return hkdf_sha256(secret, salt, info)


def egetkey(platform: Platform, enclave: EnclaveIdentity, req: KeyRequest) -> bytes:
    """The 128-bit key `req` asks for, as the enclave `enclave` on `platform`."""
    if req.key_name == r.REPORT_KEY:
        return _report_key(platform, enclave.target_info(), req.key_id)
    if req.key_name == r.EINITTOKEN_KEY and not enclave.attributes.flags & attr.EINITTOKEN_KEY:
        raise RuneError("EGETKEY refused: the EINITTOKEN key needs the EINITTOKEN_KEY attribute")
    if req.key_name in (r.PROVISION_KEY, r.PROVISION_SEAL_KEY) and not enclave.attributes.flags & attr.PROVISION_KEY:
        raise RuneError("EGETKEY refused: provisioning keys need the PROVISION_KEY attribute")
    if req.key_name not in (r.EINITTOKEN_KEY, r.PROVISION_KEY, r.PROVISION_SEAL_KEY, r.SEAL_KEY):
        raise RuneError(f"EGETKEY refused: unknown key name {req.key_name}")
    if req.isv_svn > enclave.isv_svn:
        raise RuneError(f"EGETKEY refused: ISVSVN {req.isv_svn} is above the enclave's {enclave.isv_svn}")
    if _svn_above(req.cpu_svn, platform.cpu_svn):
        raise RuneError("EGETKEY refused: the requested CPUSVN is above the platform's")
    if req.config_svn > enclave.config_svn:
        raise RuneError(f"EGETKEY refused: CONFIGSVN {req.config_svn} is above the enclave's {enclave.config_svn}")
    p = req.key_policy
    mask = Attributes.from_bytes(req.attribute_mask)
    info = b"".join([
        b"inclavare-sim EGETKEY v1",
        struct.pack("<HH", req.key_name, p),
        enclave.mr_enclave if p & r.KEYPOLICY_MRENCLAVE else bytes(32),
        enclave.mr_signer if p & r.KEYPOLICY_MRSIGNER else bytes(32),
        struct.pack("<HH", 0 if p & r.KEYPOLICY_NOISVPRODID else enclave.isv_prod_id, req.isv_svn),
        req.cpu_svn,
        (enclave.attributes & mask).to_bytes(), req.attribute_mask,
        struct.pack("<II", enclave.misc_select & req.misc_mask, req.misc_mask),
        enclave.config_id if p & r.KEYPOLICY_CONFIGID else bytes(64),
        struct.pack("<H", req.config_svn),
        enclave.isv_family_id if p & r.KEYPOLICY_ISVFAMILYID else bytes(16),
        enclave.isv_ext_prod_id if p & r.KEYPOLICY_ISVEXTPRODID else bytes(16),
    ])
    return _hkdf(platform.secret, req.key_id, info)


def _report_key(platform: Platform, target: TargetInfo, key_id: bytes) -> bytes:
    info = b"".join([b"inclavare-sim REPORT v1", target.mr_enclave, target.attributes,
                     struct.pack("<IH", target.misc_select, target.config_svn), target.config_id, platform.cpu_svn])
    return _hkdf(platform.secret, key_id, info)


def _cmac(key: bytes, data: bytes) -> bytes:
    lib = _libcrypto()
    if lib is not None:
        return lib.cmac_aes128(key, data)
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def ereport(platform: Platform, enclave: EnclaveIdentity, target: TargetInfo, report_data: bytes) -> Report:
    """A REPORT of `enclave` for `target`, carrying `report_data` (<= 64 bytes)."""
    body = enclave.report_body(platform.cpu_svn, report_data).to_bytes()
    key_id = os.urandom(32)
    return Report(body=body, key_id=key_id, mac=_cmac(_report_key(platform, target, key_id), body))


def verify_report(platform: Platform, report: Report | bytes, me: TargetInfo) -> ReportBody:
    """Check, as the target enclave `me`, that the REPORT was made on this platform for it; return its body."""
    import hmac  # here: hmac imports warnings, which a launch (it makes reports, never verifies one) does not need

    rep = report if isinstance(report, Report) else Report.from_bytes(report, strict=False)
    expected = _cmac(_report_key(platform, me, rep.key_id), rep.body)
    if not hmac.compare_digest(expected, rep.mac):
        raise RuneError("the REPORT's MAC does not verify: it was not made on this sim platform for this target enclave")
    return ReportBody.from_bytes(rep.body, strict=False)


def seal_key(platform: Platform, enclave: EnclaveIdentity, policy: str = "mrenclave",
             key_id: bytes = bytes(32)) -> bytes:
    """A sealing key bound to MRENCLAVE ('mrenclave') or MRSIGNER ('mrsigner'), for the enclave's own ISVSVN."""
    bits = {"mrenclave": r.KEYPOLICY_MRENCLAVE, "mrsigner": r.KEYPOLICY_MRSIGNER}
    if policy not in bits:
        raise RuneError(f"unknown sealing policy '{policy}': use 'mrenclave' or 'mrsigner'")
    mask = Attributes(0xFF0000000000000B, 0).to_bytes()  # Intel SDK's default: INITTED, DEBUG, MODE64BIT, reserved
    req = KeyRequest(key_name=r.SEAL_KEY, key_policy=bits[policy], isv_svn=enclave.isv_svn,
                     cpu_svn=platform.cpu_svn, attribute_mask=mask, key_id=key_id, misc_mask=0xF0000000)
    return egetkey(platform, enclave, req)
