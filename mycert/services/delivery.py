"""The transactional outbox: one ``Delivery`` row per e-mail (DESIGN.md §4).

Rows are written in the issuer's transaction, so a certificate never exists without
its e-mails nor the reverse. Only row ids cross the broker; the keystore and the
password wait sealed (``mycert.sealing``) and are wiped once the relay accepted them.

Sending is at least once, not exactly once. A send is three steps:

1. *claim* — a short transaction locks the row, counts the attempt and takes a lease
   (``next_attempt_at = now + lease``) so that a duplicate task or the sweep leaves it
   alone while this worker works;
2. *send* — outside any transaction, so no database lock is held during SMTP;
3. *record* — a second short transaction stores the outcome.

A crash between the relay's "250 OK" and step 3 leaves the row unsent; when the lease
ends the sweep sends it again, under the same ``Message-ID`` (RFC 5322 §3.6.4) so the
relay or the reader's client can recognise the duplicate. Losing a keystore e-mail
would be worse than a rare duplicate.
"""

from __future__ import annotations

import enum
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import partial

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q

from mycert.mail.gpg import OpenPgpError
from mycert.mail.messages import (
    CertificateFacts,
    Encryptor,
    Envelope,
    expiry_message,
    keystore_message,
    password_message,
    revocation_message,
)
from mycert.mail.transport import SendError, send_message
from mycert.models import Certificate, Delivery, Vendor
from mycert.sealing import SealError, seal, unseal
from mycert.services.audit import audit_record
from mycert.services.vendors import openpgp

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "SendOutcome",
    "SendResult",
    "backoff_delay",
    "deliveries_due_ids",
    "deliveries_enqueue_on_commit",
    "delivery_create_for_certificate",
    "delivery_create_notice",
    "delivery_retry",
    "delivery_send",
]

logger = logging.getLogger(__name__)

#: Exponential back-off after a temporary failure: 30 s, 1 min, 2 min … capped at
#: 30 min, far below Redis's 1 h visibility timeout (DESIGN.md §7), so a retry task
#: is never redelivered by the broker while it waits. The base is the setting
#: ``MYCERT_DELIVERY_BACKOFF_SECONDS`` (30; fault tests shorten it); this is its default.
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)

_ISSUANCE_CONTENTS = (Delivery.Content.KEYSTORE, Delivery.Content.PASSWORD)
_DONE = (Delivery.Status.SENT, Delivery.Status.FAILED)


class SendResult(enum.StrEnum):
    SENT = "sent"
    #: Temporary failure; ``retry_at`` says when to try again.
    RETRY = "retry"
    #: Permanent failure or attempts exhausted: the helpdesk decides.
    FAILED = "failed"
    #: Already sent or failed: nothing to do (a duplicate task).
    DONE = "done"
    #: Its ``after`` delivery is not sent yet; it is enqueued when that one is.
    WAITING = "waiting"
    #: Backing off or leased by another worker; the sweep or its retry will come back.
    NOT_DUE = "not_due"


@dataclass(frozen=True)
class SendOutcome:
    delivery_id: int
    result: SendResult
    #: Deliveries that became sendable (the password e-mail after its keystore e-mail).
    ready_ids: tuple[int, ...] = ()
    retry_at: datetime | None = None
    error: str = ""


def backoff_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1-based)."""
    exponent = max(attempts - 1, 0)
    if exponent >= 16:  # 30 s · 2^16 is far past the cap; avoid huge numbers
        return BACKOFF_CAP
    base = timedelta(seconds=settings.MYCERT_DELIVERY_BACKOFF_SECONDS)
    return min(base * (1 << exponent), BACKOFF_CAP)


def _lease() -> timedelta:
    # Long enough for one SMTP conversation (connect, EHLO, TLS, DATA; each step bounded
    # by EMAIL_TIMEOUT) plus OpenPGP encryption; a crashed worker's row is swept after.
    return timedelta(seconds=max(4 * int(settings.EMAIL_TIMEOUT or 30), 60))


def _message_id() -> str:
    """A new RFC 5322 §3.6.4 ``msg-id`` on the sender's domain."""
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    domain = address.rpartition("@")[2] or "mycert.invalid"
    return f"<{uuid.uuid4().hex}@{domain}>"


# --- Creating the outbox rows -------------------------------------------------------------


