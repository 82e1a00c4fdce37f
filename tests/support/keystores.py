"""Real MyCert keystores for the self-check and relying-party tests.

``issue`` runs the real issuing pipeline (request → certificate → sealed outbox rows) and
returns the keystore and password the professional would receive. The other builders make
what the pipeline never makes on purpose: an expired or not-yet-valid certificate, one
without the clientAuth EKU (signed by the same issuing CA, so only the named defect
differs), and one from another CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.utils import timezone

from mycert import custody
from mycert.models import Certificate, CertificateRequest, Delivery
from mycert.outbox.content import password_payload_open
from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    PrivateKey,
    ProfessionalIdentity,
    build_keystore,
    create_issuing_ca,
    create_root_ca,
    generate_private_key,
    issue_professional_certificate,
    random_serial_number,
)
from mycert.sealing import unseal
from mycert.services.issuance import professional_profile, request_issue
from tests.factories import CertificateRequestFactory, VendorFactory

PASSWORD = "test-keystore-password"


@dataclass(frozen=True)
class Keystore:
    p12: bytes
    password: str
    certificate: x509.Certificate
    key: PrivateKey
    record: Certificate | None = None

    def write(self, directory: Path, name: str) -> Path:
        """Write ``name.p12``, ``name.pem`` (cert + chain) and ``name.key`` (PEM)."""
        path = directory / f"{name}.p12"
        path.write_bytes(self.p12)
        _, _, chain = pkcs12.load_key_and_certificates(self.p12, self.password.encode())
        pem = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in [self.certificate, *chain]
        )
        (directory / f"{name}.pem").write_bytes(pem)
        (directory / f"{name}.key").write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path


def issue(*, key_type: str = "ec-p256", legacy: bool = False, **professional: str) -> Keystore:
    """Issue a certificate through the real pipeline; return what the e-mails carry.

    ``legacy``: the request names a vendor whose software needs 3DES keystores.
    """
    request = CertificateRequestFactory.create(
        key_type=key_type,
        vendor=VendorFactory.create(legacy_keystore=True) if legacy else None,
        **{f"professional__{k}": v for k, v in professional.items()},
    )
    certificate_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    assert certificate_id is not None
    record = Certificate.objects.get(pk=certificate_id)
    rows = {
        d.content: d
        for d in Delivery.objects.filter(
            certificate=record, recipient=Delivery.Recipient.PROFESSIONAL
        )
    }
    p12 = unseal(bytes(rows[Delivery.Content.KEYSTORE].sealed_payload or b""))
    password, _revocation_code = password_payload_open(
        unseal(bytes(rows[Delivery.Content.PASSWORD].sealed_payload or b""))
    )
    key, leaf, _ = pkcs12.load_key_and_certificates(p12, password.encode())
    assert key is not None
    assert leaf is not None
    return Keystore(p12, password, leaf, key, record)  # type: ignore[arg-type]


def variant(
    original: Keystore,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    server_auth_only: bool = False,
    record: bool = True,
) -> Keystore:
    """Re-sign ``original``'s certificate by MyCert's issuing CA with one thing changed.

    A new serial, the same key; with ``record`` the copy is stored like an issued one (so
    that only the named defect tells it apart in the self-check).
    """
    ca = custody.ca_load()
    source = original.certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(source.subject)
        .issuer_name(source.issuer)
        .public_key(source.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(not_before or source.not_valid_before_utc)
        .not_valid_after(not_after or source.not_valid_after_utc)
    )
    for extension in source.extensions:
        value = extension.value
        if server_auth_only and isinstance(value, x509.ExtendedKeyUsage):
            value = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        builder = builder.add_extension(value, critical=extension.critical)
    certificate = builder.sign(ca.issuing.private_key, hashes.SHA256())
    stored = None
    if record and original.record is not None:
        stored = Certificate.objects.create(
            request=CertificateRequestFactory.create(
                professional=original.record.professional, status=CertificateRequest.Status.SENT
            ),
            professional=original.record.professional,
            serial=format(certificate.serial_number, "x"),
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            key_type=original.record.key_type,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )
    p12 = build_keystore(
        private_key=original.key,
        certificate=certificate,
        chain=ca.chain,
        password=PASSWORD,
        friendly_name="MyCert variant",
    )
    return Keystore(p12, PASSWORD, certificate, original.key, stored)


def expired(original: Keystore) -> Keystore:
    """The same certificate, expired a second ago.

    Its validity starts with the issuing CA's: the test CA is minutes old, and a MyCert
    certificate is always valid inside its issuer's validity.
    """
    issuing = custody.ca_load().issuing.certificate
    now = timezone.now()
    return variant(
        original, not_before=issuing.not_valid_before_utc, not_after=now - timedelta(seconds=1)
    )


def foreign(*, now: datetime | None = None) -> tuple[Keystore, x509.Certificate]:
    """A certificate with MyCert's profile from another CA; return it and that CA's root."""
    now = now or timezone.now()
    names = {"organization": "Autre Agence", "country": "LU"}
    root = create_root_ca(
        subject=DistinguishedName(common_name="Other Root CA", **names),
        key_type=KeyType.EC_P256,
        now=now,
    )
    issuing: CertificateAuthority = create_issuing_ca(
        root=root,
        subject=DistinguishedName(common_name="Other Issuing CA", **names),
        key_type=KeyType.EC_P256,
        now=now,
        crl_url="http://127.0.0.1:9/root.crl",
    )
    key = generate_private_key(KeyType.EC_P256)
    certificate = issue_professional_certificate(
        issuer=issuing,
        public_key=key.public_key(),
        identity=ProfessionalIdentity(
            given_name="Eve",
            family_name="Other",
            professional_id="LU-MED-999999",
            email="eve@other.example",
        ),
        profile=professional_profile(),
        now=now,
    )
    p12 = build_keystore(
        private_key=key,
        certificate=certificate,
        chain=(issuing.certificate, root.certificate),
        password=PASSWORD,
        friendly_name="Other CA",
    )
    return Keystore(p12, PASSWORD, certificate, key), root.certificate
