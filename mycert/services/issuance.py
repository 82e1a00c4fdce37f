"""Issue a requested certificate: key, certificate, keystore, outbox rows — exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mycert import ca_store
from mycert.models import Certificate, CertificateRequest, Delivery
from mycert.pki import (
    KeystoreEncryption,
    KeyType,
    ProfessionalIdentity,
    ProfessionalProfile,
    build_keystore,
    generate_keystore_password,
    generate_private_key,
    issue_professional_certificate,
)
from mycert.services.audit import audit_record
from mycert.services.ocsp import ocsp_response_sign_at_issuance

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssueOutcome:
    certificate_id: int | None
    #: Deliveries that may leave now (the keystore e-mails); passwords follow them.
    ready_delivery_ids: tuple[int, ...]
    already_done: bool = False


def professional_profile() -> ProfessionalProfile:
    """The certificate profile from settings (DESIGN.md §3)."""
    return ProfessionalProfile(
        organization=settings.MYCERT_CERT_ORGANIZATION,
        country=settings.MYCERT_CERT_COUNTRY,
        validity_days=settings.MYCERT_CERT_VALIDITY_DAYS,
        policy_oid=settings.MYCERT_CERT_POLICY_OID,
        crl_url=ca_store.crl_url(),
        ocsp_url=ca_store.ocsp_url(),
        ca_issuers_url=ca_store.ca_issuers_url(),
    )


def request_issue(*, request_id: int, now: datetime) -> IssueOutcome:
    """Issue the certificate of a request once; a second run changes nothing.

    The request row stays locked while the key is made and signed, so a redelivered
    task (another worker, a restart) waits and then finds the certificate. The
    one-to-one link from certificate to request is the database's guarantee.
    """
    from mycert.services.delivery import delivery_create_for_certificate

    ca = ca_store.load_ca()
    with transaction.atomic():
        request = (
            # Lock only the request row (the vendor join may be empty, PostgreSQL refuses it).
            CertificateRequest.objects.select_for_update(of=("self",))
            .select_related("professional", "vendor")
            .get(pk=request_id)
        )
        existing = Certificate.objects.filter(request=request).first()
        if existing is not None or request.status not in (
            CertificateRequest.Status.SUBMITTED,
            CertificateRequest.Status.ISSUING,
        ):
            logger.info(
                "request %s already issued or closed (status %s)", request.pk, request.status
            )
            return IssueOutcome(existing.pk if existing else None, (), already_done=True)

        professional = request.professional
        private_key = generate_private_key(KeyType(request.key_type))
        certificate = issue_professional_certificate(
            issuer=ca.issuing,
            public_key=private_key.public_key(),
            identity=ProfessionalIdentity(
                given_name=professional.given_name,
                family_name=professional.family_name,
                professional_id=professional.professional_id,
                email=professional.email,
            ),
            profile=professional_profile(),
            now=now,
        )
        password = generate_keystore_password()
        vendor = request.vendor
        encryption = (
            KeystoreEncryption.LEGACY_3DES
            if vendor is not None and vendor.legacy_keystore
            else KeystoreEncryption.AES256
        )
        keystore = build_keystore(
            private_key=private_key,
            certificate=certificate,
            chain=ca.chain,
            password=password,
            friendly_name=f"MyCert {professional.full_name}",
            encryption=encryption,
        )
        del private_key  # only the password-protected keystore leaves this function

        record = Certificate.objects.create(
            request=request,
            professional=professional,
            serial=format(certificate.serial_number, "x"),
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            key_type=request.key_type,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )
        deliveries = delivery_create_for_certificate(
            certificate=record,
            keystore=keystore,
            password=password,
            vendor=vendor,
            language=request.language,
        )
        request.status = CertificateRequest.Status.SENDING
        request.save(update_fields=["status"])
        # Its OCSP answer ("good") commits with it (the web holds no key to sign one).
        ocsp_response_sign_at_issuance(certificate=record, now=now)
        audit_record(
            actor="system",
            action="certificate.issued",
            target=record,
            details={
                "request_id": request.pk,
                "serial": record.serial,
                "key_type": record.key_type,
                "not_after": record.not_after.isoformat(),
                "keystore_encryption": encryption.value,
                "deliveries": [d.pk for d in deliveries],
            },
        )
    logger.info(
        "request %s issued certificate %s",
        request.pk,
        record.pk,
        extra={"request_id": request.pk, "certificate_id": record.pk},
    )
    ready = tuple(d.pk for d in deliveries if d.after_id is None)
    return IssueOutcome(record.pk, ready)


def request_mark_issuing(*, request_id: int) -> None:
    """Show the professional that their request is being worked on."""
    CertificateRequest.objects.filter(
        pk=request_id, status=CertificateRequest.Status.SUBMITTED
    ).update(status=CertificateRequest.Status.ISSUING)


def requests_stuck_ids(*, now: datetime, older_than: timedelta) -> list[int]:
    """Requests still without a certificate ``older_than`` after they were submitted.

    Their issuing task was lost: a broker restarted without persistence, a worker killed
    while holding the message (Redis gives it back only after the visibility timeout).
    Issuing again is safe, ``request_issue`` does nothing for an issued request.
    """
    return list(
        CertificateRequest.objects.filter(
            status__in=[CertificateRequest.Status.SUBMITTED, CertificateRequest.Status.ISSUING],
            submitted_at__lt=now - older_than,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def request_mark_sent(*, certificate_id: int) -> None:
    """Close a request once all its e-mails left; supersede the professional's older certificates."""
    from mycert.services.revocation import certificate_revoke

    # Usually inside the outbox's record transaction: all or nothing with it.
    with transaction.atomic(savepoint=False):
        certificate = Certificate.objects.get(pk=certificate_id)
        request = CertificateRequest.objects.select_for_update().get(pk=certificate.request_id)
        pending = Delivery.objects.issuance_not_sent(certificate.pk).exists()
        if pending or request.status == CertificateRequest.Status.SENT:
            return
        now = timezone.now()
        request.status = CertificateRequest.Status.SENT
        request.completed_at = now
        request.save(update_fields=["status", "completed_at"])
        older = list(
            Certificate.objects.filter(professional=certificate.professional_id)
            .not_revoked()
            .filter(issued_at__lt=certificate.issued_at)
            .exclude(pk=certificate.pk)
        )
        # Audited after the reads: the chain's lock is held until commit.
        audit_record(actor="system", action="request.sent", target=request)
        for previous in older:
            certificate_revoke(
                certificate_id=previous.pk,
                reason=Certificate.RevocationReason.SUPERSEDED,
                via=Certificate.RevokedVia.SUPERSEDED,
                actor=None,
                comment=f"Superseded by certificate {certificate.serial}",
                now=now,
            )


def parse_certificate(record: Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(record.pem.encode())
