"""Known answers from real artefacts in ../shared/vectors (enarx-sgx, dcap-qvl, mobilecoin, Intel QVL samples)."""

import hashlib

import pytest
from cryptography import x509

from inclavare.tee.sgx import measure, sigstruct
from inclavare.tee.sgx import quote_verify as qv
from inclavare.tee.sgx.quote import INTEL_QE_VENDOR_ID, Quote

ENARX_MRENCLAVE = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"
REAL_QUOTES = ["dcap-qvl/sgx_quote", "mobilecoin-attestation/hw_quote.dat", "intel-qvl-sampleData/quote.dat"]


def test_mrenclave_of_encl_bin_is_the_sigstruct_enclave_hash(vectors):
    image = (vectors / "enarx-sgx" / "encl.bin").read_bytes()
    ss = sigstruct.parse((vectors / "enarx-sgx" / "encl.ss").read_bytes())
    mr = measure.measure_flat(image, enclave_size=0x8000, ssa_frame_size=1, tcs_pages=[0])
    assert mr.hex() == ENARX_MRENCLAVE == ss.enclave_hash.hex()


def test_resigning_encl_bin_reproduces_encl_ss_byte_for_byte(vectors):
    raw = (vectors / "enarx-sgx" / "encl.ss").read_bytes()
    ss = sigstruct.parse(raw)
    image = (vectors / "enarx-sgx" / "encl.bin").read_bytes()
    unsigned = sigstruct.Sigstruct(
        type=ss.type, module_vendor=ss.module_vendor, date=ss.date, hw_version=ss.hw_version,
        misc_select=ss.misc_select, misc_mask=ss.misc_mask, isv_family_id=ss.isv_family_id,
        attributes=ss.attributes, attribute_mask=ss.attribute_mask, isvext_prod_id=ss.isvext_prod_id,
        isv_prod_id=ss.isv_prod_id, isv_svn=ss.isv_svn,
        enclave_hash=measure.measure_flat(image, 0x8000, 1, [0]),
    )
    key = sigstruct.load_signing_key((vectors / "enarx-sgx" / "encl.pem").read_bytes())
    assert sigstruct.sign(unsigned, key).to_bytes() == raw


def test_encl_ss_verifies_and_mrsigner_is_sha256_of_the_modulus(vectors):
    raw = (vectors / "enarx-sgx" / "encl.ss").read_bytes()
    ss = sigstruct.parse(raw)
    assert sigstruct.verify(ss) == hashlib.sha256(raw[128:512]).digest()
    key = sigstruct.load_signing_key((vectors / "enarx-sgx" / "encl.pem").read_bytes())
    assert ss.modulus == key.public_key().public_numbers().n.to_bytes(384, "little")


@pytest.mark.parametrize("offset,what", [(960, "signature"), (900, "signature"), (20, "signature"),
                                         (1050, "q1/q2"), (1500, "q1/q2"), (600, "signature"), (512, "exponent"),
                                         (2, "header")])
def test_sigstruct_tamper_is_refused(vectors, offset, what):
    raw = bytearray((vectors / "enarx-sgx" / "encl.ss").read_bytes())
    raw[offset] ^= 1
    with pytest.raises(sigstruct.SigstructError, match=what):
        sigstruct.verify(sigstruct.Sigstruct.from_bytes(bytes(raw), strict=False))


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_real_quotes_parse_and_round_trip(vectors, name):
    raw = (vectors / name).read_bytes()
    q = Quote.from_bytes(raw)
    assert q.to_bytes() == raw
    assert q.header.version == 3 and q.header.att_key_type == 2
    assert q.header.vendor_id == INTEL_QE_VENDOR_ID


def test_dcap_qvl_quote_fields(vectors):
    q = Quote.from_bytes((vectors / "dcap-qvl" / "sgx_quote").read_bytes())
    assert q.report_body.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert q.report_body.mr_signer.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert q.report_body.report_data == b"Hello, world!".ljust(64, b"\0")
    assert q.cert_data_type == 5 and len(q.pck_chain_pem()) == 3


@pytest.mark.parametrize("name", REAL_QUOTES[:2])
def test_real_quote_signatures_binding_and_chain_to_intel_root(vectors, name):
    q = Quote.from_bytes((vectors / name).read_bytes())
    assert q.qe_report.report_data[:32] == hashlib.sha256(q.attest_pub_key + q.qe_auth_data).digest()
    v = qv.verify_hardware_quote(q)
    assert not v.simulated
    assert "Intel SGX Root CA" in v.pck_chain[-1].subject.rfc4514_string()


def test_intel_sample_quote_signatures_with_its_pck_cert(vectors):
    d = vectors / "intel-qvl-sampleData"
    q = Quote.from_bytes((d / "quote.dat").read_bytes())
    pck = x509.load_pem_x509_certificate((d / "pckCert.pem").read_bytes())
    qv.verify_signatures(q, pck)
    # its chain ends at a TEST root, which is not Intel's production root
    chain = (pck, *x509.load_pem_x509_certificates((d / "pckSignChain.pem").read_bytes()))
    root = x509.load_pem_x509_certificate((d / "trustedRootCaCert.pem").read_bytes())
    qv.verify_chain(chain if chain[-1] == root else (*chain, root), qv.spki_sha256(root))
    with pytest.raises(qv.QuoteError, match="trusted root key"):
        qv.verify_chain(chain if chain[-1] == root else (*chain, root), qv.INTEL_SGX_ROOT_SPKI_SHA256)


@pytest.mark.parametrize("offset,match", [(48 + 64 + 3, "ISV enclave report signature"),  # mr_enclave
                                          (48 + 320, "ISV enclave report signature"),  # report_data
                                          (436 + 5, "ISV enclave report signature"),  # signature itself
                                          (436 + 128 + 64, "QE report signature"),  # QE report mr_enclave
                                          (436 + 128 + 320 + 40, "bind"),  # QE report_data 2nd half (must be zero)
                                          (436 + 128 + 320, "bind"),  # QE report_data
                                          (436 + 578 + 3, "bind")])  # QE auth data
def test_real_quote_tamper_is_refused(vectors, offset, match):
    raw = bytearray((vectors / "dcap-qvl" / "sgx_quote").read_bytes())
    raw[offset] ^= 1
    with pytest.raises(qv.QuoteError, match=match):
        qv.verify_hardware_quote(bytes(raw))


def test_flat_measurement_rules():
    with pytest.raises(measure.MeasurementError, match="power of two"):
        measure.measure_flat(bytes(4096), 0x3000, 1, [0])
    with pytest.raises(measure.MeasurementError, match="larger"):
        measure.measure_flat(bytes(0x3000), 0x2000, 1, [0])
    with pytest.raises(measure.MeasurementError, match="TCS page 5"):
        measure.measure_flat(bytes(0x2000), 0x4000, 1, [5])
    assert measure.measure_flat(bytes(0x2000), 0x4000, 1, [0]) != measure.measure_flat(bytes(0x2000), 0x4000, 1, [1])
