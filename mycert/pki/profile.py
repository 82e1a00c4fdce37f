"""The professional's client certificate profile (docs/architecture.md « The certificate profile »,
RFC 5280 §4.2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mycert.pki._checks import require_aware_utc, require_ca, require_http_url, require_text
from mycert.pki.ca import (
    CertificateAuthority,
    authority_key_identifier,
    crl_distribution_points,
    random_serial_number,
    signature_hash,
    validity_period,
)
from mycert.pki.names import UB_COMMON_NAME, UB_ORGANIZATION_NAME, require_country

__all__ = [
    "ProfessionalIdentity",
    "ProfessionalProfile",
    "PublicKey",
    "issue_professional_certificate",
]

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# X.520 bounds (RFC 5280 Appendix A.1): ub-name for givenName/surname,
# ub-serial-number for serialNumber.
_UB_NAME = 32768
_UB_SERIAL_NUMBER = 64
# serialNumber is a PrintableString (X.520); this is its character set.
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")
# A pragmatic addr-spec (RFC 5322 §3.4.1) restricted to ASCII: rfc822Name is an
# IA5String (RFC 5280 §4.2.1.6), internationalised mailboxes need RFC 9598 instead.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MIN_RSA_BITS = 2048
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class ProfessionalIdentity:
    """Who the certificate is for, as the agency knows them."""

    given_name: str
    family_name: str
    professional_id: str
    email: str

    def __post_init__(self) -> None:
        require_text(self.given_name, "given_name", max_length=_UB_NAME)
        require_text(self.family_name, "family_name", max_length=_UB_NAME)
        require_text(self.professional_id, "professional_id", max_length=_UB_SERIAL_NUMBER)
        if not _PRINTABLE.fullmatch(self.professional_id):
            raise ValueError(
                "professional_id must use PrintableString characters "
                f"(letters, digits, space and '()+,-./:=?), got {self.professional_id!r}"
            )
        require_text(self.email, "email")
        if not _EMAIL.fullmatch(self.email):
            raise ValueError(f"email is not an ASCII e-mail address: {self.email!r}")
        # RFC 5280 Appendix A.1: ub-common-name is 64 characters.
        if len(self.common_name) > UB_COMMON_NAME:
            raise ValueError(
                f"'given_name family_name' is {len(self.common_name)} characters long; "
                f"the commonName maximum is {UB_COMMON_NAME}"
            )

    @property
    def common_name(self) -> str:
        """Return the CN, "Given Family"."""
        return f"{self.given_name} {self.family_name}"


@dataclass(frozen=True, kw_only=True)
class ProfessionalProfile:
    """Agency-wide settings written into every professional certificate."""

    organization: str
    country: str = "LU"
    validity_days: int = 3 * 365
    policy_oid: str
    crl_url: str
    ocsp_url: str
    ca_issuers_url: str

    def __post_init__(self) -> None:
        require_text(self.organization, "organization", max_length=UB_ORGANIZATION_NAME)
        require_country(self.country)
        if isinstance(self.validity_days, bool) or not isinstance(self.validity_days, int):
            raise TypeError(
                f"validity_days must be an int, not {type(self.validity_days).__name__}"
            )
        if self.validity_days <= 0:
            raise ValueError(f"validity_days must be positive, got {self.validity_days}")
        require_text(self.policy_oid, "policy_oid")
        try:
            x509.ObjectIdentifier(self.policy_oid)
        except ValueError as exc:
            raise ValueError(f"policy_oid is not a dotted OID: {self.policy_oid!r}") from exc
        require_http_url(self.crl_url, "crl_url")
        require_http_url(self.ocsp_url, "ocsp_url")
        require_http_url(self.ca_issuers_url, "ca_issuers_url")


def _require_public_key(public_key: object) -> PublicKey:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise ValueError(
                f"RSA key of {public_key.key_size} bits is too small; minimum {_MIN_RSA_BITS}"
            )
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _ALLOWED_CURVES):
            raise ValueError(f"unsupported elliptic curve {public_key.curve.name}")
        return public_key
    raise TypeError(f"public_key must be an RSA or EC public key, not {type(public_key).__name__}")


def _subject(identity: ProfessionalIdentity, profile: ProfessionalProfile) -> x509.Name:
    # The subject names the person and their professional identifier, never the
    # national identification number (docs/architecture.md « The certificate profile »).
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, profile.country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, profile.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name),
            x509.NameAttribute(NameOID.GIVEN_NAME, identity.given_name),
            x509.NameAttribute(NameOID.SURNAME, identity.family_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, identity.professional_id),
        ]
    )


def _key_usage() -> x509.KeyUsage:
    # digitalSignature only, for RSA and EC alike: TLS client authentication signs
    # (CertificateVerify, RFC 8446 §4.4.3; RFC 5246 §7.4.8), whatever the key exchange;
    # RSA key transport decrypts with the server's key, never the client's. ETSI EN 319
    # 412-2 §4.3.2 (NAT-4.3.2-1) warns about mixed usage (digitalSignature plus
    # keyEncipherment). No client of the agency is known to need keyEncipherment (it
    # would be S/MIME decryption, which these certificates are not for).
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_professional_certificate(
    *,
    issuer: CertificateAuthority,
    public_key: PublicKey,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
    now: datetime,
    serial_number: int | None = None,
) -> x509.Certificate:
    """Issue a professional's client-authentication certificate for ``public_key``."""
    if not isinstance(issuer, CertificateAuthority):
        raise TypeError(f"issuer must be a CertificateAuthority, not {type(issuer).__name__}")
    if not isinstance(identity, ProfessionalIdentity):
        raise TypeError(f"identity must be a ProfessionalIdentity, not {type(identity).__name__}")
    if not isinstance(profile, ProfessionalProfile):
        raise TypeError(f"profile must be a ProfessionalProfile, not {type(profile).__name__}")
    public_key = _require_public_key(public_key)
    now = require_aware_utc(now, "now")
    require_ca(issuer.certificate, usage="key_cert_sign")
    if serial_number is None:
        serial_number = random_serial_number()
    elif isinstance(serial_number, bool) or not isinstance(serial_number, int):
        raise TypeError(f"serial_number must be an int, not {type(serial_number).__name__}")
    elif not 0 < serial_number < 2**159:
        # RFC 5280 §4.1.2.2: positive, at most 20 octets once DER-encoded.
        raise ValueError("serial_number must be positive and fit in 159 bits")
    not_before, not_after = validity_period(now, profile.validity_days, issuer.certificate)

    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(identity, profile))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        # Non-critical: the subject DN is not empty (RFC 5280 §4.2.1.6).
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(identity.email)]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(issuer.certificate), critical=False)
        .add_extension(crl_distribution_points(profile.crl_url), critical=False)
        # RFC 5280 §4.2.2.1: AIA must be non-critical.
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(profile.ocsp_url),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(profile.ca_issuers_url),
                    ),
                ]
            ),
            critical=False,
        )
        # RFC 5280 §4.2.1.4: the policy OID alone, no qualifiers (RFC 5280 advises
        # against them).
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier(profile.policy_oid), None)]
            ),
            critical=False,
        )
    )
    return builder.sign(issuer.private_key, signature_hash(issuer.private_key))
