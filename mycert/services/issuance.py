"""A request's life after "Envoyer": issued exactly once, then sent, or failed with a reason.

submitted → issuing → sending → sent, or → failed. Every request ends: a permanent
issuance error fails it (the helpdesk is told), an e-mail to the professional that
failed for good and whose payload was wiped fails it too, and after ``failed`` the
professional may submit again (only requests in progress block a new one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings
from django.db import transaction

from mycert import custody
from mycert.models import AuditEvent, Certificate, CertificateRequest, Delivery, OperatorAlert
from mycert.outbox import delivery_create_for_certificate
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
from mycert.request_proof import (
    ProvenIdentity,
    RequestUnproven,
    token_digest,
    verify_request_proof,
)
from mycert.sealing import ADDRESS_MISMATCH
from mycert.services.alerts import operator_alert_create
from mycert.services.audit import AuditEntry, audit_record, audit_record_many
from mycert.services.ocsp import ocsp_response_sign_at_issuance
from mycert.services.revocation_codes import revocation_code_new

logger = logging.getLogger(__name__)


class IssuanceRefused(Exception):
    """The certificate profile refuses this request's data; issuing again cannot help."""


@dataclass(frozen=True)
class IssueOutcome:
    certificate_id: int | None
    #: Deliveries that may leave now (the keystore e-mails); passwords follow them.
    ready_delivery_ids: tuple[int, ...]
    already_done: bool = False
    #: With ``send_now``: the rows written leased to the caller, to send at once
    #: (``mycert.outbox.deliveries_send(leased=…)``); the others, ready or not, are
    #: claimed as usual.
    leased: tuple[Delivery, ...] = ()


def professional_profile() -> ProfessionalProfile:
    """The certificate profile from settings (docs/architecture.md « The certificate profile »)."""
    return ProfessionalProfile(
        organization=settings.MYCERT_CERT_ORGANIZATION,
        country=settings.MYCERT_CERT_COUNTRY,
        validity_days=settings.MYCERT_CERT_VALIDITY_DAYS,
        policy_oid=settings.MYCERT_CERT_POLICY_OID,
        crl_url=custody.crl_url(),
        ocsp_url=custody.ocsp_url(),
        ca_issuers_url=custody.ca_issuers_url(),
    )


