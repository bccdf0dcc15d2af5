"""SIGSTRUCT (1808 bytes, Intel's enclave_css_t): layout, signing and verification.

The signature is RSA-3072 with public exponent 3, PKCS#1 v1.5 over SHA-256 of bytes [0:128] || [900:1028] (the
header and the body); modulus, signature, q1 and q2 are stored little-endian. q1 and q2 let the CPU check the
signature without a division: q1 = floor(s^2 / n), q2 = floor((s^3 - q1 * s * n) / n). MRSIGNER is SHA-256 of the
modulus as its 384 little-endian bytes.

Verification is a modular cube (pow(s, 3, n)) compared with the PKCS#1 v1.5 encoding of the SHA-256 digest, as the
CPU does it: no library, so a launch check loads no `cryptography`; keys and signing load it when first used.
"""

from __future__ import annotations

from inclavare.tee.sgx.layout import FormatError, Structure, raw, structure, u16, u32
from inclavare.tee.sha256 import sha256

HEADER = bytes.fromhex("06000000e10000000000010000000000")[:12]
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
MODULUS_SIZE = 384
EXPONENT = 3
TYPE_DEBUG_LAUNCH = 1 << 31  # SIGSTRUCT.TYPE bit 31: a debug-launch (pre-production) signature
VENDOR_INTEL = 0x8086
# DER of DigestInfo{sha256, NULL} up to the digest: what EMSA-PKCS1-v1_5 puts before a SHA-256 hash (RFC 8017 9.2)
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

TYPE_CHECKING = False  # importing typing costs a sim enclave start
if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import rsa


class SigstructError(ValueError):
    """A SIGSTRUCT that is malformed or whose signature does not hold."""


@structure(1808)
class Sigstruct(Structure):
    header: bytes = raw(0, 12, HEADER)
    type: int = u32(12)
    module_vendor: int = u32(16)
    date: int = u32(20)
    header2: bytes = raw(24, 16, HEADER2)
    hw_version: int = u32(40)
    modulus: bytes = raw(128, MODULUS_SIZE)
    exponent: int = u32(512)
    signature: bytes = raw(516, MODULUS_SIZE)
    misc_select: int = u32(900)
    misc_mask: int = u32(904)
    isv_family_id: bytes = raw(912, 16)
    attributes: bytes = raw(928, 16)
    attribute_mask: bytes = raw(944, 16)
    enclave_hash: bytes = raw(960, 32)
    isvext_prod_id: bytes = raw(1008, 16)
    isv_prod_id: int = u16(1024)
    isv_svn: int = u16(1026)
    q1: bytes = raw(1040, MODULUS_SIZE)
    q2: bytes = raw(1424, MODULUS_SIZE)

    def signed_bytes(self) -> bytes:
        """The bytes the RSA signature covers: header [0:128] and body [900:1028]."""
        data = self.to_bytes()
        return data[0:128] + data[900:1028]

    @property
    def mr_signer(self) -> bytes:
        return mr_signer(self.modulus)


def mr_signer(modulus_le: bytes) -> bytes:
    """MRSIGNER: SHA-256 of the signer's modulus as 384 little-endian bytes."""
    return sha256(modulus_le).digest()


def bcd_date(day: datetime.date) -> int:
    """SIGSTRUCT.DATE: yyyymmdd in BCD, e.g. 2024-01-31 -> 0x20240131."""
    return int(f"{day.year:04d}{day.month:02d}{day.day:02d}", 16)


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A new enclave signing key: RSA-3072 with public exponent 3, as SGX requires."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=EXPONENT, key_size=MODULUS_SIZE * 8)


