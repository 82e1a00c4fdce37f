"""Claim → send → record (see ``mycert.outbox``), a certificate's due e-mails at a time."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q

from mycert.mail.transport import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    SendError,
    backoff_delay,
    send_message,
)
from mycert.models import AuditEvent, Delivery
from mycert.outbox.content import Claim, RecipientRefused, build, claim_of
from mycert.outbox.rows import (
    ISSUANCE_CONTENTS,
    cancel_reason,
    clear_copy_forbidden,
    lease_duration,
)
from mycert.services.audit import AuditEntry, audit_record, audit_record_many

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CompletionHook",
    "SendOutcome",
    "SendResult",
    "backoff_delay",
    "deliveries_send",
    "delivery_send",
]

logger = logging.getLogger(__name__)

_DONE = (Delivery.Status.SENT, Delivery.Status.FAILED, Delivery.Status.CANCELLED)


class SendResult(enum.StrEnum):
    SENT = "sent"
    #: Temporary failure; ``retry_at`` says when to try again.
    RETRY = "retry"
    #: Permanent failure or attempts exhausted: the helpdesk decides.
    FAILED = "failed"
    #: Not sent and never will be: its certificate is revoked or its vendor deactivated.
    CANCELLED = "cancelled"
    #: Already sent, failed or cancelled: nothing to do (a duplicate task).
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
    certificate_id: int | None = None
    recipient: str = ""
    content: str = ""
    #: Set when this record completed the professional's keystore and password e-mails
    #: of certificate N: what the request lifecycle waits for.
    issuance_sent_certificate_id: int | None = None
    #: A vendor copy refused because its row disagrees with the worker's anchor.
    recipient_refused: bool = False
    #: The caller's ``on_completion`` took ``issuance_sent_certificate_id`` in hand in
    #: the transaction that recorded this e-mail (committed with it).
    completion_handled: bool = False

    @property
    def failed_issuance_mail(self) -> bool:
        """A keystore or password e-mail failed for good: a person has to act."""
        return self.result is SendResult.FAILED and self.content in ISSUANCE_CONTENTS

    @property
    def failure_to_report(self) -> bool:
        """Failed for good and worth a staff alert: a keystore or password e-mail, or
        any vendor e-mail refused by the worker's anchor (the security officer's)."""
        return self.failed_issuance_mail or (
            self.result is SendResult.FAILED and self.recipient_refused
        )


def _outcome(delivery: Delivery, result: SendResult, **kwargs: object) -> SendOutcome:
    return SendOutcome(
        delivery.pk,
        result,
        certificate_id=delivery.certificate_id,
        recipient=delivery.recipient,
        content=delivery.content,
        **kwargs,  # type: ignore[arg-type]
    )


def _save(rows: list[Delivery], fields: list[str]) -> None:
    """Write these fields of ``rows``: one plain UPDATE per distinct set of values.

    A batch's rows carry the same values (one lease, one record; the attempt counts
    differ only after a row failed alone), so this is one statement. Django's
    ``bulk_update`` writes a ``CASE`` per field and row instead, whose building cost
    the worker more CPU than the database spent running it; ``save()`` for one row
    goes through the model's signals and field hooks for the same UPDATE.
    """
    groups: dict[tuple[object, ...], list[int]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, name) for name in fields), []).append(row.pk)
    for values, pks in groups.items():
        Delivery.objects.filter(pk__in=pks).update(**dict(zip(fields, values, strict=True)))


#: The caller's step for the certificates whose professional issuance e-mails the record
#: completes, run inside the record's transaction (rows locked, after the check that
#: nothing of the professional's is left unsent): it returns the certificates it took in
#: hand and the audit events of what it wrote, which join the record's own events in
#: one chain INSERT. The outbox stays a mechanism: what completion means (closing a
#: request) is the task layer's to say.
CompletionHook = Callable[[set[int], datetime], tuple[set[int], list[AuditEntry]]]


# --- 1. Claim -------------------------------------------------------------------------------


#: For each row asked for, the rows waiting for it that were unsent when claimed.
_Waiting = dict[int, list[int]]


def _claim(
    delivery_ids: list[int], now: datetime
) -> tuple[list[Claim], list[SendOutcome], _Waiting]:
    """Lock the rows (and the password e-mails waiting for them), lease the due ones.

    One transaction for the whole set: a certificate's keystore e-mail and its
    password e-mail, claimed together, leave in one relay session. Also returns the
    rows waiting for each asked row (``_Waiting``), which the record reports ready.
    """
    claims: list[Claim] = []
    outcomes: list[SendOutcome] = []
    waiting: _Waiting = {delivery_id: [] for delivery_id in delivery_ids}
    with transaction.atomic():
        rows = list(
            # of=self: PostgreSQL cannot lock the nullable side of the outer joins.
            Delivery.objects.select_for_update(of=("self",))
            .select_related("certificate__professional", "vendor")
            # Of the row it waits for, the status alone: a column rather than a whole
            # model, whose columns Django would compile and build on every claim.
            .annotate(after_status=F("after__status"))
            .filter(Q(pk__in=delivery_ids) | Q(after_id__in=delivery_ids))
            .order_by("pk")
        )
        claimed: set[int] = set()
        leased: list[Delivery] = []
        for delivery in rows:
            if delivery.after_id in waiting and delivery.status not in _DONE:
                waiting[delivery.after_id].append(delivery.pk)
        # Keystore e-mails before the password e-mails that wait for them.
        for delivery in sorted(rows, key=lambda d: (d.after_id is not None, d.pk)):
            asked = delivery.pk in delivery_ids
            if delivery.status in _DONE:
                if asked:
                    outcomes.append(_outcome(delivery, SendResult.DONE))
                continue
            if (
                delivery.after_id is not None
                and delivery.after_status != Delivery.Status.SENT  # type: ignore[attr-defined]
                and delivery.after_id not in claimed
            ):
                if asked:
                    outcomes.append(_outcome(delivery, SendResult.WAITING))
                continue
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                if asked:
                    outcomes.append(
                        _outcome(delivery, SendResult.NOT_DUE, retry_at=delivery.next_attempt_at)
                    )
                continue
            cancelled = cancel_reason(delivery)
            if cancelled:
                outcomes.append(_cancel(delivery, cancelled))
                continue
            refused = _clear_copy_refusal(delivery)
            if refused:
                # Failed, not cancelled: the helpdesk is told, and a retry once the
                # vendor has a key pins it and sends the copy encrypted.
                outcomes.append(
                    _record_failure(delivery, now, SendError(False, refused), claimed=False)
                )
                continue
            if delivery.content in ISSUANCE_CONTENTS and delivery.sealed_payload is None:
                # Wiped but not marked sent: nothing left that could be sent.
                outcomes.append(
                    _record_failure(
                        delivery, now, SendError(False, "the payload is gone"), claimed=False
                    )
                )
                continue
            delivery.attempts += 1
            delivery.next_attempt_at = now + lease_duration()
            leased.append(delivery)
            claimed.add(delivery.pk)
            claims.append(claim_of(delivery, now))
        for delivery in leased:
            delivery.updated_at = now
        _save(leased, ["attempts", "next_attempt_at", "updated_at"])
    return claims, outcomes, waiting


def _clear_copy_refusal(delivery: Delivery) -> str:
    """Why this vendor copy may not leave unencrypted (empty: it may leave).

    A copy in clear puts the keystore and its password in the same mailbox, which
    undoes the two-e-mail split (docs/architecture.md « The request's life »). The form offers
    keyless vendors only
    with the policy off, but a request made before the policy, or before an upgrade,
    reaches the outbox with no key pinned: it is judged by today's policy, here.
    """
    if clear_copy_forbidden(delivery, fingerprint=delivery.pgp_fingerprint):
        return (
            "no OpenPGP key is pinned for this vendor copy and MYCERT_VENDOR_COPY_REQUIRES_PGP "
            "forbids sending it in clear: add the vendor's key, then retry"
        )
    return ""


def _cancel(delivery: Delivery, why: str) -> SendOutcome:
    delivery.status = Delivery.Status.CANCELLED
    delivery.sealed_payload = None
    delivery.next_attempt_at = None
    delivery.last_error = why
    delivery.save(
        update_fields=["status", "sealed_payload", "next_attempt_at", "last_error", "updated_at"]
    )
    audit_record(
        actor="system",
        action=AuditEvent.Action.DELIVERY_CANCELLED,
        target=delivery,
        details={"certificate_id": delivery.certificate_id, "why": why},
    )
    logger.info("delivery %s cancelled: %s", delivery.pk, why)
    return _outcome(delivery, SendResult.CANCELLED, error=why)


# --- 2. Send --------------------------------------------------------------------------------


def _send_one(claim: Claim, now: datetime) -> SendError | None:
    try:
        send_message(build(claim, now))
    except SendError as exc:
        return exc
    except Exception as exc:
        # A bug or a broken installation (templates, gpg binary): counted as a temporary
        # failure so that the attempts run out and the helpdesk sees the row, rather
        # than a leased row retried by the sweep forever. The type only: no content.
        logger.exception(
            "delivery %s: unexpected error while sending",
            claim.delivery_id,
            extra={"delivery_id": claim.delivery_id},
        )
        return SendError(True, f"internal error: {type(exc).__name__}")
    return None


def _leased_claims(leased: Sequence[Delivery], now: datetime) -> tuple[list[Claim], _Waiting]:
    """What a claim would have read of rows written leased to this worker.

    ``delivery_create_for_certificate(leased_at=…)`` wrote them in the transaction that
    just committed, with the attempt counted and the lease taken, and this worker holds
    them as written: reading them back under a lock would tell it nothing new. A
    revocation committed since is the race a claim has too (the e-mail at the relay
    while the row is cancelled): the record says it left all the same.
    """
    waiting: _Waiting = {row.pk: [] for row in leased if row.after_id is None}
    for row in leased:
        if row.after_id in waiting:
            waiting[row.after_id].append(row.pk)
    # Keystore e-mails before the password e-mails that wait for them.
    ordered = sorted(leased, key=lambda d: (d.after_id is not None, d.pk))
    return [claim_of(row, now) for row in ordered], waiting


def deliveries_send(
    *,
    delivery_ids: list[int],
    now: datetime,
    on_completion: CompletionHook | None = None,
    leased: Sequence[Delivery] = (),
) -> list[SendOutcome]:
    """Send these outbox e-mails (and the password e-mails they unblock) if due.

    One claim, one relay session, one record for them all (see the package docstring).
    A password e-mail whose keystore e-mail failed in the same batch is not attempted:
    its lease is given back and it waits for the keystore e-mail's next attempt.
    ``on_completion`` runs in the record's transaction (``CompletionHook``).
    ``leased``: rows the caller's own transaction wrote leased to it
    (``delivery_create_for_certificate(leased_at=…)``), sent in the same relay session
    and record without a claim.
    """
    claims, outcomes, waiting = _claim(list(delivery_ids), now) if delivery_ids else ([], [], {})
    if leased:
        leased_claims, leased_waiting = _leased_claims(leased, now)
        claims = leased_claims + claims
        waiting.update(leased_waiting)
    if not claims:
        for outcome in outcomes:
            logger.debug("delivery %s: %s", outcome.delivery_id, outcome.result)
        return outcomes
    errors: dict[int, SendError | None] = {}
    for claim in claims:
        if claim.after_id is not None and claim.after_id in errors and errors[claim.after_id]:
            errors[claim.delivery_id] = _NOT_ATTEMPTED
            continue
        errors[claim.delivery_id] = _send_one(claim, now)
    try:
        recorded = _record(errors, now, on_completion, waiting)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        # The database connection dropped while the relay had the e-mails (a failover, an
        # idle cut): record on a fresh connection rather than leave the rows leased, to be
        # sent a second time when the lease ends.
        logger.warning("deliveries %s: database connection lost, recording again", sorted(errors))
        connection.close_if_unusable_or_obsolete()
        recorded = _record(errors, now, on_completion, waiting)
    return outcomes + recorded


def delivery_send(*, delivery_id: int, now: datetime) -> SendOutcome:
    """Send one outbox e-mail if it is due; record the outcome (see the package docstring).

    The password e-mail waiting for it is not taken along: its outcome is the row's
    ``ready_ids``, for the caller to send next.
    """
    claims, outcomes, waiting = _claim([delivery_id], now)
    for outcome in outcomes:
        if outcome.delivery_id == delivery_id:
            return outcome
    own = [claim for claim in claims if claim.delivery_id == delivery_id]
    others = [claim.delivery_id for claim in claims if claim.delivery_id != delivery_id]
    if others:
        # Claimed along with it (the password e-mail): given back at once, untried.
        _record(dict.fromkeys(others, _NOT_ATTEMPTED), now)
    if not own:  # pragma: no cover - the row was asked for and is not an outcome
        raise AssertionError(f"delivery {delivery_id} neither claimed nor decided")
    error = _send_one(own[0], now)
    try:
        recorded = _record({delivery_id: error}, now, waiting=waiting)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        logger.warning("delivery %s: database connection lost, recording again", delivery_id)
        connection.close_if_unusable_or_obsolete()
        recorded = _record({delivery_id: error}, now, waiting=waiting)
    return recorded[0]


# --- 3. Record ------------------------------------------------------------------------------

#: A claimed row left untried (its keystore e-mail failed first): lease and attempt undone.
_NOT_ATTEMPTED = SendError(True, "")


def _record(
    errors: dict[int, SendError | None],
    now: datetime,
    on_completion: CompletionHook | None = None,
    waiting: _Waiting | None = None,
) -> list[SendOutcome]:
    """Store the outcomes of one batch (step 3 of the package docstring).

    ``waiting`` is the claim's: the rows a sent keystore e-mail unblocks, read under the
    claim's lock, so not read again here.
    """
    outcomes: list[SendOutcome] = []
    with transaction.atomic():
        rows = {
            row.pk: row
            for row in Delivery.objects.select_for_update()
            .filter(pk__in=list(errors))
            .order_by("pk")
        }
        sent: list[Delivery] = []
        for delivery_id, error in errors.items():
            delivery = rows[delivery_id]
            if error is _NOT_ATTEMPTED:
                _give_back(delivery)
                continue
            # Cancelled (revoked) while this e-mail was at the relay: it left all the same,
            # and the record says so; the payload is already wiped.
            left_anyway = delivery.status == Delivery.Status.CANCELLED and error is None
            if delivery.status in _DONE and not left_anyway:
                # Another worker took over after our lease ran out and already recorded it.
                outcomes.append(_outcome(delivery, SendResult.DONE))
                continue
            if error is not None:
                outcomes.append(_record_failure(delivery, now, error, claimed=True))
            else:
                sent.append(delivery)
        if sent:
            outcomes += _record_sent(sent, now, on_completion, waiting or {})
    return outcomes


def _give_back(delivery: Delivery) -> None:
    delivery.attempts = max(delivery.attempts - 1, 0)
    delivery.next_attempt_at = None
    delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])


def _record_sent(
    sent: list[Delivery], now: datetime, on_completion: CompletionHook | None, waiting: _Waiting
) -> list[SendOutcome]:
    for delivery in sent:
        delivery.status = Delivery.Status.SENT
        delivery.sent_at = now
        delivery.next_attempt_at = None
        delivery.last_error = ""
        # ETSI EN 319 411-1: no copy of the secret is kept once it is delivered.
        delivery.sealed_payload = None
        delivery.updated_at = now
    _save(
        sent, ["status", "sent_at", "next_attempt_at", "last_error", "sealed_payload", "updated_at"]
    )
    sent_ids = {delivery.pk for delivery in sent}
    # Only a keystore e-mail is waited for (by its password e-mail).
    keystores = [d.pk for d in sent if d.content == Delivery.Content.KEYSTORE]
    # What waits for a keystore e-mail the claim was asked for, it read under its lock
    # (a row waiting for a sent one may only be sent since, which the send step of the
    # next batch sees). A keystore claimed without being asked is read here.
    ready: dict[int, list[int]] = {
        keystore: [pk for pk in waiting[keystore] if pk not in sent_ids]
        for keystore in keystores
        if keystore in waiting
    }
    unknown = [keystore for keystore in keystores if keystore not in waiting]
    if unknown:
        for pk, after_id in (
            Delivery.objects.filter(after_id__in=unknown)
            .filter(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING])
            .exclude(pk__in=sent_ids)
            .values_list("pk", "after_id")
        ):
            ready.setdefault(after_id, []).append(pk)
    # The professional's password e-mail leaves after their keystore e-mail, so it is the
    # last of their pair: once it is recorded, is nothing of theirs left unsent?
    completing = {
        d.certificate_id
        for d in sent
        if d.content == Delivery.Content.PASSWORD and d.recipient == Delivery.Recipient.PROFESSIONAL
    }
    complete: set[int] = set()
    if completing:
        pending = set(
            Delivery.objects.professional_issuance_not_sent(completing).values_list(
                "certificate_id", flat=True
            )
        )
        complete = completing - pending
    handled: set[int] = set()
    completion_events: list[AuditEntry] = []
    if complete and on_completion is not None:
        handled, completion_events = on_completion(complete, now)
    # The audit events come after the reads: they take the chain's lock, which every
    # other writer waits for until this transaction commits. One lock, one read of the
    # chain's end and one INSERT for the batch's events and what completion wrote.
    audit_record_many(
        [
            AuditEntry(
                actor="system",
                action=AuditEvent.Action.DELIVERY_SENT,
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
            for delivery in sent
        ]
        + completion_events
    )
    outcomes = []
    for delivery in sent:
        logger.info(
            "delivery %s sent (attempt %s)",
            delivery.pk,
            delivery.attempts,
            extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
        )
        finishes = (
            delivery.content == Delivery.Content.PASSWORD
            and delivery.recipient == Delivery.Recipient.PROFESSIONAL
            and delivery.certificate_id in complete
        )
        outcomes.append(
            _outcome(
                delivery,
                SendResult.SENT,
                ready_ids=tuple(ready.get(delivery.pk, ())),
                issuance_sent_certificate_id=delivery.certificate_id if finishes else None,
                completion_handled=finishes and delivery.certificate_id in handled,
            )
        )
    return outcomes


def _refuse_waiting_copy(delivery: Delivery, now: datetime) -> None:
    """The password copy waiting for a refused keystore copy goes nowhere either.

    Same vendor row, same address and key: it would be refused in turn. Failed with it
    now, so that the copy as a whole ends ``failed``, its sealed password is wiped with
    the failed payloads, and one alert (the keystore copy's) reports the pair.
    """
    if delivery.vendor_id is None:
        return
    waiting = list(
        Delivery.objects.select_for_update().filter(
            after=delivery,
            vendor_id=delivery.vendor_id,
            status__in=(Delivery.Status.PENDING, Delivery.Status.RETRYING),
        )
    )
    for row in waiting:
        row.status = Delivery.Status.FAILED
        row.next_attempt_at = None
        row.last_error = delivery.last_error
        row.recipient_refused = True
        row.failure_reported_at = now  # reported with its keystore copy
        row.save(
            update_fields=[
                "status",
                "next_attempt_at",
                "last_error",
                "recipient_refused",
                "failure_reported_at",
                "updated_at",
            ]
        )
        audit_record(
            actor="system",
            action=AuditEvent.Action.DELIVERY_FAILED,
            target=row,
            details={
                "certificate_id": row.certificate_id,
                "recipient": row.recipient,
                "content": row.content,
                "attempts": row.attempts,
                "permanent": True,
                "error": row.last_error,
                "recipient_refused": True,
                "with_delivery": delivery.pk,
            },
        )


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
        return _outcome(
            delivery, SendResult.RETRY, retry_at=delivery.next_attempt_at, error=error.reason
        )
    # The payload stays sealed so that the helpdesk can send it again after a fix, for
    # MYCERT_FAILED_PAYLOAD_DAYS (then ``deliveries_wipe_failed``).
    refused = isinstance(error, RecipientRefused)
    delivery.status = Delivery.Status.FAILED
    delivery.next_attempt_at = None
    delivery.recipient_refused = refused
    delivery.save(
        update_fields=[
            "status",
            "next_attempt_at",
            "last_error",
            "recipient_refused",
            "updated_at",
        ]
    )
    details: dict[str, object] = {
        "certificate_id": delivery.certificate_id,
        "recipient": delivery.recipient,
        "content": delivery.content,
        "attempts": delivery.attempts,
        "permanent": not error.temporary,
        "error": error.reason,
    }
    if refused:
        details.update(
            recipient_refused=True, vendor_id=delivery.vendor_id, pinned=delivery.pgp_fingerprint
        )
    audit_record(
        actor="system", action=AuditEvent.Action.DELIVERY_FAILED, target=delivery, details=details
    )
    if refused:
        _refuse_waiting_copy(delivery, now)
        # Off the database too (logs are shipped off the host): the row could be
        # rewritten, the log line cannot. Ids only, never the address (docs/architecture.md « Known
        # pitfalls »).
        logger.error(
            "delivery %s REFUSED: its vendor %s address or OpenPGP key is not the one "
            "confirmed on this worker host",
            delivery.pk,
            delivery.vendor_id,
            extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
        )
    logger.error(
        "delivery %s failed after %s attempt(s)%s",
        delivery.pk,
        delivery.attempts,
        "" if claimed else " (not attempted)",
        extra={"delivery_id": delivery.pk, "certificate_id": delivery.certificate_id},
    )
    return _outcome(delivery, SendResult.FAILED, error=error.reason, recipient_refused=refused)