def request_issue(*, request_id: int, now: datetime, send_now: bool = False) -> IssueOutcome:
    """Issue the certificate of a request once; a second run changes nothing.

    The request row stays locked while the key is made and signed, so a redelivered
    task (another worker, a restart) waits and then finds the certificate. The
    one-to-one link from certificate to request is the database's guarantee.

    ``send_now``: the caller sends the e-mails itself right after this commits (the
    issuing worker). They are written leased to it (``IssueOutcome.leased``), so that no
    claim reads back and leases again the rows this transaction has just written.
    """
    ca = custody.ca_load()
    # Made before the lock: its slow hash need not hold the request row. The code goes
    # out only sealed, in the professional's password e-mail; the row keeps the hash.
    revocation_code, revocation_code_digest = revocation_code_new()
    with transaction.atomic():
        request = (
            # Lock only the request row (the vendor join may be empty, PostgreSQL refuses it).
            CertificateRequest.objects.select_for_update(of=("self",))
            .select_related("professional", "vendor")
            .get(pk=request_id)
        )
        existing = Certificate.objects.filter(request=request).values_list("pk", flat=True).first()
        if existing is not None or request.status not in (
            CertificateRequest.Status.SUBMITTED,
            CertificateRequest.Status.ISSUING,
        ):
            logger.info(
                "request %s already issued or closed (status %s)", request.pk, request.status
            )
            return IssueOutcome(existing, (), already_done=True)

        professional = request.professional
        # Before any key: the request must carry a LuxTrust login of this professional
        # that this worker verifies itself. What the certificate says and where the
        # keystore goes come from that proof, never from rows a database writer can edit.
        proven = _proof_of(request, now=now)
        try:
            # Checked before a key is made: the profile's refusals (RFC 5280 upper
            # bounds, an ASCII rfc822Name) depend on the data only, never on chance.
            identity = ProfessionalIdentity(
                given_name=proven.given_name,
                family_name=proven.family_name,
                professional_id=proven.professional_id,
                email=proven.email,
            )
        except ValueError as exc:
            raise IssuanceRefused(str(exc)) from exc
        private_key = generate_private_key(KeyType(request.key_type))
        certificate = issue_professional_certificate(
            issuer=ca.issuing,
            public_key=private_key.public_key(),
            identity=identity,
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
            friendly_name=f"MyCert {proven.given_name} {proven.family_name}",
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
            proof_digest=proven.digest,
            revocation_code_hash=revocation_code_digest,
        )
        deliveries = delivery_create_for_certificate(
            certificate=record,
            keystore=keystore,
            password=password,
            revocation_code=revocation_code,
            vendor=vendor,
            language=request.language,
            professional_email=proven.email,
            leased_at=now if send_now else None,
        )
        request.status = CertificateRequest.Status.SENDING
        # The proof has served: personal data, wiped (its digest stays, on the certificate).
        request.id_token = ""
        request.save(update_fields=["status", "id_token"])
        # Its OCSP answer ("good") commits with it (the web holds no key to sign one).
        ocsp_response_sign_at_issuance(certificate=record, now=now)
        audit_record(
            actor="system",
            action=AuditEvent.Action.CERTIFICATE_ISSUED,
            target=record,
            details={
                "request_id": request.pk,
                "serial": record.serial,
                "key_type": record.key_type,
                "not_after": record.not_after.isoformat(),
                "keystore_encryption": encryption.value,
                "proof": proven.digest,
                "acr": proven.acr,
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
    leased = tuple(d for d in deliveries if d.next_attempt_at is not None)
    return IssueOutcome(record.pk, ready, leased=leased)


def _proof_of(request: CertificateRequest, *, now: datetime) -> ProvenIdentity:
    """The request's verified proof of login, or ``RequestUnproven``.

    Beyond the token itself (``verify_request_proof``): it must be a login of the
    request's own professional, and no certificate may have been made from it yet.
    """
    proven = verify_request_proof(request.id_token, now=now.timestamp())
    professional = request.professional
    if (
        proven.sub != professional.oidc_subject
        or proven.professional_id != professional.professional_id
    ):
        raise RequestUnproven("another professional's login")
    # One login, one certificate (the unique digest is the database's guarantee).
    if Certificate.objects.filter(proof_digest=proven.digest).exists():
        raise RequestUnproven("login already used")
    return proven


def _request_locked(request_id: int) -> CertificateRequest:
    """The request row, locked for this transaction, with its professional."""
    return (
        CertificateRequest.objects.select_for_update(of=("self",))
        .select_related("professional")
        .get(pk=request_id)
    )


def request_fail_unproven(*, request_id: int, check: str, now: datetime) -> bool:
    """End a request whose proof of login fails: ``failed``, "unproven", security alerted.

    No key was made. The security officer is told besides the helpdesk: outside an
    upgrade, a request without a valid proof means someone wrote to the database.
    Returns whether this call failed it.
    """
    with transaction.atomic():
        request = _request_locked(request_id)
        if not request.is_in_progress:
            return False
        digest = token_digest(request.id_token)
        request_fail(request_id=request_id, reason=f"unproven: {check}", now=now)
        audit_record(
            actor="system",
            action=AuditEvent.Action.REQUEST_UNPROVEN,
            target=request,
            details={"check": check, "proof": digest},
        )
        operator_alert_create(
            recipient=OperatorAlert.Recipient.SECURITY,
            kind=OperatorAlert.Kind.REQUEST_UNPROVEN,
            context={
                "request_id": request.pk,
                "professional_id": request.professional.professional_id,
                "professional_name": request.professional.full_name,
                "check": check,
                "proof": digest,
            },
        )
    logger.error("request %s unproven: %s", request_id, check, extra={"request_id": request_id})
    return True


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


def request_mark_sent(*, certificate_id: int, now: datetime) -> bool:
    """Close the request once the professional's keystore and password e-mails left.

    Vendor copies do not count: a copy that fails for good is the helpdesk's matter and
    never holds the professional back. Returns whether this call closed the request; a
    closed or revoked one is left as it is. Older certificates are superseded later,
    by ``certificates_supersede`` (``MYCERT_SUPERSEDE_AFTER_DAYS``).

    The outbox sweep's way, for a request a worker left « sending »; a worker closes it
    while recording the last e-mail (``requests_close_sent``).
    """
    with transaction.atomic():
        if Delivery.objects.professional_issuance_not_sent([certificate_id]).exists():
            return False
        closed, events = requests_close_sent({certificate_id}, now)
        audit_record_many(events)
    return bool(closed)


def requests_close_sent(
    certificate_ids: set[int], now: datetime
) -> tuple[set[int], list[AuditEntry]]:
    """Close the « sending » requests of these certificates; the certificates and events.

    Inside the caller's transaction, which has checked that the professional's keystore
    and password e-mails are all sent: the outbox's record of the last one
    (``mycert.outbox.CompletionHook``), so that the request is closed in the
    transaction that records it, and its event joins the record's audit INSERT. The
    caller writes the returned events. A request no longer « sending » (closed already,
    or failed with its revoked certificate) is left as it is.
    """
    closing = list(
        CertificateRequest.objects.select_for_update(of=("self",))
        .filter(certificate__pk__in=certificate_ids, status=CertificateRequest.Status.SENDING)
        .values_list("pk", "certificate__pk")
    )
    if not closing:
        return set(), []
    request_ids = [request_id for request_id, _ in closing]
    CertificateRequest.objects.filter(pk__in=request_ids).update(
        status=CertificateRequest.Status.SENT, completed_at=now
    )

    def log_sent() -> None:
        for request_id in request_ids:
            logger.info("request %s sent", request_id, extra={"request_id": request_id})

    transaction.on_commit(log_sent)
    events = [
        AuditEntry(
            actor="system",
            action=AuditEvent.Action.REQUEST_SENT,
            target=CertificateRequest(pk=request_id),
        )
        for request_id in request_ids
    ]
    return {certificate_id for _, certificate_id in closing}, events


def requests_sent_unclosed_certificate_ids() -> list[int]:
    """Certificates whose request is still « sending » though the professional has both e-mails.

    A worker lost between recording the password e-mail and closing the request leaves
    such a request; the outbox sweep closes it.
    """
    return list(
        Certificate.objects.filter(request__status=CertificateRequest.Status.SENDING)
        .exclude(
            deliveries__in=Delivery.objects.filter(
                recipient=Delivery.Recipient.PROFESSIONAL,
                content__in=[Delivery.Content.KEYSTORE, Delivery.Content.PASSWORD],
            ).exclude(status=Delivery.Status.SENT)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def request_fail(*, request_id: int, reason: str, now: datetime) -> bool:
    """End a request that cannot succeed: ``failed``, with the reason, audited, helpdesk told.

    The professional may submit a new request at once. Returns whether this call
    failed it (a request already ended is left as it is). ``reason`` names what
    went wrong, never a secret.
    """
    with transaction.atomic():
        request = _request_locked(request_id)
        if not request.is_in_progress:
            return False
        request.status = CertificateRequest.Status.FAILED
        request.completed_at = now
        request.last_error = reason[:2000]
        # The proof of login is personal data: wiped once the request ends.
        request.id_token = ""
        request.save(update_fields=["status", "completed_at", "last_error", "id_token"])
        audit_record(
            actor="system",
            action=AuditEvent.Action.REQUEST_FAILED,
            target=request,
            details={"reason": request.last_error},
        )
        operator_alert_create(
            recipient=OperatorAlert.Recipient.HELPDESK,
            kind=OperatorAlert.Kind.REQUEST_FAILED,
            context={
                "request_id": request.pk,
                "professional_id": request.professional.professional_id,
                "professional_name": request.professional.full_name,
                "reason": request.last_error,
            },
        )
    logger.error("request %s failed", request_id, extra={"request_id": request_id})
    return True


def requests_fail_undeliverable(*, certificate_ids: list[int], now: datetime) -> list[int]:
    """Fail the requests whose professional e-mail failed for good and has no payload left.

    Called once failed payloads are wiped (``MYCERT_FAILED_PAYLOAD_DAYS``): nothing can
    be sent any more, so the professional is told to request again. The certificate
    is revoked, and with it every other row of it is cancelled and wiped (the password
    e-mail waiting for a keystore that will never leave, a vendor copy): a certificate
    nobody received must not stay valid, nor its secrets kept (issue 22).
    """
    request_ids = list(
        CertificateRequest.objects.filter(
            certificate__pk__in=certificate_ids,
            status=CertificateRequest.Status.SENDING,
            certificate__deliveries__recipient=Delivery.Recipient.PROFESSIONAL,
            certificate__deliveries__status=Delivery.Status.FAILED,
            certificate__deliveries__sealed_payload__isnull=True,
        )
        .distinct()
        .values_list("pk", flat=True)
    )
    failed = [
        request_id
        for request_id in request_ids
        if request_fail(
            request_id=request_id,
            reason="an e-mail to the professional failed for good; its payload was wiped",
            now=now,
        )
    ]
    for certificate_id in Certificate.objects.filter(request_id__in=failed).values_list(
        "pk", flat=True
    ):
        _revoke_undelivered(certificate_id=certificate_id, now=now)
    return failed


def _revoke_undelivered(*, certificate_id: int, now: datetime) -> None:
    """Revoke a certificate that never reached its professional (cessationOfOperation).

    RFC 5280 §5.3.1 cessationOfOperation: the certificate is no longer needed for its
    purpose; its private key existed only in the keystore, whose every copy is now wiped,
    so nobody can use it. Not superseded: no replacement exists yet (the professional
    requests again when he likes). Revoking cancels and wipes the certificate's other rows.
    """
    from mycert.services.revocation import AlreadyRevoked, certificate_revoke

    try:
        certificate_revoke(
            certificate_id=certificate_id,
            reason=Certificate.RevocationReason.CESSATION_OF_OPERATION,
            via=Certificate.RevokedVia.UNDELIVERED,
            actor=None,
            comment="never delivered: its e-mail to the professional failed for good and its "
            "payload was wiped",
            now=now,
        )
    except AlreadyRevoked:
        return


def delivery_failure_report(*, delivery_id: int, now: datetime) -> bool:
    """Tell the helpdesk that a keystore or password e-mail failed for good, once.

    A vendor e-mail the worker refused (its address or key is not what a security
    officer confirmed on the worker host: ``Delivery.recipient_refused``) is reported to
    the security officer instead: someone changed where copies go, and retrying is not
    the answer. The worker that records the failure reports it next; the outbox sweep
    reports what a worker lost in between. The row's lock and ``failure_reported_at``
    make the two meet on one alert. Returns whether this call wrote it.
    """
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("certificate__professional", "vendor")
            .get(pk=delivery_id)
        )
        if delivery.status != Delivery.Status.FAILED or delivery.failure_reported_at is not None:
            return False
        if delivery.recipient_refused:
            _report_refused_copy(delivery)
            delivery.failure_reported_at = now
            delivery.save(update_fields=["failure_reported_at", "updated_at"])
            return True
        operator_alert_create(
            recipient=OperatorAlert.Recipient.HELPDESK,
            kind=OperatorAlert.Kind.DELIVERY_FAILED,
            context={
                "delivery_id": delivery.pk,
                "certificate_id": delivery.certificate_id,
                "recipient": delivery.get_recipient_display(),
                "content": delivery.get_content_display(),
                "vendor_name": delivery.vendor.name if delivery.vendor is not None else "",
                "professional_id": delivery.certificate.professional.professional_id,
                "error": delivery.last_error,
            },
        )
        if ADDRESS_MISMATCH in delivery.last_error:
            # Only a database writer makes a row's address differ from its seal's.
            operator_alert_create(
                recipient=OperatorAlert.Recipient.SECURITY,
                kind=OperatorAlert.Kind.DELIVERY_REDIRECTED,
                context={
                    "delivery_id": delivery.pk,
                    "certificate_id": delivery.certificate_id,
                    "professional_id": delivery.certificate.professional.professional_id,
                    "to_email": delivery.to_email,
                },
            )
        delivery.failure_reported_at = now
        delivery.save(update_fields=["failure_reported_at", "updated_at"])
        return True


def _report_refused_copy(delivery: Delivery) -> None:
    operator_alert_create(
        recipient=OperatorAlert.Recipient.SECURITY,
        kind=OperatorAlert.Kind.VENDOR_COPY_REFUSED,
        context={
            "delivery_id": delivery.pk,
            "certificate_id": delivery.certificate_id,
            "content": delivery.get_content_display(),
            "vendor_id": delivery.vendor_id,
            "vendor_name": delivery.vendor.name if delivery.vendor is not None else "",
            "professional_id": delivery.certificate.professional.professional_id,
            # Where the row wanted the copy to go: what the security officer must see.
            "to_email": delivery.to_email,
            "fingerprint": delivery.pgp_fingerprint,
            "error": delivery.last_error,
        },
    )
