"""Distinguished names (RFC 5280 §4.1.2.4, §4.1.2.6, upper bounds from Appendix A)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from mycert.pki._checks import require_text

__all__ = [
    "UB_COMMON_NAME",
    "UB_ORGANIZATIONAL_UNIT_NAME",
    "UB_ORGANIZATION_NAME",
    "DistinguishedName",
    "require_country",
]

# RFC 5280 Appendix A.1 upper bounds (pkilint enforces them).
UB_COMMON_NAME = 64
UB_ORGANIZATION_NAME = 64
UB_ORGANIZATIONAL_UNIT_NAME = 64


def require_country(country: object, name: str = "country") -> str:
    """Return ``country`` if it is an ISO 3166 alpha-2 code such as ``LU``."""
    if not isinstance(country, str):
        raise TypeError(f"{name} must be a str, not {type(country).__name__}")
    # X.520 countryName is a PrintableString of exactly two characters; ISO 3166-1
    # alpha-2 codes are upper-case ASCII letters.
    if len(country) != 2 or not (country.isascii() and country.isalpha() and country.isupper()):
        raise ValueError(f"{name} must be a two-letter upper-case ISO 3166 code, got {country!r}")
    return country


@dataclass(frozen=True)
class DistinguishedName:
    """A CA or responder subject: C, O, optional OU, CN."""

    common_name: str
    organization: str
    country: str
    organizational_unit: str | None = None

    def __post_init__(self) -> None:
        require_text(self.common_name, "common_name", max_length=UB_COMMON_NAME)
        require_text(self.organization, "organization", max_length=UB_ORGANIZATION_NAME)
        require_country(self.country)
        if self.organizational_unit is not None:
            require_text(
                self.organizational_unit,
                "organizational_unit",
                max_length=UB_ORGANIZATIONAL_UNIT_NAME,
            )

    def to_x509_name(self) -> x509.Name:
        """Return the name as an x509.Name, most significant RDN first."""
        # pyca encodes countryName as PrintableString and the rest as UTF8String, as
        # RFC 5280 §4.1.2.4 requires for certificates issued after 2003.
        attributes = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, self.country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
        ]
        if self.organizational_unit is not None:
            attributes.append(
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit)
            )
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name))
        return x509.Name(attributes)
