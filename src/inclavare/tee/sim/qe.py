"""The simulated quoting enclave: its TARGETINFO, quote v3 generation, and verification against the sim root.

A sim quote has the real v3 binary layout (see inclavare.tee.sgx.quote): the ISV signature is made by the platform's
quoting key, the QE report body (the sim QE's identity, report_data = SHA-256(attestation key || QE auth data) || 32
zero bytes) is signed by the sim PCK key, and certification data type 5 holds the sim PEM chain. It is marked
simulated three times over (QE vendor id, header user_data, the critical marker extension of every certificate); see
inclavare.tee.marker.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError
from inclavare.tee import marker
from inclavare.tee.sgx.attributes import MODE64BIT, Attributes
from inclavare.tee.sgx.layout import FormatError
from inclavare.tee.sgx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_DATA_PCK_CHAIN,
    QUOTE_VERSION_3,
    Quote,
    QuoteHeader,
)
from inclavare.tee.sgx.report import Report, ReportBody, TargetInfo
from inclavare.tee.sha256 import sha256
from inclavare.tee.sim.ereport import verify_report
from inclavare.tee.sim.identity import EnclaveIdentity

TYPE_CHECKING = False  # importing typing costs a sim enclave start
if TYPE_CHECKING:
    from cryptography import x509

    from inclavare.tee.sgx import quote_verify as qv
    from inclavare.tee.sim.platform import Platform

QE_IDENTITY = EnclaveIdentity(
    mr_enclave=sha256(b"inclavare sim quoting enclave v1").digest(),
    mr_signer=sha256(b"inclavare sim platform signer v1").digest(),
    attributes=Attributes(MODE64BIT, 0x3),
    isv_prod_id=1,
    isv_svn=1,
)
QE_SVN = 1
PCE_SVN = 1


def qe_target_info() -> TargetInfo:
    """The TARGETINFO an enclave makes its REPORT for, to get it quoted by the sim QE."""
    return QE_IDENTITY.target_info()


def gen_quote(platform: Platform, report: Report | bytes, qe_auth_data: bytes | None = None) -> bytes:
    """Quote a REPORT made for the sim QE on this platform (its MAC is checked first, as the real QE does)."""
    from inclavare.tee.sgx import quote_verify as qv

    rep = report if isinstance(report, Report) else Report.from_bytes(report, strict=False)
    body = verify_report(platform, rep, qe_target_info())
    auth = os.urandom(32) if qe_auth_data is None else qe_auth_data
    att_pub = qv.p256_public_xy(platform.quoting_key.public_key())
    header = QuoteHeader(
        version=QUOTE_VERSION_3, att_key_type=ATT_KEY_TYPE_ECDSA_P256, qe_svn=QE_SVN, pce_svn=PCE_SVN,
        vendor_id=marker.SIM_QE_VENDOR_ID, user_data=marker.SIM_USER_DATA_PREFIX.ljust(20, b"\0"),
    )
    qe_report = QE_IDENTITY.report_body(platform.cpu_svn, sha256(att_pub + auth).digest())
    unsigned = Quote(header, body, bytes(64), att_pub, qe_report, bytes(64), auth, CERT_DATA_PCK_CHAIN,
                     platform.pck_chain_pem)
    isv_sig = qv.p256_raw_signature(platform.quoting_key, unsigned.signed_bytes())
    qe_sig = qv.p256_raw_signature(platform.pck_key, qe_report.to_bytes())
    return Quote(header, body, isv_sig, att_pub, qe_report, qe_sig, auth, CERT_DATA_PCK_CHAIN,
                 platform.pck_chain_pem).to_bytes()


def quote_template(platform: Platform) -> bytes:
    """What every sim quote on `platform` shares, whatever the enclave: the header (48 bytes), then what follows the
    ISV signature (attestation key, QE report, its PCK signature, QE auth data drawn here, certification data). A
    quote is header || report body || u32 length || ISV signature || that tail (inclavare.tee.sim.evidence)."""
    from inclavare.tee.sgx import quote_verify as qv

    auth = os.urandom(32)
    att_pub = qv.p256_public_xy(platform.quoting_key.public_key())
    header = QuoteHeader(
        version=QUOTE_VERSION_3, att_key_type=ATT_KEY_TYPE_ECDSA_P256, qe_svn=QE_SVN, pce_svn=PCE_SVN,
        vendor_id=marker.SIM_QE_VENDOR_ID, user_data=marker.SIM_USER_DATA_PREFIX.ljust(20, b"\0"),
    )
    qe_report = QE_IDENTITY.report_body(platform.cpu_svn, sha256(att_pub + auth).digest())
    qe_sig = qv.p256_raw_signature(platform.pck_key, qe_report.to_bytes())
    q = Quote(header, ReportBody(), bytes(64), att_pub, qe_report, qe_sig, auth, CERT_DATA_PCK_CHAIN,
              platform.pck_chain_pem).to_bytes()
    return q[:48] + q[48 + 384 + 4 + 64:]


def verify_sim_quote(data: bytes | Quote, root_ca: x509.Certificate | bytes) -> qv.VerifiedQuote:
    """Verify a SIMULATED quote against the sim root CA a policy names explicitly (a certificate or its PEM).

    Refuses anything that is not marked simulated, so this path can never vouch for a hardware quote either.
    """
    from cryptography import x509

    from inclavare.tee.sgx import quote_verify as qv

    root = root_ca if isinstance(root_ca, x509.Certificate) else x509.load_pem_x509_certificate(root_ca)
    try:
        quote = data if isinstance(data, Quote) else Quote.from_bytes(data)
    except FormatError as e:
        raise RuneError(f"the quote does not parse: {e}") from None
    marks = qv.sim_marks(quote)
    if len(marks) < 3:
        raise RuneError("the quote is not (fully) marked as inclavare sim evidence; verify it as hardware evidence instead")
    try:
        chain = qv.verify_signatures(quote)
        qv.verify_chain(chain, qv.spki_sha256(root))
    except qv.QuoteError as e:
        raise RuneError(f"the sim quote does not verify: {e}") from None
    if qv.load_chain(quote)[0].subject != chain[0].subject or QE_IDENTITY.mr_enclave != quote.qe_report.mr_enclave:
        raise RuneError("the sim quote's QE report is not from the sim quoting enclave")
    return qv.VerifiedQuote(quote, chain, simulated=True)
