"""Certification authorities: root, issuing CA, delegated OCSP responder (RFC 5280, 6960)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from mycert.pki._checks import require_aware_utc, require_ca, require_http_url
from mycert.pki.keys import KeyType, PrivateKey, generate_private_key, key_matches_certificate
from mycert.pki.names import DistinguishedName

__all__ = [
    "BACKDATE",
    "SERIAL_NUMBER_BITS",
    "CertificateAuthority",
    "authority_key_identifier",
    "create_issuing_ca",
    "create_ocsp_responder",
    "create_root_ca",
    "crl_distribution_points",
    "random_serial_number",
    "reissue_issuing_ca",
    "signature_hash",
    "validity_period",
]

# RFC 5280 §4.1.2.2: serials are positive and at most 20 octets. 159 bits keeps the
# DER INTEGER within 20 octets (no leading 0x00 needed) and exceeds the CA/B Forum's
# 64-bit CSPRNG minimum by far.
SERIAL_NUMBER_BITS = 159

# notBefore is set slightly in the past so relying parties whose clocks lag a little
# accept a certificate delivered seconds after issuance.
BACKDATE = timedelta(minutes=1)


@dataclass(frozen=True)
class CertificateAuthority:
    """A certificate and its private key (a CA, or the OCSP responder)."""

    certificate: x509.Certificate
    private_key: PrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.certificate, x509.Certificate):
            raise TypeError(
                f"certificate must be an x509.Certificate, not {type(self.certificate).__name__}"
            )
        if not key_matches_certificate(self.private_key, self.certificate):
            raise ValueError(
                "private_key does not match the certificate's public key "
                f"(subject {self.certificate.subject.rfc4514_string()})"
            )


def random_serial_number() -> int:
    """Return a positive random certificate serial number of 159 bits."""
    while True:
        serial = secrets.randbits(SERIAL_NUMBER_BITS)
        # Zero is not a positive integer (RFC 5280 §4.1.2.2); odds are 2**-159.
        if serial:
            return serial


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """Return the digest to sign with ``key`` (SHA-256 for RSA and P-256)."""
    # RFC 5480 §4 pairs each curve with a digest of matching strength (P-384 with
    # SHA-384, should an imported CA use it); RSA 2048/3072 use SHA-256 (RFC 4055).
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Return the AKI (keyIdentifier only) pointing at ``issuer``'s key."""
    # RFC 5280 §4.2.1.1: the AKI keyIdentifier equals the issuer's SKI when it has one.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def validity_period(
    now: datetime, days: int, issuer: x509.Certificate | None
) -> tuple[datetime, datetime]:
    """Return (notBefore, notAfter) for ``days`` from ``now``, capped at the issuer's."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError(f"validity_days must be an int, not {type(days).__name__}")
    if days <= 0:
        raise ValueError(f"validity_days must be positive, got {days}")
    not_before = now - BACKDATE
    not_after = now + timedelta(days=days)
    if issuer is not None:
        issuer_not_after = issuer.not_valid_after_utc
        if now >= issuer_not_after:
            raise ValueError(f"issuer certificate expired at {issuer_not_after.isoformat()}")
        if now < issuer.not_valid_before_utc:
            raise ValueError(
                f"issuer certificate is not valid before {issuer.not_valid_before_utc.isoformat()}"
            )
        # RFC 5280 §6.1.3 path validation does not nest validity periods, but a
        # certificate outliving its issuer only fails later, at the worst moment.
        not_after = min(not_after, issuer_not_after)
    return not_before, not_after


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    # RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING.
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _ca_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _require_subject(subject: object) -> DistinguishedName:
    if not isinstance(subject, DistinguishedName):
        raise TypeError(f"subject must be a DistinguishedName, not {type(subject).__name__}")
    return subject


def _require_authority(value: object, name: str) -> CertificateAuthority:
    if not isinstance(value, CertificateAuthority):
        raise TypeError(f"{name} must be a CertificateAuthority, not {type(value).__name__}")
    return value


def create_root_ca(
    *,
    subject: DistinguishedName,
    key_type: KeyType,
    now: datetime,
    validity_days: int = 20 * 365,
    key: PrivateKey | None = None,
) -> CertificateAuthority:
    """Create a self-signed root CA with a fresh key (or ``key``, e.g. one in a token)."""
    name = _require_subject(subject).to_x509_name()
    now = require_aware_utc(now, "now")
    not_before, not_after = validity_period(now, validity_days, None)
    key = generate_private_key(key_type) if key is None else key
    ski = _ski(key)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.9: critical in CA certificates. No pathLenConstraint: the
        # CA/B Forum advises against one on roots, and the issuing CA carries 0.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(digital_signature=False), critical=True)
        .add_extension(ski, critical=False)
        # RFC 5280 §4.2.1.1 lets self-signed roots omit the AKI; we keep it because
        # some chain builders match on it.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, signature_hash(key))
    )
    return CertificateAuthority(certificate=certificate, private_key=key)


def create_issuing_ca(
    *,
    root: CertificateAuthority,
    subject: DistinguishedName,
    key_type: KeyType,
    now: datetime,
    validity_days: int = 10 * 365,
    crl_url: str | None = None,
    policy_oid: str | None = None,
    ca_issuers_url: str | None = None,
    key: PrivateKey | None = None,
) -> CertificateAuthority:
    """Create an issuing CA (pathLen 0) signed by ``root``, with a fresh key (or ``key``)."""
    root = _require_authority(root, "root")
    name = _require_subject(subject).to_x509_name()
    now = require_aware_utc(now, "now")
    require_ca(root.certificate, usage="key_cert_sign")
    key = generate_private_key(key_type) if key is None else key
    certificate = _sign_issuing_ca(
        root=root,
        name=name,
        public_key=key.public_key(),
        now=now,
        validity_days=validity_days,
        crl_url=crl_url,
        policy_oid=policy_oid,
        ca_issuers_url=ca_issuers_url,
    )
    return CertificateAuthority(certificate=certificate, private_key=key)


def reissue_issuing_ca(
    *,
    root: CertificateAuthority,
    current: x509.Certificate,
    now: datetime,
    validity_days: int = 10 * 365,
    crl_url: str | None = None,
    policy_oid: str | None = None,
    ca_issuers_url: str | None = None,
) -> x509.Certificate:
    """Issue a new certificate for the issuing CA ``current``: same subject, same key.

    Only the root's key is needed (the issuing CA's public key is in ``current``), so
    this runs at the offline root. With the same key, every certificate, CRL and OCSP
    answer already signed keeps verifying (RFC 5280 §6.1 chains by name and key); the
    new certificate carries what the old one lacked (policies, AIA) and a new validity.
    """
    root = _require_authority(root, "root")
    now = require_aware_utc(now, "now")
    require_ca(root.certificate, usage="key_cert_sign")
    if current.issuer != root.certificate.subject:
        raise ValueError("the current issuing CA was not issued by this root")
    public_key = current.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported issuing CA key type {type(public_key).__name__}")
    return _sign_issuing_ca(
        root=root,
        name=current.subject,
        public_key=public_key,
        now=now,
        validity_days=validity_days,
        crl_url=crl_url,
        policy_oid=policy_oid,
        ca_issuers_url=ca_issuers_url,
    )


def _sign_issuing_ca(
    *,
    root: CertificateAuthority,
    name: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    now: datetime,
    validity_days: int,
    crl_url: str | None,
    policy_oid: str | None,
    ca_issuers_url: str | None,
) -> x509.Certificate:
    not_before, not_after = validity_period(now, validity_days, root.certificate)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.certificate.subject)
        .public_key(public_key)
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # pathLenConstraint 0: this CA signs end-entity certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature lets the issuing CA sign OCSP responses itself if the
        # delegated responder is ever unavailable (RFC 6960 §4.2.2.2).
        .add_extension(_ca_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(root.certificate), critical=False)
    )
    if crl_url is not None:
        builder = builder.add_extension(crl_distribution_points(crl_url), critical=False)
    if ca_issuers_url is not None:
        # RFC 5280 §4.2.2.1: where to fetch the root, for chain builders that lack it.
        url = require_http_url(ca_issuers_url, "ca_issuers_url")
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(url),
                    )
                ]
            ),
            critical=False,
        )
    if policy_oid is not None:
        try:
            oid = x509.ObjectIdentifier(policy_oid)
        except ValueError as exc:
            raise ValueError(f"policy_oid is not a dotted OID: {policy_oid!r}") from exc
        # RFC 5280 §6.1.3 (d): with an explicit policy required (ETSI EN 319 412-2,
        # RFC 5280 §4.2.1.11), every CA certificate in the path must carry the leaf's
        # policy. The agency's OID alone, as in the leaves, no qualifiers.
        builder = builder.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(oid, None)]), critical=False
        )
    return builder.sign(root.private_key, signature_hash(root.private_key))


def create_ocsp_responder(
    *,
    issuer: CertificateAuthority,
    subject: DistinguishedName,
    key_type: KeyType,
    now: datetime,
    validity_days: int = 30,
    key: PrivateKey | None = None,
) -> CertificateAuthority:
    """Create a delegated OCSP responder certificate signed by ``issuer``."""
    issuer = _require_authority(issuer, "issuer")
    name = _require_subject(subject).to_x509_name()
    now = require_aware_utc(now, "now")
    require_ca(issuer.certificate, usage="key_cert_sign")
    not_before, not_after = validity_period(now, validity_days, issuer.certificate)
    key = generate_private_key(key_type) if key is None else key
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # RFC 6960 §4.2.2.2: a delegated responder is recognised by id-kp-OCSPSigning
        # in a certificate issued directly by the CA whose certificates it answers for.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # RFC 6960 §4.2.2.2.1: clients need not check the responder's own revocation;
        # the short validity (30 days by default) is the mitigation.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(authority_key_identifier(issuer.certificate), critical=False)
        .sign(issuer.private_key, signature_hash(issuer.private_key))
    )
    return CertificateAuthority(certificate=certificate, private_key=key)


def crl_distribution_points(crl_url: str) -> x509.CRLDistributionPoints:
    """Return a CRL Distribution Points extension value for one HTTP URL."""
    url = require_http_url(crl_url, "crl_url")
    # RFC 5280 §4.2.1.13: a full name with an HTTP URI, no reasons, no cRLIssuer.
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )
