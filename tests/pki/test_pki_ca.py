"""mycert.pki.ca: root, issuing CA, OCSP responder; serial numbers."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    random_serial_number,
    reissue_issuing_ca,
)
from tests.pki.helpers import ORGANIZATION, Leaf, pkilint_findings, run_command, write_pem

SUBJECT = DistinguishedName("Throwaway CA", ORGANIZATION, "LU")


def _ext(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return certificate.extensions.get_extension_for_class(kind)


def test_root_ca_profile(root_ca: CertificateAuthority, now: datetime) -> None:
    cert = root_ca.certificate
    assert cert.subject == cert.issuer
    assert cert.version is x509.Version.v3
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=None)
    key_usage = _ext(cert, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.key_cert_sign
    assert key_usage.value.crl_sign
    assert not key_usage.value.digital_signature
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert cert.not_valid_before_utc == now - timedelta(minutes=1)
    assert cert.not_valid_after_utc == now + timedelta(days=20 * 365)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    cert.verify_directly_issued_by(cert)


def test_issuing_ca_profile(
    issuing_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    cert = issuing_ca.certificate
    cert.verify_directly_issued_by(root_ca.certificate)
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=0)
    key_usage = _ext(cert, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.key_cert_sign
    assert key_usage.value.crl_sign
    assert key_usage.value.digital_signature
    root_ski = _ext(root_ca.certificate, x509.SubjectKeyIdentifier).value
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski.digest
    crl_dp = _ext(cert, x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name == [
        x509.UniformResourceIdentifier("http://pki.example.lu/crl/root.crl")
    ]
    assert cert.not_valid_after_utc <= root_ca.certificate.not_valid_after_utc


def test_issuing_ca_without_crl_url(root_ca: CertificateAuthority, now: datetime) -> None:
    ca = create_issuing_ca(root=root_ca, subject=SUBJECT, key_type=KeyType.EC_P256, now=now)
    with pytest.raises(x509.ExtensionNotFound):
        _ext(ca.certificate, x509.CRLDistributionPoints)
    assert ca.certificate.signature_hash_algorithm is not None
    assert ca.certificate.signature_hash_algorithm.name == "sha256"


def test_ocsp_responder_profile(
    ocsp_responder: CertificateAuthority, issuing_ca: CertificateAuthority, now: datetime
) -> None:
    cert = ocsp_responder.certificate
    cert.verify_directly_issued_by(issuing_ca.certificate)
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    key_usage = _ext(cert, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert _ext(cert, x509.OCSPNoCheck).value == x509.OCSPNoCheck()
    assert cert.not_valid_after_utc == now + timedelta(days=30)
    _ext(cert, x509.SubjectKeyIdentifier)
    _ext(cert, x509.AuthorityKeyIdentifier)


def test_validity_is_capped_at_the_issuer(root_ca: CertificateAuthority, now: datetime) -> None:
    ca = create_issuing_ca(
        root=root_ca, subject=SUBJECT, key_type=KeyType.EC_P256, now=now, validity_days=50 * 365
    )
    assert ca.certificate.not_valid_after_utc == root_ca.certificate.not_valid_after_utc


def test_refuses_expired_issuer(root_ca: CertificateAuthority) -> None:
    later = root_ca.certificate.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(ValueError, match="issuer certificate expired at"):
        create_issuing_ca(root=root_ca, subject=SUBJECT, key_type=KeyType.EC_P256, now=later)


def test_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        create_root_ca(
            subject=SUBJECT,
            key_type=KeyType.EC_P256,
            now=datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
        )


def test_accepts_other_timezones(now: datetime) -> None:
    local = now.astimezone(ZoneInfo("Europe/Luxembourg"))
    ca = create_root_ca(subject=SUBJECT, key_type=KeyType.EC_P256, now=local)
    assert ca.certificate.not_valid_before_utc == now - timedelta(minutes=1)


def test_refuses_bad_validity(now: datetime) -> None:
    with pytest.raises(ValueError, match="validity_days must be positive, got 0"):
        create_root_ca(subject=SUBJECT, key_type=KeyType.EC_P256, now=now, validity_days=0)


def test_refuses_non_ca_issuer(ocsp_responder: CertificateAuthority, now: datetime) -> None:
    with pytest.raises(ValueError, match="issuer certificate is not a CA"):
        create_ocsp_responder(
            issuer=ocsp_responder, subject=SUBJECT, key_type=KeyType.EC_P256, now=now
        )


def test_mismatching_ca_key(
    root_ca: CertificateAuthority, issuing_ca: CertificateAuthority
) -> None:
    with pytest.raises(ValueError, match="private_key does not match the certificate's public key"):
        CertificateAuthority(certificate=root_ca.certificate, private_key=issuing_ca.private_key)


def test_ca_type_checks(root_ca: CertificateAuthority, now: datetime) -> None:
    with pytest.raises(TypeError, match="subject must be a DistinguishedName"):
        create_root_ca(subject="CN=x", key_type=KeyType.EC_P256, now=now)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="root must be a CertificateAuthority"):
        create_issuing_ca(
            root=root_ca.certificate,  # type: ignore[arg-type]
            subject=SUBJECT,
            key_type=KeyType.EC_P256,
            now=now,
        )


def test_random_serial_number() -> None:
    serials = {random_serial_number() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(0 < serial < 2**159 for serial in serials)
    # 159 random bits: the top bit is set in about half of them (not a 64-bit serial).
    assert sum(serial >> 158 for serial in serials) > 800
    # RFC 5280 §4.1.2.2: at most 20 octets, DER INTEGER positive without padding.
    assert max(serial.bit_length() for serial in serials) <= 159


def test_openssl_verifies_the_ca_chain(openssl: str, root_pem: Path, issuing_pem: Path) -> None:
    result = run_command([openssl, "verify", "-x509_strict", "-CAfile", root_pem, issuing_pem])
    assert result.stdout.strip() == f"{issuing_pem}: OK"


def test_openssl_verifies_the_responder(
    openssl: str,
    root_pem: Path,
    issuing_pem: Path,
    ocsp_responder: CertificateAuthority,
    pki_dir: Path,
) -> None:
    responder_pem = write_pem(pki_dir / "ocsp-responder.pem", ocsp_responder.certificate)
    result = run_command(
        [
            openssl, "verify", "-x509_strict", "-purpose", "ocsphelper",
            "-CAfile", root_pem, "-untrusted", issuing_pem, responder_pem,
        ]
    )  # fmt: skip
    assert result.stdout.strip() == f"{responder_pem}: OK"


@pytest.mark.parametrize("which", ["root", "issuing", "ocsp_responder"])
def test_pkilint_ca_profiles(
    which: str,
    request: pytest.FixtureRequest,
    pki_dir: Path,
) -> None:
    fixture = {"root": "root_ca", "issuing": "issuing_ca", "ocsp_responder": "ocsp_responder"}
    ca: CertificateAuthority = request.getfixturevalue(fixture[which])
    path = write_pem(pki_dir / f"lint-{which}.pem", ca.certificate)
    findings = pkilint_findings("lint_pkix_cert", [], path)
    blocking = [f for f in findings if f["severity"] in {"ERROR", "FATAL"}]
    assert not blocking, blocking
    # Only informational findings are expected (SKI method 1 identified).
    assert {f["severity"] for f in findings} <= {"INFO"}, findings


def test_ec_root_signs_with_ecdsa_sha256() -> None:
    ca = create_root_ca(subject=SUBJECT, key_type=KeyType.EC_P256, now=datetime.now(UTC))
    assert ca.certificate.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256


def test_issuing_ca_carries_the_policy_and_the_root_url(issuing_ca: CertificateAuthority) -> None:
    from tests.pki.conftest import POLICY_OID

    policies = issuing_ca.certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert not policies.critical
    assert [p.policy_identifier.dotted_string for p in policies.value] == [POLICY_OID]
    assert all(p.policy_qualifiers is None for p in policies.value)
    aia = issuing_ca.certificate.extensions.get_extension_for_class(
        x509.AuthorityInformationAccess
    ).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.example.lu/ca/root.cer")
    ]


def test_explicit_policy_path_validation(
    root_ca: CertificateAuthority,
    issuing_ca: CertificateAuthority,
    rsa_leaf: Leaf,
    now: datetime,
    pki_dir: Path,
    openssl: str,
) -> None:
    """ETSI EN 319 412-2 relying parties require an explicit policy (RFC 5280 §6.1.3 (d))."""
    from tests.pki.conftest import POLICY_OID

    root_pem = write_pem(pki_dir / "explicit-root.pem", root_ca.certificate)
    issuing_pem = write_pem(pki_dir / "explicit-issuing.pem", issuing_ca.certificate)
    args: list[str | Path] = [
        openssl,
        "verify",
        "-x509_strict",
        "-explicit_policy",
        "-policy",
        POLICY_OID,
        "-CAfile",
        root_pem,
    ]
    run_command([*args, "-untrusted", issuing_pem, rsa_leaf.pem_path])
    # The same key certified without the policy (today's CAs before re-issue) fails.
    bare = reissue_issuing_ca(root=root_ca, current=issuing_ca.certificate, now=now)
    assert not any(isinstance(e.value, x509.CertificatePolicies) for e in bare.extensions)
    bare_pem = write_pem(pki_dir / "explicit-bare.pem", bare)
    failed = subprocess.run(
        [str(a) for a in [*args, "-untrusted", bare_pem, rsa_leaf.pem_path]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0
    assert "no explicit policy" in failed.stderr + failed.stdout


def test_reissue_keeps_the_key_and_adds_the_profile(
    root_ca: CertificateAuthority, issuing_ca: CertificateAuthority, rsa_leaf: Leaf, now: datetime
) -> None:
    renewed = reissue_issuing_ca(
        root=root_ca,
        current=issuing_ca.certificate,
        now=now,
        policy_oid="1.3.6.1.4.1.99999.1.2.1",
        ca_issuers_url="http://pki.example.lu/ca/root.cer",
    )
    assert renewed.public_key() == issuing_ca.certificate.public_key()
    assert renewed.subject == issuing_ca.certificate.subject
    assert renewed.serial_number != issuing_ca.certificate.serial_number
    renewed.verify_directly_issued_by(root_ca.certificate)
    # A leaf issued under the old certificate verifies under the new one.
    rsa_leaf.certificate.verify_directly_issued_by(renewed)
    verifier = PolicyBuilder().store(Store([root_ca.certificate])).time(now).build_client_verifier()
    assert verifier.verify(rsa_leaf.certificate, [renewed]).chain[1] == renewed