@transaction.atomic(savepoint=False)  # inside the issuer's transaction, all or nothing
def delivery_create_for_certificate(
    *,
    certificate: Certificate,
    keystore: bytes,
    password: str,
    vendor: Vendor | None,
    language: str,
) -> list[Delivery]:
    """Write the certificate's e-mails to the outbox, inside the issuer's transaction.

    Two rows for the professional (keystore, then password), two more for the vendor
    when one was chosen. The caller enqueues the rows without ``after`` once committed.
    """
    recipients: list[tuple[str, str, Vendor | None, str]] = [
        (Delivery.Recipient.PROFESSIONAL, certificate.professional.email, None, "")
    ]
    if vendor is not None:
        # The fingerprint is pinned now: a key changed later does not redirect this mail.
        recipients.append((Delivery.Recipient.VENDOR, vendor.email, vendor, vendor.pgp_fingerprint))
    sealed_keystore = seal(keystore)
    sealed_password = seal(password.encode())
    created: list[Delivery] = []
    for recipient, to_email, to_vendor, fingerprint in recipients:
        first = None
        for content, payload in (
            (Delivery.Content.KEYSTORE, sealed_keystore),
            (Delivery.Content.PASSWORD, sealed_password),
        ):
            row = Delivery.objects.create(
                certificate=certificate,
                recipient=recipient,
                content=content,
                to_email=to_email,
                vendor=to_vendor,
                language=language,
                pgp_fingerprint=fingerprint,
                sealed_payload=payload,
                after=first,
                message_id=_message_id(),
                key=f"cert:{certificate.pk}:{recipient}:{content}",
            )
            first = first or row
            created.append(row)
    return created


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
    if content in _ISSUANCE_CONTENTS:
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


# --- Sending ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    """What the send step needs, read while the row was locked."""

    delivery_id: int
    content: str
    envelope: Envelope
    facts: CertificateFacts
    sealed_payload: bytes | None
    armored_key: str
    attempts: int


def _claim(delivery_id: int, now: datetime) -> _Claim | SendOutcome:
    """Lock the row, check it is due, count the attempt and lease it."""
    with transaction.atomic():
        delivery = (
            # of=self: PostgreSQL cannot lock the nullable side of the outer joins.
            Delivery.objects.select_for_update(of=("self",))
            .select_related("certificate__professional", "vendor", "after")
            .get(pk=delivery_id)
        )
        if delivery.status in _DONE:
            return SendOutcome(delivery_id, SendResult.DONE)
        if delivery.after is not None and delivery.after.status != Delivery.Status.SENT:
            return SendOutcome(delivery_id, SendResult.WAITING)
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return SendOutcome(delivery_id, SendResult.NOT_DUE, retry_at=delivery.next_attempt_at)
        if delivery.content in _ISSUANCE_CONTENTS and delivery.sealed_payload is None:
            # Wiped but not marked sent: nothing left that could be sent.
            return _record_failure(
                delivery, now, SendError(False, "the payload is gone"), claimed=False
            )
        delivery.attempts += 1
        delivery.next_attempt_at = now + _lease()
        delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
        certificate = delivery.certificate
        professional = certificate.professional
        return _Claim(
            delivery_id=delivery.pk,
            content=delivery.content,
            envelope=Envelope(
                to=delivery.to_email,
                message_id=delivery.message_id,
                language=delivery.language,
                pgp_fingerprint=delivery.pgp_fingerprint,
            ),
            facts=CertificateFacts(
                serial=certificate.serial,
                professional_name=professional.full_name,
                professional_id=professional.professional_id,
                not_after=certificate.not_after,
                vendor_name=delivery.vendor.name if delivery.vendor is not None else "",
                extra=_notice_facts(delivery.content, certificate, now),
            ),
            sealed_payload=(
                bytes(delivery.sealed_payload) if delivery.sealed_payload is not None else None
            ),
            armored_key=delivery.vendor.pgp_public_key if delivery.vendor is not None else "",
            attempts=delivery.attempts,
        )


def _notice_facts(content: str, certificate: Certificate, now: datetime) -> dict[str, object]:
    """What a notice says beyond the certificate itself, read when it is sent."""
    if content == Delivery.Content.REVOCATION_NOTICE:
        superseded = certificate.revocation_reason == Certificate.RevocationReason.SUPERSEDED
        replacement = (
            Certificate.objects.filter(
                professional_id=certificate.professional_id, issued_at__gt=certificate.issued_at
            )
            .not_revoked()
            .order_by("-issued_at")
            .first()
            if superseded
            else None
        )
        return {
            "revoked_at": certificate.revoked_at,
            "reason": certificate.revocation_reason,
            # Lazy: rendered in the mail's language by the builder's translation override.
            "reason_label": Certificate.RevocationReason(certificate.revocation_reason).label
            if certificate.revocation_reason
            else "",
            "via": certificate.revoked_via,
            "superseded": superseded,
            "replacement_serial_prefix": replacement.serial[:16].lower() if replacement else "",
            "replacement_not_after": replacement.not_after if replacement else None,
        }
    if content == Delivery.Content.EXPIRY_REMINDER:
        # Counted when the mail leaves, not when the row was written: a mail delayed by
        # retries still tells the truth.
        return {"days_left": max(math.ceil((certificate.not_after - now) / timedelta(days=1)), 0)}
    return {}


