"""Send the outbox's e-mails and react to what happened: thin tasks, ids only.

The outbox (``mycert.outbox``) only says what happened; the request's lifecycle is
decided here, in the task layer: a professional's last e-mail sent closes the request
(``requests_close_sent``, handed to the outbox to run in the transaction that records
that e-mail; ``request_mark_sent`` for what the sweep finds) and, with
``MYCERT_SUPERSEDE_AFTER_DAYS`` at 0, supersedes the older certificates at once; an e-mail failed for good tells the helpdesk, and a vendor copy the worker refused
(its address or key not the confirmed ones) tells the security officer too.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mycert.models import Delivery
from mycert.outbox import (
    SendOutcome,
    SendResult,
    deliveries_due_ids,
    deliveries_failure_unreported_ids,
    deliveries_send,
    deliveries_wipe_failed,
)
from mycert.services.issuance import (
    delivery_failure_report,
    request_mark_sent,
    requests_close_sent,
    requests_fail_undeliverable,
    requests_sent_unclosed_certificate_ids,
)
from mycert.services.revocation import certificates_supersede

__all__ = [
    "send_deliveries_now",
    "send_delivery",
    "supersede_certificates",
    "sweep_outbox",
    "wipe_failed_payloads",
]

logger = logging.getLogger(__name__)


def send_deliveries_now(
    delivery_ids: Iterable[int], *, leased: Sequence[Delivery] = ()
) -> list[SendOutcome]:
    """Send these deliveries in this worker, then those they unblock, and react.

    A certificate's e-mails go as one batch (one claim, one relay session, one record):
    the password e-mail follows its keystore e-mail at once instead of waiting behind
    every task queued meanwhile. A worker lost half-way leaves rows the sweep finds; a
    temporary failure schedules a task. ``leased``: rows the issuer's transaction wrote
    leased to this worker, sent in the first batch without a claim.
    """
    outcomes: list[SendOutcome] = []
    leased_ids = {row.pk for row in leased}
    # Batches of (ids to claim, rows already leased to this worker).
    pending: deque[tuple[list[int], Sequence[Delivery]]] = deque(
        [([pk for pk in delivery_ids if pk not in leased_ids], leased)]
    )
    while pending:
        batch, own = pending.popleft()
        if not batch and not own:
            continue
        now = timezone.now()
        results = deliveries_send(
            delivery_ids=batch, now=now, on_completion=requests_close_sent, leased=own
        )
        outcomes += results
        unblocked: list[int] = []
        for outcome in results:
            unblocked += outcome.ready_ids
            _react(outcome)
        if unblocked:
            pending.append((unblocked, ()))
    return outcomes


def _react(outcome: SendOutcome) -> None:
    """What the lifecycle does about one outcome of the outbox."""
    if outcome.result is SendResult.RETRY and outcome.retry_at is not None:
        # The row's next_attempt_at is the truth; this task only brings the attempt
        # back on time (one second late rather than early, which would be skipped).
        # The back-off is capped at 30 min, below the broker's visibility timeout.
        countdown = max(math.ceil((outcome.retry_at - timezone.now()).total_seconds()) + 1, 1)
        send_delivery.apply_async((outcome.delivery_id,), countdown=countdown)
    elif outcome.failure_to_report:
        delivery_failure_report(delivery_id=outcome.delivery_id, now=timezone.now())
    if outcome.completion_handled:
        _closed()
    elif outcome.issuance_sent_certificate_id is not None:
        _close(outcome.issuance_sent_certificate_id)


def _close(certificate_id: int) -> None:
    if request_mark_sent(certificate_id=certificate_id, now=timezone.now()):
        _closed()


def _closed() -> None:
    """A request was closed: what follows at once (superseding, if so configured)."""
    if settings.MYCERT_SUPERSEDE_AFTER_DAYS == 0:
        # Robust: the beat's hourly run supersedes if the broker is down now.
        transaction.on_commit(supersede_certificates.delay, robust=True)


# Names fixed (not derived from the module path): the beat schedule in settings and
# tasks already queued keep working if this module moves.
@shared_task(name="mycert.tasks.send_delivery", acks_late=True, ignore_result=True)
def send_delivery(delivery_id: int) -> str:
    """Send delivery ``delivery_id`` if due, and what it unblocks; schedule retries."""
    return send_deliveries_now([delivery_id])[0].result.value


@shared_task(name="mycert.tasks.sweep_outbox", acks_late=True, ignore_result=True)
def sweep_outbox() -> int:
    """Queue every due delivery (lost tasks, expired leases, a broker that was down);
    close the requests whose e-mails are all sent and report the failures for good that
    a worker lost before it could."""
    for certificate_id in requests_sent_unclosed_certificate_ids():
        _close(certificate_id)
    for delivery_id in deliveries_failure_unreported_ids():
        if delivery_failure_report(delivery_id=delivery_id, now=timezone.now()):
            logger.warning("outbox sweep reported the failure of delivery %s", delivery_id)
    due = deliveries_due_ids(now=timezone.now())
    for delivery_id in due:
        send_delivery.delay(delivery_id)
    if due:
        logger.info("outbox sweep queued %s deliveries", len(due))
    return len(due)


@shared_task(name="mycert.tasks.supersede_certificates", acks_late=True, ignore_result=True)
def supersede_certificates() -> int:
    """Revoke the certificates replaced ``MYCERT_SUPERSEDE_AFTER_DAYS`` ago; return how many."""
    superseded = certificates_supersede(now=timezone.now())
    if superseded:
        logger.info("superseded %s certificates", len(superseded))
    return len(superseded)


@shared_task(name="mycert.tasks.wipe_failed_payloads", acks_late=True, ignore_result=True)
def wipe_failed_payloads() -> int:
    """Wipe payloads failed for ``MYCERT_FAILED_PAYLOAD_DAYS``; end the requests they held."""
    now = timezone.now()
    certificate_ids = deliveries_wipe_failed(now=now)
    failed = requests_fail_undeliverable(certificate_ids=certificate_ids, now=now)
    return len(failed)
