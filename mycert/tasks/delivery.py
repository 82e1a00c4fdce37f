"""Send the outbox's e-mails: thin tasks, ids only; retries are scheduled here."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable

from celery import shared_task
from django.utils import timezone

from mycert.services.delivery import SendOutcome, SendResult, deliveries_due_ids, delivery_send

__all__ = ["send_deliveries_now", "send_delivery", "sweep_outbox"]

logger = logging.getLogger(__name__)


def send_deliveries_now(delivery_ids: Iterable[int]) -> list[SendOutcome]:
    """Send these deliveries in this worker, then those they unblock, in order.

    The password e-mail follows its keystore e-mail in the same task (and on the same
    relay connection) instead of waiting behind every task queued meanwhile: with a
    backlog of issuances, a professional's two e-mails leave together, right after
    their certificate. Each send is the outbox's own claim, send, record, so a worker
    lost half-way leaves rows the sweep finds; a temporary failure schedules a task.
    """
    outcomes: list[SendOutcome] = []
    pending = deque(delivery_ids)
    while pending:
        delivery_id = pending.popleft()
        now = timezone.now()
        outcome = delivery_send(delivery_id=delivery_id, now=now)
        outcomes.append(outcome)
        pending.extend(outcome.ready_ids)
        if outcome.result is SendResult.RETRY and outcome.retry_at is not None:
            # The row's next_attempt_at is the truth; this task only brings the attempt
            # back on time (one second late rather than early, which would be skipped).
            # The back-off is capped at 30 min, below the broker's visibility timeout.
            countdown = max(math.ceil((outcome.retry_at - now).total_seconds()) + 1, 1)
            send_delivery.apply_async((delivery_id,), countdown=countdown)
    return outcomes


# Names fixed (not derived from the module path): the beat schedule in settings and
# tasks already queued keep working if this module moves.
@shared_task(name="mycert.tasks.send_delivery", acks_late=True, ignore_result=True)
def send_delivery(delivery_id: int) -> str:
    """Send delivery ``delivery_id`` if due, and what it unblocks; schedule retries."""
    return send_deliveries_now([delivery_id])[0].result.value


@shared_task(name="mycert.tasks.sweep_outbox", acks_late=True, ignore_result=True)
def sweep_outbox() -> int:
    """Queue every due delivery: lost tasks, expired leases, a broker that was down."""
    due = deliveries_due_ids(now=timezone.now())
    for delivery_id in due:
        send_delivery.delay(delivery_id)
    if due:
        logger.info("outbox sweep queued %s deliveries", len(due))
    return len(due)