def _keystore(claim: _Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return keystore_message(
        envelope=claim.envelope, facts=claim.facts, keystore=payload, encrypt=encrypt
    )


def _password(claim: _Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return password_message(
        envelope=claim.envelope, facts=claim.facts, password=payload.decode(), encrypt=encrypt
    )


def _revocation(claim: _Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return revocation_message(envelope=claim.envelope, facts=claim.facts, encrypt=encrypt)


def _expiry(claim: _Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return expiry_message(envelope=claim.envelope, facts=claim.facts, encrypt=encrypt)


#: One builder per ``Delivery.Content``. Notices carry no payload (``b""``).
_BUILDERS: dict[str, Callable[[_Claim, bytes, Encryptor | None], EmailMessage]] = {
    Delivery.Content.KEYSTORE: _keystore,
    Delivery.Content.PASSWORD: _password,
    Delivery.Content.REVOCATION_NOTICE: _revocation,
    Delivery.Content.EXPIRY_REMINDER: _expiry,
}


def _build(claim: _Claim, now: datetime) -> EmailMessage:
    """Open the payload and build the e-mail; ``SendError`` (permanent) if impossible."""
    builder = _BUILDERS.get(claim.content)
    if builder is None:
        raise SendError(False, f"no e-mail is defined for content {claim.content!r}")
    encrypt: Encryptor | None = None
    if claim.envelope.pgp_fingerprint:
        keyring = openpgp()

        def encrypt(data: bytes, fingerprint: str) -> bytes:
            return keyring.encrypt(data, fingerprint, now=now, armored_key=claim.armored_key)

    try:
        payload = unseal(claim.sealed_payload) if claim.sealed_payload is not None else b""
        return builder(claim, payload, encrypt)
    except SealError as exc:
        raise SendError(False, f"sealed payload unreadable: {exc}") from exc
    except OpenPgpError as exc:
        # The pinned key expired, was revoked or replaced: only a person can fix that.
        raise SendError(False, f"OpenPGP: {exc}") from exc


def delivery_send(*, delivery_id: int, now: datetime) -> SendOutcome:
    """Send one outbox e-mail if it is due; record the outcome (see the module docstring)."""
    claimed = _claim(delivery_id, now)
    if isinstance(claimed, SendOutcome):
        logger.debug("delivery %s: %s", delivery_id, claimed.result)
        return claimed
    error: SendError | None = None
    try:
        send_message(_build(claimed, now))
    except SendError as exc:
        error = exc
    except Exception as exc:
        # A bug or a broken installation (templates, gpg binary): counted as a temporary
        # failure so that the attempts run out and the helpdesk sees the row, rather
        # than a leased row retried by the sweep forever. The type only: no content.
        logger.exception(
            "delivery %s: unexpected error while sending",
            delivery_id,
            extra={"delivery_id": delivery_id},
        )
        error = SendError(True, f"internal error: {type(exc).__name__}")
    try:
        return _record(delivery_id, now, error)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        # The database connection dropped while the relay had the e-mail (a failover, an
        # idle cut): record on a fresh connection rather than leave the row leased, to be
        # sent a second time when the lease ends.
        logger.warning("delivery %s: database connection lost, recording again", delivery_id)
        connection.close_if_unusable_or_obsolete()
        return _record(delivery_id, now, error)


def _record(delivery_id: int, now: datetime, error: SendError | None) -> SendOutcome:
    """Store the outcome of an attempt (step 3 of the module docstring)."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status in _DONE:
            # Another worker took over after our lease ran out and already recorded it.
            return SendOutcome(delivery_id, SendResult.DONE)
        if error is not None:
            return _record_failure(delivery, now, error, claimed=True)
        return _record_success(delivery, now)


def _record_success(delivery: Delivery, now: datetime) -> SendOutcome:
    delivery.status = Delivery.Status.SENT
    delivery.sent_at = now
    delivery.next_attempt_at = None
    delivery.last_error = ""
    # ETSI EN 319 411-1: no copy of the secret is kept once it is delivered.
    delivery.sealed_payload = None
    delivery.save(
        update_fields=[
            "status",
            "sent_at",
            "next_attempt_at",
            "last_error",
            "sealed_payload",
            "updated_at",
        ]
    )
    ready: tuple[int, ...] = ()
    all_sent = False
    if delivery.content == Delivery.Content.KEYSTORE:
        # Only a keystore e-mail is waited for (by its password e-mail).
        ready = tuple(
            Delivery.objects.filter(after=delivery)
            .filter(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING])
            .values_list("pk", flat=True)
        )
    elif delivery.content == Delivery.Content.PASSWORD:
        # A password e-mail leaves after its keystore e-mail, so it is the last of its
        # pair: the request is complete once no e-mail of the certificate is unsent.
        all_sent = not Delivery.objects.issuance_not_sent(delivery.certificate_id).exists()
    # The audit event comes after the reads: it takes the chain's lock, which every
    # other writer waits for until this transaction commits.
    audit_record(
        actor="system",
        action="delivery.sent",
        target=delivery,
        details={
            "certificate_id": delivery.certificate_id,
            "recipient": delivery.recipient,
            "content": delivery.content,
            "attempts": delivery.attempts,
            "encrypted_to": delivery.pgp_fingerprint,
            "message_id": delivery.message_id,
        },
    )
    logger.info(
        "delivery %s sent (attempt %s)",
        delivery.pk,
        delivery.attempts,
        extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
    )
    if all_sent:
        # Imported here: issuance imports this module inside its own functions.
        from mycert.services.issuance import request_mark_sent

        request_mark_sent(certificate_id=delivery.certificate_id)
    return SendOutcome(delivery.pk, SendResult.SENT, ready_ids=ready)


def _record_failure(
    delivery: Delivery, now: datetime, error: SendError, *, claimed: bool
) -> SendOutcome:
    delivery.last_error = error.reason
    exhausted = delivery.attempts >= settings.MYCERT_DELIVERY_MAX_ATTEMPTS
    if error.temporary and not exhausted:
        delivery.status = Delivery.Status.RETRYING
        delivery.next_attempt_at = now + backoff_delay(delivery.attempts)
        delivery.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])
        logger.warning(
            "delivery %s: temporary failure on attempt %s, next at %s",
            delivery.pk,
            delivery.attempts,
            delivery.next_attempt_at.isoformat(),
            extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
        )
        return SendOutcome(
            delivery.pk, SendResult.RETRY, retry_at=delivery.next_attempt_at, error=error.reason
        )
    # The payload stays sealed so that the helpdesk can send it again after a fix.
    delivery.status = Delivery.Status.FAILED
    delivery.next_attempt_at = None
    delivery.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])
    audit_record(
        actor="system",
        action="delivery.failed",
        target=delivery,
        details={
            "certificate_id": delivery.certificate_id,
            "recipient": delivery.recipient,
            "content": delivery.content,
            "attempts": delivery.attempts,
            "permanent": not error.temporary,
            "error": error.reason,
        },
    )
    logger.error(
        "delivery %s failed after %s attempt(s)%s",
        delivery.pk,
        delivery.attempts,
        "" if claimed else " (not attempted)",
        extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
    )
    return SendOutcome(delivery.pk, SendResult.FAILED, error=error.reason)


# --- Helpdesk and sweep ---------------------------------------------------------------------


@transaction.atomic
def delivery_retry(*, delivery_id: int, actor: str) -> None:
    """Put a failed delivery back in the queue (helpdesk), attempts reset.

    ``actor`` is an audit label (``mycert.services.audit.actor_label(user)``). The
    send is enqueued on commit; if the broker is down then, the sweep finds the row.

    A vendor copy is re-pinned to the vendor's current key: the usual cause of a
    permanent failure is an expired or replaced key, which the helpdesk fixed first.
    """
    delivery = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("vendor")
        .get(pk=delivery_id)
    )
    if delivery.status != Delivery.Status.FAILED:
        raise ValueError(
            f"Delivery {delivery.pk} is {delivery.status}; only failed ones are retried."
        )
    if delivery.content in _ISSUANCE_CONTENTS and delivery.sealed_payload is None:
        raise ValueError(f"Delivery {delivery.pk} has no payload left to send.")
    details: dict[str, object] = {"previous_error": delivery.last_error}
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
    delivery.status = Delivery.Status.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = None
    delivery.last_error = ""
    delivery.save(
        update_fields=[
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "pgp_fingerprint",
            "updated_at",
        ]
    )
    audit_record(actor=actor, action="delivery.retried", target=delivery, details=details)
    logger.info("delivery %s queued again by %s", delivery.pk, actor)
    transaction.on_commit(partial(_enqueue, delivery.pk), robust=True)


def _enqueue(delivery_id: int) -> None:
    # Imported here: the tasks module imports this one.
    from mycert.tasks.delivery import send_delivery

    send_delivery.delay(delivery_id)


def deliveries_due_ids(*, now: datetime) -> list[int]:
    """Unsent deliveries whose time has come and whose ``after`` mail is sent."""
    return list(
        Delivery.objects.due(now)
        .filter(Q(after__isnull=True) | Q(after__status=Delivery.Status.SENT))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
