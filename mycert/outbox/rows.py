"""Writing, cancelling, wiping and re-queueing outbox rows (see ``mycert.outbox``)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from mycert.models import AuditEvent, Certificate, Delivery, Vendor
from mycert.outbox.content import password_payload_with_code
from mycert.sealing import reseal, seal
from mycert.services.audit import audit_record

__all__ = [
    "ISSUANCE_CONTENTS",
    "cancel_reason",
    "clear_copy_forbidden",
    "deliveries_cancel_for_certificate",
    "deliveries_due_ids",
    "deliveries_enqueue_on_commit",
    "deliveries_reseal",
    "deliveries_wipe_failed",
    "delivery_create_for_certificate",
    "delivery_create_notice",
    "delivery_retry",
    "lease_duration",
]

logger = logging.getLogger(__name__)

#: The e-mails that carry a secret and are written with their certificate.
ISSUANCE_CONTENTS = (Delivery.Content.KEYSTORE, Delivery.Content.PASSWORD)


def lease_duration() -> timedelta:
    """How long a claimed row is its worker's alone before the sweep may send it again.

    Long enough for one SMTP conversation (connect, EHLO, TLS, DATA; each step bounded
    by EMAIL_TIMEOUT) plus OpenPGP encryption; a crashed worker's row is swept after.
    """
    return timedelta(seconds=max(4 * int(settings.EMAIL_TIMEOUT or 30), 60))


def cancel_reason(delivery: Delivery) -> str:
    """Why this unsent row must not go out at all (empty: it may go)."""
    if delivery.content in ISSUANCE_CONTENTS and delivery.certificate.revoked_at is not None:
        return "certificate revoked before this e-mail was sent"
    if delivery.vendor is not None and not delivery.vendor.is_active:
        return "vendor deactivated before this copy was sent"
    return ""


def clear_copy_forbidden(delivery: Delivery, *, fingerprint: str) -> bool:
    """Whether this vendor copy, encrypted to ``fingerprint`` (empty: to none), would go in
    clear against MYCERT_VENDOR_COPY_REQUIRES_PGP (keystore and password in one mailbox)."""
    return (
        delivery.recipient == Delivery.Recipient.VENDOR
        and delivery.content in ISSUANCE_CONTENTS
        and not fingerprint
        and settings.MYCERT_VENDOR_COPY_REQUIRES_PGP
    )


def _message_id() -> str:
    """A new RFC 5322 §3.6.4 ``msg-id`` on the sender's domain."""
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    domain = address.rpartition("@")[2] or "mycert.invalid"
    return f"<{uuid.uuid4().hex}@{domain}>"


@transaction.atomic(savepoint=False)  # inside the issuer's transaction, all or nothing
def delivery_create_for_certificate(
    *,
    certificate: Certificate,
    keystore: bytes,
    password: str,
    vendor: Vendor | None,
    language: str,
    professional_email: str,
    revocation_code: str = "",
    leased_at: datetime | None = None,
) -> list[Delivery]:
    """Write the certificate's e-mails to the outbox, inside the issuer's transaction.

    Two rows for the professional (keystore, then password), two more for the vendor
    when one was chosen. The caller enqueues the rows without ``after`` once committed.
    ``professional_email`` is the address the issuer verified (the request's proof of
    login), not the professional row's, which any database writer could change. The
    professional's password e-mail alone carries ``revocation_code``: it is sealed with
    the password in that row, and the vendor's copy never holds it.

    ``leased_at``: the caller sends the rows itself right after its commit
    (``mycert.outbox.deliveries_send(leased=…)``, the rows with ``next_attempt_at``
    set). They are written as a claim at that time leaves them: the attempt counted and
    leased, so that neither a duplicate task nor the sweep takes them before the lease
    ends. A row the claim would cancel or refuse (``cancel_reason``, a copy in clear the
    policy forbids) is written unleased, for the claim to judge and record.
    """
    recipients: list[tuple[str, str, Vendor | None, str]] = [
        (Delivery.Recipient.PROFESSIONAL, professional_email, None, "")
    ]
    if vendor is not None:
        # The fingerprint is pinned now: a key changed later does not redirect this mail.
        recipients.append((Delivery.Recipient.VENDOR, vendor.email, vendor, vendor.pgp_fingerprint))
    firsts: list[Delivery] = []
    seconds: list[Delivery] = []
    for recipient, to_email, to_vendor, fingerprint in recipients:
        password_clear = (
            password_payload_with_code(password, revocation_code)
            if revocation_code and recipient == Delivery.Recipient.PROFESSIONAL
            else password.encode()
        )
        # Sealed for this row's address: rewriting ``to_email`` later breaks the seal.
        for content, payload, into in (
            (Delivery.Content.KEYSTORE, seal(keystore, recipient=to_email), firsts),
            (Delivery.Content.PASSWORD, seal(password_clear, recipient=to_email), seconds),
        ):
            into.append(
                Delivery(
                    certificate=certificate,
                    recipient=recipient,
                    content=content,
                    to_email=to_email,
                    vendor=to_vendor,
                    language=language,
                    pgp_fingerprint=fingerprint,
                    sealed_payload=payload,
                    message_id=_message_id(),
                    key=f"cert:{certificate.pk}:{recipient}:{content}",
                )
            )
    if leased_at is not None:
        lease_ends = leased_at + lease_duration()
        for row in firsts + seconds:
            # The claim's own tests (``mycert.outbox.send._claim``), on the rows as written.
            if not cancel_reason(row) and not clear_copy_forbidden(
                row, fingerprint=row.pgp_fingerprint
            ):
                row.attempts = 1
                row.next_attempt_at = lease_ends
    # Two INSERTs instead of four round trips: the keystore rows first, as the password
    # rows point at them (bulk_create sets the primary keys on PostgreSQL and SQLite).
    Delivery.objects.bulk_create(firsts)
    for keystore_row, password_row in zip(firsts, seconds, strict=True):
        password_row.after = keystore_row
    Delivery.objects.bulk_create(seconds)
    return [row for pair in zip(firsts, seconds, strict=True) for row in pair]


def delivery_create_notice(
    *,
    certificate: Certificate,
    recipient: str,
    content: str,
    to_email: str,
    language: str,
    key: str,
    vendor: Vendor | None = None,
) -> tuple[Delivery, bool]:
    """Write one notice (revocation, expiry reminder) to the outbox unless ``key`` exists.

    A notice carries no secret, so nothing is sealed; a vendor's copy is still encrypted
    to the vendor's pinned key, like its keystore e-mails. Returns ``(row, created)``.
    """
    if content in ISSUANCE_CONTENTS:
        raise ValueError(f"{content!r} is not a notice; it is created with its certificate.")
    return Delivery.objects.get_or_create(
        key=key,
        defaults={
            "certificate": certificate,
            "recipient": recipient,
            "content": content,
            "to_email": to_email,
            "vendor": vendor,
            "language": language,
            "pgp_fingerprint": vendor.pgp_fingerprint if vendor is not None else "",
            "message_id": _message_id(),
        },
    )


def deliveries_enqueue_on_commit(delivery_ids: list[int]) -> None:
    """Queue the sends once the current transaction commits (the sweep is the safety net)."""
    for delivery_id in delivery_ids:
        transaction.on_commit(partial(_enqueue, delivery_id), robust=True)


#: The send task, named as registered (``mycert.tasks.delivery``). The outbox queues it
#: by that name: importing the task module would import the services above the outbox.
SEND_TASK_NAME = "mycert.tasks.send_delivery"


def _enqueue(delivery_id: int) -> None:
    # Looked up in the app's registry rather than sent blindly (``send_task``), so that
    # eager mode (the tests) and the task's own options apply. Only an id crosses the broker.
    current_app.tasks[SEND_TASK_NAME].delay(delivery_id)


@transaction.atomic(savepoint=False)  # inside the revoking transaction
def deliveries_cancel_for_certificate(*, certificate_id: int, why: str) -> list[int]:
    """Cancel a certificate's unsent keystore and password e-mails and wipe their payloads.

    For a revoked certificate: a keystore that no longer works must not go out, and
    nothing of it is kept. A row leased by a worker at this moment may still reach the
    relay; its record then finds the row cancelled and keeps it so (the payload is gone).
    """
    rows = list(
        Delivery.objects.select_for_update()
        .filter(certificate_id=certificate_id, content__in=ISSUANCE_CONTENTS)
        .exclude(status__in=[Delivery.Status.SENT, Delivery.Status.CANCELLED])
        .values_list("pk", flat=True)
    )
    if rows:
        Delivery.objects.filter(pk__in=rows).update(
            status=Delivery.Status.CANCELLED,
            sealed_payload=None,
            next_attempt_at=None,
            last_error=why,
        )
        audit_record(
            actor="system",
            action=AuditEvent.Action.DELIVERY_CANCELLED,
            details={"certificate_id": certificate_id, "deliveries": rows, "why": why},
        )
    return rows


