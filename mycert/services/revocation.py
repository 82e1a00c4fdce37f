"""Revoke a certificate (helpdesk, the professional, or superseded by a new one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery

from mycert.models import AuditEvent, Certificate, CertificateRequest, OperatorAlert
from mycert.outbox import deliveries_cancel_for_certificate
from mycert.services.alerts import operator_alert_create
from mycert.services.audit import actor_label, audit_record
from mycert.services.notices import revocation_notices_create
from mycert.services.ocsp import ocsp_response_sign_on_commit

logger = logging.getLogger(__name__)


class AlreadyRevoked(Exception):
    """The certificate was revoked before; a revocation is never changed."""


def certificate_revoke(
    *,
    certificate_id: int,
    reason: str,
    via: str,
    actor: AbstractBaseUser | None,
    now: datetime,
    compromised_at: datetime | None = None,
    comment: str = "",
) -> Certificate:
    """Revoke one certificate with an RFC 5280 §5.3.1 reason; refuse a second revocation.

    In the same transaction: the audit event, the e-mail notices to the professional
    and the request's vendor (sent on commit), the cancelling of the certificate's
    unsent keystore and password e-mails, and, for a key compromise the professional
    reports, an alert to the helpdesk. The CRL is re-signed once on commit.
    """
    if reason not in Certificate.RevocationReason.values:
        raise ValueError(f"Unknown revocation reason {reason!r}.")
    if compromised_at is not None and compromised_at > now:
        raise ValueError("The compromise date cannot be in the future.")
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate_id)
        if certificate.revoked_at is not None:
            raise AlreadyRevoked(f"Certificate {certificate.serial} was already revoked.")
        certificate.revoked_at = now
        certificate.revocation_reason = reason
        certificate.revoked_via = via
        certificate.revoked_by_id = (
            actor.pk if actor is not None and actor.is_authenticated else None
        )
        certificate.compromised_at = compromised_at
        certificate.revocation_comment = comment
        certificate.save(
            update_fields=[
                "revoked_at",
                "revocation_reason",
                "revoked_via",
                "revoked_by",
                "compromised_at",
                "revocation_comment",
            ]
        )
        audit_record(
            actor=actor_label(actor),
            action=AuditEvent.Action.CERTIFICATE_REVOKED,
            target=certificate,
            details={
                "serial": certificate.serial,
                "reason": reason,
                "via": via,
                "compromised_at": compromised_at.isoformat() if compromised_at else None,
                "comment": comment,
            },
        )
        # Queued on commit in the revocation queue, ahead of any issuance backlog
        # (config/settings.py, CELERY_TASK_QUEUES): until the revoked answer is stored the
        # web answers tryLater, never "good".
        ocsp_response_sign_on_commit(certificate_id=certificate.pk)
        cancelled = deliveries_cancel_for_certificate(
            certificate_id=certificate.pk, why="certificate revoked before this e-mail was sent"
        )
        if cancelled:
            _request_end_unsent(certificate, now=now)
        if (
            via in (Certificate.RevokedVia.PROFESSIONAL, Certificate.RevokedVia.CODE)
            and reason == Certificate.RevocationReason.KEY_COMPROMISE
        ):
            professional = certificate.professional
            operator_alert_create(
                recipient=OperatorAlert.Recipient.HELPDESK,
                kind=OperatorAlert.Kind.KEY_COMPROMISE_REPORTED,
                context={
                    "certificate_id": certificate.pk,
                    "serial": certificate.serial,
                    "professional_id": professional.professional_id,
                    "professional_name": professional.full_name,
                    "revoked_at": now,
                    "compromised_at": compromised_at,
                },
            )
        revocation_notices_create(certificate=certificate)
        _publish_once_after_commit()
    logger.info("certificate %s revoked (%s, via %s)", certificate.pk, reason, via)
    return certificate


class Revocations(NamedTuple):
    """What a revocation of several certificates did."""

    revoked: list[Certificate]
    #: Already revoked, meanwhile or before: left unchanged (a revocation is never changed).
    skipped: int


def certificates_revoke(
    *,
    certificate_ids: Sequence[int],
    reason: str,
    via: str,
    actor: AbstractBaseUser | None,
    now: datetime,
    compromised_at: datetime | None = None,
    comment: str = "",
) -> Revocations:
    """Revoke several certificates with one reason, all of them or none.

    One transaction for the batch: an error on any row rolls the whole batch back, and
    the CRL is re-signed once for it on commit, not once per certificate. A certificate
    already revoked (before, or meanwhile by someone else) is only skipped.
    """
    revoked: list[Certificate] = []
    skipped = 0
    with transaction.atomic():
        for certificate_id in certificate_ids:
            try:
                revoked.append(
                    certificate_revoke(
                        certificate_id=certificate_id,
                        reason=reason,
                        via=via,
                        actor=actor,
                        now=now,
                        compromised_at=compromised_at,
                        comment=comment,
                    )
                )
            except AlreadyRevoked:
                skipped += 1
    return Revocations(revoked=revoked, skipped=skipped)


def _request_end_unsent(certificate: Certificate, *, now: datetime) -> None:
    """A request still « sending » ends with its certificate: nothing more will be sent."""
    CertificateRequest.objects.filter(
        pk=certificate.request_id, status=CertificateRequest.Status.SENDING
    ).update(
        status=CertificateRequest.Status.FAILED,
        completed_at=now,
        last_error="certificate revoked before its e-mails were all sent",
    )


def certificates_supersede(*, now: datetime) -> list[int]:
    """Revoke as superseded the older certificates of professionals whose new one has arrived.

    The new certificate must have been delivered (its request « sent »)
    ``MYCERT_SUPERSEDE_AFTER_DAYS`` ago or more (0: at once), and must not be revoked
    itself: the grace period lets the vendor install the new keystore while the old
    one still works. One transaction per certificate; one revoked meanwhile (the
    helpdesk, the professional, another beat) is skipped, not an error.
    """
    delivered_before = now - timedelta(days=settings.MYCERT_SUPERSEDE_AFTER_DAYS)
    newer = Certificate.objects.not_revoked().filter(
        professional_id=OuterRef("professional_id"),
        issued_at__gt=OuterRef("issued_at"),
        request__status=CertificateRequest.Status.SENT,
        request__completed_at__lte=delivered_before,
    )
    superseded: list[int] = []
    candidates = list(
        Certificate.objects.not_revoked()
        .filter(Exists(newer))
        .annotate(replacement=Subquery(newer.order_by("-issued_at").values("serial")[:1]))
        .order_by("pk")
        .values_list("pk", "replacement")
    )
    for older_id, replacement_serial in candidates:
        try:
            certificate_revoke(
                certificate_id=older_id,
                reason=Certificate.RevocationReason.SUPERSEDED,
                via=Certificate.RevokedVia.SUPERSEDED,
                actor=None,
                comment=f"Superseded by certificate {replacement_serial}",
                now=now,
            )
        except AlreadyRevoked:
            continue
        superseded.append(older_id)
    return superseded


def _publish_crl() -> None:
    from mycert.tasks.publication import publish_crl

    publish_crl.delay()


def _publish_once_after_commit() -> None:
    """Re-sign the CRL once the transaction commits (RFC 5280 §3.3; ETSI).

    A bulk revocation of N certificates in one transaction signs one CRL, not N;
    a rolled-back transaction drops its callbacks, and with them this one. Robust: a
    broker that is down must not turn a committed revocation into an error page; the
    hourly CRL of beat publishes it then (and OCSP answers from the database meanwhile).
    """
    pending = transaction.get_connection().run_on_commit
    if not any(callback is _publish_crl for _, callback, _ in pending):
        transaction.on_commit(_publish_crl, robust=True)