def load_signing_key(pem: bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigstructError("the enclave signing key is not an RSA key")
    _check_key(key.public_key())
    return key


def _check_key(pub: rsa.RSAPublicKey) -> None:
    numbers = pub.public_numbers()
    if numbers.e != EXPONENT or pub.key_size != MODULUS_SIZE * 8:
        raise SigstructError(
            f"an SGX signing key must be RSA-3072 with exponent 3, this one is RSA-{pub.key_size} with exponent {numbers.e}"
        )


def _q1_q2(s: int, n: int) -> tuple[int, int]:
    q1 = s * s // n
    q2 = ((s * s) % n) * s // n
    return q1, q2


def sign(unsigned: Sigstruct, key: rsa.RSAPrivateKey) -> Sigstruct:
    """Fill modulus, exponent, signature, q1 and q2 of `unsigned` (its other fields are kept) with `key`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    _check_key(key.public_key())
    return sign_with(unsigned, key.public_key().public_numbers().n,
                     lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def sign_with(unsigned: Sigstruct, modulus: int, sign_pkcs1: Callable[[bytes], bytes]) -> Sigstruct:
    """Like sign, with the private key elsewhere (an HSM, a signing server): `sign_pkcs1` gets the 256 signed bytes
    (signed_bytes()) and returns their RSA-3072 PKCS#1 v1.5 SHA-256 signature, big-endian, as every RSA API and the
    original signing server's POST /api/v1/signature/pkcs1 give it. The answer is verified before it is used."""
    if modulus.bit_length() != MODULUS_SIZE * 8:
        raise SigstructError(f"an SGX signing key must be RSA-3072, this modulus has {modulus.bit_length()} bits")
    body = unsigned.replace(
        modulus=modulus.to_bytes(MODULUS_SIZE, "little"),
        exponent=EXPONENT,
        signature=bytes(MODULUS_SIZE),
        q1=bytes(MODULUS_SIZE),
        q2=bytes(MODULUS_SIZE),
    )
    sig_be = sign_pkcs1(body.signed_bytes())
    if not isinstance(sig_be, (bytes, bytearray)) or len(sig_be) != MODULUS_SIZE:
        raise SigstructError(f"the signer returned {len(sig_be) if isinstance(sig_be, (bytes, bytearray)) else 'no'} "
                             f"bytes, an RSA-3072 signature is {MODULUS_SIZE}")
    if not rsa3_verify(modulus, int.from_bytes(sig_be, "big"), body.signed_bytes()):
        raise SigstructError("the signer's signature does not verify against its public key (RSA-3072, "
                             "PKCS#1 v1.5, SHA-256 over the SIGSTRUCT's header and body)") from None
    s = int.from_bytes(sig_be, "big")
    q1, q2 = _q1_q2(s, modulus)
    return body.replace(
        signature=s.to_bytes(MODULUS_SIZE, "little"),
        q1=q1.to_bytes(MODULUS_SIZE, "little"),
        q2=q2.to_bytes(MODULUS_SIZE, "little"),
    )


def pkcs1_sha256(data: bytes, size: int = MODULUS_SIZE) -> int:
    """EMSA-PKCS1-v1_5 of SHA-256(data) for a `size`-byte modulus, as a number: 00 01 FF..FF 00 DigestInfo hash."""
    t = SHA256_DIGEST_INFO + sha256(data).digest()
    return int.from_bytes(b"\x00\x01" + b"\xff" * (size - 3 - len(t)) + b"\x00" + t, "big")


def rsa3_verify(n: int, s: int, data: bytes) -> bool:
    """An RSA-3072 e=3 PKCS#1 v1.5 SHA-256 signature `s` of `data` under the modulus `n`: s^3 mod n is the encoding."""
    return 0 < s < n and n.bit_length() == MODULUS_SIZE * 8 and pow(s, EXPONENT, n) == pkcs1_sha256(data)


def verify(ss: Sigstruct) -> bytes:
    """Check the fixed header, the key shape, the RSA signature and q1/q2; return MRSIGNER.

    Raises SigstructError with a sentence naming what is wrong.
    """
    if ss.header != HEADER or ss.header2 != HEADER2:
        raise SigstructError("the SIGSTRUCT header is not the fixed SGX header (is this a SIGSTRUCT?)")
    if ss.exponent != EXPONENT:
        raise SigstructError(f"the SIGSTRUCT exponent is {ss.exponent}, SGX requires 3")
    n = int.from_bytes(ss.modulus, "little")
    s = int.from_bytes(ss.signature, "little")
    if n.bit_length() != MODULUS_SIZE * 8:
        raise SigstructError("the SIGSTRUCT modulus is not a 3072-bit number")
    if s >= n:
        raise SigstructError("the SIGSTRUCT signature is not smaller than its modulus")
    if not rsa3_verify(n, s, ss.signed_bytes()):
        raise SigstructError("the SIGSTRUCT signature does not verify against its modulus") from None
    q1, q2 = _q1_q2(s, n)
    if ss.q1 != q1.to_bytes(MODULUS_SIZE, "little") or ss.q2 != q2.to_bytes(MODULUS_SIZE, "little"):
        raise SigstructError("the SIGSTRUCT q1/q2 do not match its signature")
    return ss.mr_signer


def parse(data: bytes) -> Sigstruct:
    try:
        return Sigstruct.from_bytes(data)
    except FormatError as e:
        raise SigstructError(str(e)) from None
