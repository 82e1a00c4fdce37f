"""Fixtures for the mycert.pki tests: a real CA hierarchy generated per session.

Keys are generated here, never committed. External verifiers (openssl, keytool,
pkilint) run as subprocesses, so the checks do not depend on code we wrote.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    ProfessionalIdentity,
    ProfessionalProfile,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    generate_private_key,
    issue_professional_certificate,
)
from tests.pki.helpers import ORGANIZATION, PKI_BASE, Leaf, write_pem

POLICY_OID = "1.3.6.1.4.1.99999.1.2.1"


@pytest.fixture(scope="session")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is required for the PKI tests")
    return path


@pytest.fixture(scope="session")
def now() -> datetime:
    # Real time: OpenSSL and pkilint compare validity periods against their own clock.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="session")
def root_ca(now: datetime) -> CertificateAuthority:
    return create_root_ca(
        subject=DistinguishedName("MyCert Test Root CA", ORGANIZATION, "LU"),
        key_type=KeyType.RSA_3072,
        now=now,
    )


@pytest.fixture(scope="session")
def issuing_ca(root_ca: CertificateAuthority, now: datetime) -> CertificateAuthority:
    return create_issuing_ca(
        root=root_ca,
        subject=DistinguishedName(
            "MyCert Test Issuing CA", ORGANIZATION, "LU", organizational_unit="eHealth PKI"
        ),
        key_type=KeyType.RSA_3072,
        now=now,
        crl_url=f"{PKI_BASE}/crl/root.crl",
        policy_oid=POLICY_OID,
        ca_issuers_url=f"{PKI_BASE}/ca/root.cer",
    )


@pytest.fixture(scope="session")
def ocsp_responder(issuing_ca: CertificateAuthority, now: datetime) -> CertificateAuthority:
    return create_ocsp_responder(
        issuer=issuing_ca,
        subject=DistinguishedName("MyCert Test OCSP Responder", ORGANIZATION, "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )


@pytest.fixture(scope="session")
def root_pem(root_ca: CertificateAuthority, pki_dir: Path) -> Path:
    return write_pem(pki_dir / "root.pem", root_ca.certificate)


@pytest.fixture(scope="session")
def issuing_pem(issuing_ca: CertificateAuthority, pki_dir: Path) -> Path:
    return write_pem(pki_dir / "issuing.pem", issuing_ca.certificate)


@pytest.fixture(scope="session")
def profile() -> ProfessionalProfile:
    return ProfessionalProfile(
        organization=ORGANIZATION,
        policy_oid=POLICY_OID,
        crl_url=f"{PKI_BASE}/crl/issuing.crl",
        ocsp_url=f"{PKI_BASE}/ocsp/",
        ca_issuers_url=f"{PKI_BASE}/ca/issuing.crt",
    )


@pytest.fixture(scope="session")
def identity() -> ProfessionalIdentity:
    return ProfessionalIdentity(
        given_name="Marie-Thérèse",
        family_name="Dupont",
        professional_id="MED-2024-00417",
        email="marie.dupont@example.lu",
    )


@pytest.fixture(scope="session", params=list(KeyType), ids=str)
def leaf(
    request: pytest.FixtureRequest,
    issuing_ca: CertificateAuthority,
    profile: ProfessionalProfile,
    identity: ProfessionalIdentity,
    now: datetime,
    pki_dir: Path,
) -> Leaf:
    """Return a professional certificate for each key type."""
    key_type: KeyType = request.param
    private_key = generate_private_key(key_type)
    certificate = issue_professional_certificate(
        issuer=issuing_ca,
        public_key=private_key.public_key(),
        identity=identity,
        profile=profile,
        now=now,
    )
    pem_path = write_pem(pki_dir / f"leaf-{key_type}.pem", certificate)
    return Leaf(key_type, private_key, certificate, pem_path)


@pytest.fixture(scope="session")
def rsa_leaf(
    issuing_ca: CertificateAuthority,
    profile: ProfessionalProfile,
    identity: ProfessionalIdentity,
    now: datetime,
    pki_dir: Path,
) -> Leaf:
    """Return one RSA-2048 professional certificate for tests that need just one."""
    private_key = generate_private_key(KeyType.RSA_2048)
    certificate = issue_professional_certificate(
        issuer=issuing_ca,
        public_key=private_key.public_key(),
        identity=identity,
        profile=profile,
        now=now,
    )
    pem_path = write_pem(pki_dir / "leaf-single.pem", certificate)
    return Leaf(KeyType.RSA_2048, private_key, certificate, pem_path)
