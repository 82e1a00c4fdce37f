"""Notices to professionals and vendors: revocation and expiry reminders (docs/architecture.md «
Revocation »).

Both are outbox rows (``mycert.outbox``) with an idempotency key, so a
notice exists at most once whatever runs twice: ``revocation:<certificate>:<recipient>``
and ``expiry:<certificate>:<days>``. They carry no secret and nothing is sealed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef

from mycert.models import Certificate, Delivery, Vendor
from mycert.outbox import deliveries_enqueue_on_commit, delivery_create_notice

__all__ = [
    "EXPIRY_REMINDER_DAYS",
    "ExpiryReminderDue",
    "expiry_reminders_create",
    "expiry_reminders_due",
    "revocation_notices_create",
]

logger = logging.getLogger(__name__)

#: Reminders before a certificate ends, in days; each one is sent at most once.
EXPIRY_REMINDER_DAYS = (60, 30, 7)


def revocation_notices_create(*, certificate: Certificate) -> list[Delivery]:
    """Write the revocation notices inside the revoking transaction; send them on commit.

    The professional is told in their current language; the vendor chosen on the request
    (if any) in the request's language, encrypted to its key when one is on file — the
    vendor holds a copy of the keystore and must know it is dead.
    """
    if certificate.revoked_at is None:
        raise ValueError(f"Certificate {certificate.pk} is not revoked.")
    request = certificate.request
    professional = certificate.professional
    targets: list[tuple[str, str, str, Vendor | None]] = [
        (Delivery.Recipient.PROFESSIONAL, professional.email, professional.language, None)
    ]
    if request.vendor is not None:
        targets.append(
            (Delivery.Recipient.VENDOR, request.vendor.email, request.language, request.vendor)
        )
    rows: list[Delivery] = []
    for recipient, to_email, language, vendor in targets:
        row, created = delivery_create_notice(
            certificate=certificate,
            recipient=recipient,
            content=Delivery.Content.REVOCATION_NOTICE,
            to_email=to_email,
            language=language,
            vendor=vendor,
            key=f"revocation:{certificate.pk}:{recipient}",
        )
        if created:
            rows.append(row)
    deliveries_enqueue_on_commit([row.pk for row in rows])
    return rows


@dataclass(frozen=True)
class ExpiryReminderDue:
    certificate_id: int
    #: The threshold this reminder stands for (60, 30 or 7).
    days: int


def _threshold(certificate: Certificate, now: datetime) -> int | None:
    """The tightest threshold the certificate has crossed, or None before the first."""
    left = certificate.not_after - now
    crossed = [days for days in EXPIRY_REMINDER_DAYS if left <= timedelta(days=days)]
    return min(crossed) if crossed else None


def _candidates(now: datetime) -> list[Certificate]:
    newer_valid = (
        Certificate.objects.valid(now)
        .filter(professional_id=OuterRef("professional_id"), issued_at__gt=OuterRef("issued_at"))
        .values("pk")
    )
    return list(
        Certificate.objects.expiring_within(now, max(EXPIRY_REMINDER_DAYS))
        # Renewed: the newer certificate replaces this one once delivered; no reminder.
        .exclude(Exists(newer_valid))
        .order_by("not_after", "pk")
    )


def expiry_reminders_due(*, now: datetime) -> list[ExpiryReminderDue]:
    """Valid, not renewed certificates whose next reminder has not been sent.

    Only the tightest threshold crossed counts: a certificate first seen 20 days before
    its end gets the 30-day reminder, never the 60-day one afterwards.
    """
    due = []
    for certificate in _candidates(now):
        days = _threshold(certificate, now)
        if days is not None and days not in certificate.expiry_reminders_sent:
            due.append(ExpiryReminderDue(certificate.pk, days))
    return due


def expiry_reminders_create(*, now: datetime) -> list[int]:
    """Write the due reminders to the outbox, one transaction per certificate; return their ids.

    The certificate row is locked and checked again, so two runs at once (two beats, a
    retried task) write each reminder once; the idempotency key is the last guard.
    """
    created: list[int] = []
    for item in expiry_reminders_due(now=now):
        with transaction.atomic():
            certificate = (
                Certificate.objects.select_for_update(of=("self",))
                .select_related("professional")
                .get(pk=item.certificate_id)
            )
            if (
                certificate.revoked_at is not None
                or certificate.not_after <= now
                or item.days in certificate.expiry_reminders_sent
                or _threshold(certificate, now) != item.days
            ):
                continue
            certificate.expiry_reminders_sent = sorted(
                {*certificate.expiry_reminders_sent, item.days}, reverse=True
            )
            certificate.save(update_fields=["expiry_reminders_sent"])
            row, was_created = delivery_create_notice(
                certificate=certificate,
                recipient=Delivery.Recipient.PROFESSIONAL,
                content=Delivery.Content.EXPIRY_REMINDER,
                to_email=certificate.professional.email,
                language=certificate.professional.language,
                key=f"expiry:{certificate.pk}:{item.days}",
            )
            if was_created:
                created.append(row.pk)
                logger.info(
                    "certificate %s: %s-day expiry reminder queued (delivery %s)",
                    certificate.pk,
                    item.days,
                    row.pk,
                )
    return created