def deliveries_reseal(*, batch_size: int = 200) -> int:
    """Seal every waiting payload again with MYCERT_OUTBOX_KEY's first key; return how many.

    The key rotation's second step (docs/deploy.md): once no payload needs the old key,
    it can leave the list. Rows are locked a batch at a time; a row a worker holds is
    left for the next batch, a row sent meanwhile has no payload left to move.
    """
    moved = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            rows = list(
                Delivery.objects.select_for_update(skip_locked=True)
                .filter(pk__gt=last_pk, sealed_payload__isnull=False)
                .order_by("pk")
                .only("pk", "sealed_payload")[:batch_size]
            )
            if not rows:
                break
            for row in rows:
                assert row.sealed_payload is not None  # noqa: S101 - filtered above
                row.sealed_payload = reseal(bytes(row.sealed_payload))
            Delivery.objects.bulk_update(rows, ["sealed_payload"])
            last_pk = rows[-1].pk
            moved += len(rows)
    if moved:
        with transaction.atomic():
            audit_record(
                actor="system",
                action=AuditEvent.Action.OUTBOX_RESEALED,
                details={"deliveries": moved},
            )
    logger.info("sealed %s waiting payloads again with the first outbox key", moved)
    return moved


def deliveries_wipe_failed(*, now: datetime) -> list[int]:
    """Wipe the payloads of e-mails failed for ``MYCERT_FAILED_PAYLOAD_DAYS``; return their certificates.

    The helpdesk had that long to fix the cause and retry; after it, no copy of a
    keystore that nobody received is kept (ETSI EN 319 411-1).
    """
    older_than = now - timedelta(days=settings.MYCERT_FAILED_PAYLOAD_DAYS)
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update()
            .filter(
                status=Delivery.Status.FAILED,
                updated_at__lt=older_than,
                sealed_payload__isnull=False,
            )
            .values_list("pk", "certificate_id")
        )
        if not rows:
            return []
        Delivery.objects.filter(pk__in=[pk for pk, _ in rows]).update(sealed_payload=None)
        audit_record(
            actor="system",
            action=AuditEvent.Action.DELIVERY_PAYLOAD_WIPED,
            details={"deliveries": [pk for pk, _ in rows]},
        )
    logger.info("wiped the payloads of %s failed deliveries", len(rows))
    return sorted({certificate_id for _, certificate_id in rows})


