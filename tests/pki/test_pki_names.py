"""mycert.pki.names: distinguished names and their checks."""

from __future__ import annotations

import pytest
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from mycert.pki import DistinguishedName


def test_to_x509_name_order_and_encoding() -> None:
    name = DistinguishedName("MyCert Root", "Agence eSanté", "LU", organizational_unit="PKI")
    x509_name = name.to_x509_name()
    assert x509_name.rfc4514_string() == "CN=MyCert Root,OU=PKI,O=Agence eSanté,C=LU"
    country = x509_name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0]
    # X.520: countryName is a PrintableString; the rest UTF8String (RFC 5280 §4.1.2.4).
    assert country._type == _ASN1Type.PrintableString
    organization = x509_name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0]
    assert organization._type == _ASN1Type.UTF8String


def test_organizational_unit_is_optional() -> None:
    name = DistinguishedName("CN", "O", "LU").to_x509_name()
    assert not name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)


@pytest.mark.parametrize("country", ["lu", "LUX", "L", "", "L1", "ÉU"])
def test_bad_country(country: str) -> None:
    with pytest.raises(ValueError, match="country must be a two-letter upper-case ISO 3166 code"):
        DistinguishedName("CN", "O", country)


def test_country_type() -> None:
    with pytest.raises(TypeError, match="country must be a str"):
        DistinguishedName("CN", "O", 352)  # type: ignore[arg-type]


def test_empty_and_padded_values() -> None:
    with pytest.raises(ValueError, match="common_name must not be empty"):
        DistinguishedName("  ", "O", "LU")
    with pytest.raises(ValueError, match="organization must not start or end with whitespace"):
        DistinguishedName("CN", " O", "LU")
    with pytest.raises(ValueError, match="organizational_unit must not be empty"):
        DistinguishedName("CN", "O", "LU", organizational_unit="")


def test_upper_bounds() -> None:
    # RFC 5280 Appendix A.1: ub-common-name and ub-organization-name are 64.
    DistinguishedName("C" * 64, "O" * 64, "LU")
    with pytest.raises(ValueError, match="common_name is 65 characters long; the maximum is 64"):
        DistinguishedName("C" * 65, "O", "LU")
    with pytest.raises(ValueError, match="organization is 65 characters long"):
        DistinguishedName("CN", "O" * 65, "LU")
