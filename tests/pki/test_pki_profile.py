"""mycert.pki.profile: the professional's client certificate (docs/architecture.md « The
certificate profile »)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from mycert.pki import (
    CertificateAuthority,
    KeyType,
    ProfessionalIdentity,
    ProfessionalProfile,
    generate_private_key,
    issue_professional_certificate,
)
from tests.pki.helpers import Leaf, pkilint_findings, run_command


def _value(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return certificate.extensions.get_extension_for_class(kind).value


def test_subject(leaf: Leaf, identity: ProfessionalIdentity) -> None:
    subject = leaf.certificate.subject
    assert [(attribute.oid, attribute.value) for attribute in subject] == [
        (NameOID.COUNTRY_NAME, "LU"),
        (NameOID.ORGANIZATION_NAME, "Agence eSanté Luxembourg"),
        (NameOID.COMMON_NAME, "Marie-Thérèse Dupont"),
        (NameOID.GIVEN_NAME, "Marie-Thérèse"),
        (NameOID.SURNAME, "Dupont"),
        # The professional identifier, never the national identification number.
        (NameOID.SERIAL_NUMBER, identity.professional_id),
    ]


def test_extensions(leaf: Leaf, issuing_ca: CertificateAuthority) -> None:
    cert = leaf.certificate
    extensions = {ext.oid: ext for ext in cert.extensions}
    basic = extensions[x509.BasicConstraints.oid]
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=False, path_length=None)

    key_usage = extensions[x509.KeyUsage.oid]
    assert key_usage.critical
    assert key_usage.value.digital_signature
    # digitalSignature only, RSA included: TLS client authentication only signs.
    assert not key_usage.value.key_encipherment
    assert not key_usage.value.key_cert_sign

    assert list(extensions[x509.ExtendedKeyUsage.oid].value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not extensions[x509.SubjectAlternativeName.oid].critical
    assert extensions[x509.SubjectAlternativeName.oid].value.get_values_for_type(
        x509.RFC822Name
    ) == ["marie.dupont@example.lu"]
    assert extensions[x509.SubjectKeyIdentifier.oid].value == (
        x509.SubjectKeyIdentifier.from_public_key(leaf.private_key.public_key())
    )
    issuer_ski = _value(issuing_ca.certificate, x509.SubjectKeyIdentifier)
    assert isinstance(issuer_ski, x509.SubjectKeyIdentifier)
    assert extensions[x509.AuthorityKeyIdentifier.oid].value.key_identifier == issuer_ski.digest

    crl_dp = extensions[x509.CRLDistributionPoints.oid].value
    assert crl_dp[0].full_name == [
        x509.UniformResourceIdentifier("http://pki.example.lu/crl/issuing.crl")
    ]
    aia = extensions[x509.AuthorityInformationAccess.oid].value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, "http://pki.example.lu/ocsp/"),
        (AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.example.lu/ca/issuing.crt"),
    ]
    policies = extensions[x509.CertificatePolicies.oid].value
    assert [p.policy_identifier.dotted_string for p in policies] == ["1.3.6.1.4.1.99999.1.2.1"]
    assert all(p.policy_qualifiers is None for p in policies)
    assert {ext.oid for ext in cert.extensions if ext.critical} == {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
    }


def test_serial_and_validity(leaf: Leaf, now: datetime) -> None:
    cert = leaf.certificate
    assert 0 < cert.serial_number < 2**159
    assert cert.not_valid_before_utc == now - timedelta(minutes=1)
    assert cert.not_valid_after_utc == now + timedelta(days=3 * 365)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"


def test_explicit_serial_number(
    issuing_ca: CertificateAuthority,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
    now: datetime,
) -> None:
    key = generate_private_key(KeyType.EC_P256)
    kwargs = {
        "issuer": issuing_ca,
        "public_key": key.public_key(),
        "identity": identity,
        "profile": profile,
        "now": now,
    }
    cert = issue_professional_certificate(**kwargs, serial_number=0x1234)  # type: ignore[arg-type]
    assert cert.serial_number == 0x1234
    with pytest.raises(ValueError, match="serial_number must be positive and fit in 159 bits"):
        issue_professional_certificate(**kwargs, serial_number=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serial_number must be positive and fit in 159 bits"):
        issue_professional_certificate(**kwargs, serial_number=2**159)  # type: ignore[arg-type]


def test_validity_never_beyond_the_issuer(
    issuing_ca: CertificateAuthority,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
) -> None:
    late = issuing_ca.certificate.not_valid_after_utc - timedelta(days=30)
    cert = issue_professional_certificate(
        issuer=issuing_ca,
        public_key=generate_private_key(KeyType.EC_P256).public_key(),
        identity=identity,
        profile=profile,
        now=late,
    )
    assert cert.not_valid_after_utc == issuing_ca.certificate.not_valid_after_utc


def test_refuses_naive_now(
    issuing_ca: CertificateAuthority,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
    now: datetime,
) -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        issue_professional_certificate(
            issuer=issuing_ca,
            public_key=generate_private_key(KeyType.EC_P256).public_key(),
            identity=identity,
            profile=profile,
            now=now.replace(tzinfo=None),
        )


def test_refuses_weak_or_foreign_keys(
    issuing_ca: CertificateAuthority,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
    now: datetime,
) -> None:
    def issue(public_key: object) -> x509.Certificate:
        return issue_professional_certificate(
            issuer=issuing_ca,
            public_key=public_key,  # type: ignore[arg-type]
            identity=identity,
            profile=profile,
            now=now,
        )

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be refused
    with pytest.raises(ValueError, match="RSA key of 1024 bits is too small; minimum 2048"):
        issue(small.public_key())
    with pytest.raises(ValueError, match="unsupported elliptic curve secp521r1"):
        issue(ec.generate_private_key(ec.SECP521R1()).public_key())
    with pytest.raises(TypeError, match="public_key must be an RSA or EC public key"):
        issue(generate_private_key(KeyType.EC_P256))  # a private key by mistake


def test_refuses_a_non_ca_issuer(
    ocsp_responder: CertificateAuthority,
    identity: ProfessionalIdentity,
    profile: ProfessionalProfile,
    now: datetime,
) -> None:
    with pytest.raises(ValueError, match="issuer certificate is not a CA"):
        issue_professional_certificate(
            issuer=ocsp_responder,
            public_key=generate_private_key(KeyType.EC_P256).public_key(),
            identity=identity,
            profile=profile,
            now=now,
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("given_name", "", "given_name must not be empty"),
        ("family_name", "   ", "family_name must not be empty"),
        ("professional_id", "", "professional_id must not be empty"),
        ("professional_id", "MED_0001", "professional_id must use PrintableString characters"),
        ("email", "", "email must not be empty"),
        ("email", "marie.dupont", "email is not an ASCII e-mail address"),
        ("email", "marie@exämple.lu", "email is not an ASCII e-mail address"),
        ("email", "a b@example.lu", "email is not an ASCII e-mail address"),
        ("family_name", "X" * 60, "the commonName maximum is 64"),
    ],
)
def test_identity_validation(
    identity: ProfessionalIdentity, field: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(identity, **{field: value})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("organization", "", "organization must not be empty"),
        ("country", "lu", "country must be a two-letter upper-case ISO 3166 code"),
        ("validity_days", 0, "validity_days must be positive, got 0"),
        ("policy_oid", "not.an.oid", "policy_oid is not a dotted OID"),
        ("crl_url", "ldap://pki.example.lu/crl", "crl_url must be an absolute http:// URL"),
        ("ocsp_url", "http://", "ocsp_url must be an absolute http:// URL"),
        ("ca_issuers_url", "http://pki.example.lu/a b", "ca_issuers_url must be an ASCII URL"),
    ],
)
def test_profile_validation(
    profile: ProfessionalProfile, field: str, value: str | int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(profile, **{field: value})  # type: ignore[arg-type]


def test_profile_defaults(profile: ProfessionalProfile) -> None:
    assert profile.country == "LU"
    assert profile.validity_days == 3 * 365


def test_pyca_client_verifier_accepts_the_chain(
    leaf: Leaf,
    root_ca: CertificateAuthority,
    issuing_ca: CertificateAuthority,
    now: datetime,
) -> None:
    verifier = PolicyBuilder().store(Store([root_ca.certificate])).time(now).build_client_verifier()
    verified = verifier.verify(leaf.certificate, [issuing_ca.certificate])
    assert verified.subjects is not None
    assert verified.subjects == [x509.RFC822Name("marie.dupont@example.lu")]
    assert verified.chain == [leaf.certificate, issuing_ca.certificate, root_ca.certificate]


@pytest.mark.parametrize("purpose", [None, "sslclient"])
def test_openssl_verifies_the_leaf(
    leaf: Leaf, openssl: str, root_pem: Path, issuing_pem: Path, purpose: str | None
) -> None:
    args: list[str | Path] = [openssl, "verify", "-x509_strict"]
    if purpose:
        args += ["-purpose", purpose]
    args += ["-CAfile", root_pem, "-untrusted", issuing_pem, leaf.pem_path]
    assert run_command(args).stdout.strip() == f"{leaf.pem_path}: OK"


def test_pkilint_professional_certificate(leaf: Leaf) -> None:
    findings = pkilint_findings("lint_pkix_cert", [], leaf.pem_path)
    blocking = [f for f in findings if f["severity"] in {"ERROR", "FATAL"}]
    assert not blocking, blocking
    assert {f["severity"] for f in findings} <= {"INFO"}, findings


def test_etsi_natural_person_lint_finds_no_mixed_key_usage(leaf: Leaf) -> None:
    """ETSI EN 319 412-2 NAT-4.3.2-1: one key usage setting, not signature plus encipherment."""
    findings = pkilint_findings(
        "lint_etsi_cert", ["-t", "NCP-NATURAL-PERSON-CERTIFICATE"], leaf.pem_path
    )
    codes = {f["code"] for f in findings}
    assert "etsi.en_319_412_2.nat-4.3.2-1.mixed_key_usage_setting" not in codes, findings
    assert "etsi.en_319_412_2.nat-4.3.2-1.unknown_key_usage_setting" not in codes, findings
