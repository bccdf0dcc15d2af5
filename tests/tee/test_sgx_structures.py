"""Sizes, offsets and round trips of the SGX binary structures."""


import pytest

from inclavare.tee import records
from inclavare.tee.sgx.attributes import DEBUG, MODE64BIT, Attributes
from inclavare.tee.sgx.einittoken import EInitToken
from inclavare.tee.sgx.layout import FormatError
from inclavare.tee.sgx.quote import QuoteHeader
from inclavare.tee.sgx.report import KeyRequest, Report, ReportBody, TargetInfo
from inclavare.tee.sgx.sigstruct import Sigstruct


@pytest.mark.parametrize(
    "cls,size",
    [(Sigstruct, 1808), (ReportBody, 384), (Report, 432), (TargetInfo, 512), (EInitToken, 304),
     (KeyRequest, 512), (QuoteHeader, 48)],
)
def test_sizes(cls, size):
    assert cls.SIZE == size
    assert len(cls().to_bytes()) == size


def test_offsets_match_the_reference():
    offsets = {f.name: f.offset for f in ReportBody.FIELDS}
    assert offsets == {"cpu_svn": 0, "misc_select": 16, "isv_ext_prod_id": 32, "attributes": 48, "mr_enclave": 64,
                       "mr_signer": 128, "config_id": 192, "isv_prod_id": 256, "isv_svn": 258, "config_svn": 260,
                       "isv_family_id": 304, "report_data": 320}
    ss = {f.name: f.offset for f in Sigstruct.FIELDS}
    assert (ss["modulus"], ss["exponent"], ss["signature"], ss["misc_select"], ss["enclave_hash"],
            ss["isv_prod_id"], ss["q1"], ss["q2"]) == (128, 512, 516, 900, 960, 1024, 1040, 1424)
    assert Sigstruct().to_bytes()[:16].hex() == "06000000e10000000000010000000000"
    assert Sigstruct().to_bytes()[24:40].hex() == "01010000600000006000000001000000"


def test_round_trip_every_field():
    for cls in (Sigstruct, ReportBody, Report, TargetInfo, EInitToken, KeyRequest, QuoteHeader):
        values = {}
        for i, f in enumerate(cls.FIELDS):
            values[f.name] = (i + 1) % (1 << (8 * f.size)) if f.is_int else bytes([i + 1]) * f.size
        obj = cls(**values)
        data = obj.to_bytes()
        assert cls.from_bytes(data) == obj
        assert cls.from_bytes(data).to_bytes() == data


def test_reserved_bytes_refused_and_wrong_sizes():
    data = bytearray(ReportBody().to_bytes())
    data[20] = 1  # reserved1
    with pytest.raises(FormatError, match="reserved"):
        ReportBody.from_bytes(bytes(data))
    assert ReportBody.from_bytes(bytes(data), strict=False).misc_select == 0
    with pytest.raises(FormatError, match="384 bytes"):
        ReportBody.from_bytes(bytes(383))
    with pytest.raises(FormatError, match="mr_enclave"):
        ReportBody(mr_enclave=b"short")
    with pytest.raises(FormatError, match="isv_svn"):
        ReportBody(isv_svn=1 << 16)
    with pytest.raises(records.FrozenInstanceError):
        ReportBody().isv_svn = 1  # type: ignore[misc]


def test_attributes():
    a = Attributes(DEBUG | MODE64BIT, 3)
    assert Attributes.from_bytes(a.to_bytes()) == a
    assert a.to_bytes().hex() == "0600000000000000" + "0300000000000000"
    assert "DEBUG" in a.describe() and "MODE64BIT" in a.describe()
    assert (a & Attributes(~DEBUG & (2**64 - 1), 0)) == Attributes(MODE64BIT, 0)