@transaction.atomic
def delivery_retry(*, delivery_id: int, actor: str) -> None:
    """Put a failed delivery back in the queue (helpdesk), attempts reset.

    ``actor`` is an audit label (``mycert.services.audit.actor_label(user)``). The
    send is enqueued on commit; if the broker is down then, the sweep finds the row.

    A vendor copy is re-pinned to the vendor's current key and address: the usual cause
    of a permanent failure is an expired or replaced key, which a superuser changed and a
    security officer confirmed on the worker hosts first (the worker checks again).
    Refused (``ValueError``) for a revoked certificate's keystore or password and for a
    vendor that no longer receives copies.
    """
    delivery = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("vendor", "certificate")
        .get(pk=delivery_id)
    )
    if delivery.status != Delivery.Status.FAILED:
        raise ValueError(
            f"Delivery {delivery.pk} is {delivery.status}; only failed ones are retried."
        )
    if delivery.content in ISSUANCE_CONTENTS and delivery.certificate.revoked_at is not None:
        raise ValueError(
            f"Delivery {delivery.pk} belongs to a revoked certificate; it is not sent."
        )
    if delivery.content in ISSUANCE_CONTENTS and delivery.sealed_payload is None:
        raise ValueError(f"Delivery {delivery.pk} has no payload left to send.")
    if delivery.vendor is not None and not delivery.vendor.is_active:
        raise ValueError(f"Delivery {delivery.pk} is for a deactivated vendor.")
    if delivery.vendor is not None and clear_copy_forbidden(
        delivery, fingerprint=delivery.vendor.pgp_fingerprint
    ):
        raise ValueError(
            f"Delivery {delivery.pk}: {delivery.vendor.name} has no OpenPGP key yet, and a "
            "vendor copy is never sent in clear; a superuser adds the key first."
        )
    details: dict[str, object] = {"previous_error": delivery.last_error}
    if delivery.vendor is not None:
        # The password copy refused with this keystore copy (it was never attempted)
        # waits for it again.
        refused_with_it = Delivery.objects.filter(
            after=delivery,
            vendor=delivery.vendor,
            status=Delivery.Status.FAILED,
            recipient_refused=True,
        ).update(
            status=Delivery.Status.PENDING,
            attempts=0,
            next_attempt_at=None,
            last_error="",
            recipient_refused=False,
            failure_reported_at=None,
        )
        if refused_with_it:
            details["password_copy_requeued"] = True
    if delivery.vendor is not None and delivery.to_email != delivery.vendor.email:
        # The vendor's address changed since (and was confirmed on the workers, or the
        # copy is refused again): the copy and the password copy waiting for it go there.
        details["to_email"] = {"old": delivery.to_email, "new": delivery.vendor.email}
        delivery.to_email = delivery.vendor.email
        Delivery.objects.filter(
            after=delivery,
            vendor=delivery.vendor,
            status__in=(Delivery.Status.PENDING, Delivery.Status.RETRYING),
        ).update(to_email=delivery.vendor.email)
    if (
        delivery.vendor is not None
        and delivery.vendor.pgp_fingerprint
        and delivery.pgp_fingerprint != delivery.vendor.pgp_fingerprint
    ):
        # Only towards a key: a vendor whose key was removed never gets the copy in clear.
        details["pgp_fingerprint"] = {
            "old": delivery.pgp_fingerprint,
            "new": delivery.vendor.pgp_fingerprint,
        }
        delivery.pgp_fingerprint = delivery.vendor.pgp_fingerprint
        # The password copy waits for this keystore copy, pinned to the same old key (or
        # to none): pinned anew with it, so that one retry sends the vendor's pair.
        waiting = (
            Delivery.objects.select_for_update()
            .filter(
                after=delivery,
                vendor=delivery.vendor,
                status__in=(Delivery.Status.PENDING, Delivery.Status.RETRYING),
            )
            .exclude(pgp_fingerprint=delivery.vendor.pgp_fingerprint)
            .first()
        )
        if waiting is not None:
            waiting.pgp_fingerprint = delivery.vendor.pgp_fingerprint
            waiting.save(update_fields=["pgp_fingerprint", "updated_at"])
            details["password_copy_repinned"] = waiting.pk
    delivery.status = Delivery.Status.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = None
    delivery.last_error = ""
    delivery.failure_reported_at = None  # a new failure is a new alert
    delivery.recipient_refused = False
    delivery.save(
        update_fields=[
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "to_email",
            "pgp_fingerprint",
            "failure_reported_at",
            "recipient_refused",
            "updated_at",
        ]
    )
    audit_record(
        actor=actor, action=AuditEvent.Action.DELIVERY_RETRIED, target=delivery, details=details
    )
    logger.info("delivery %s queued again by %s", delivery.pk, actor)
    transaction.on_commit(partial(_enqueue, delivery.pk), robust=True)


def deliveries_failure_unreported_ids() -> list[int]:
    """Keystore and password e-mails failed for good, and vendor e-mails refused by the
    worker's anchor, whose alert was never written."""
    return list(
        Delivery.objects.filter(
            Q(content__in=ISSUANCE_CONTENTS) | Q(recipient_refused=True),
            status=Delivery.Status.FAILED,
            failure_reported_at__isnull=True,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def deliveries_due_ids(*, now: datetime) -> list[int]:
    """Unsent deliveries whose time has come and whose ``after`` mail is sent."""
    return list(
        Delivery.objects.due(now)
        .filter(Q(after__isnull=True) | Q(after__status=Delivery.Status.SENT))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
