"""Send the staff alerts (``mycert.services.alerts``): thin, ids only."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from mycert.mail.transport import BACKOFF_BASE, BACKOFF_CAP, SendError
from mycert.services.alerts import operator_alert_send, operator_alerts_due_ids

__all__ = ["send_operator_alert", "sweep_operator_alerts"]

logger = logging.getLogger(__name__)


@shared_task(
    name="mycert.tasks.send_operator_alert",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(SendError,),
    # The outbox's back-off: the first wait BACKOFF_BASE, doubling, capped at BACKOFF_CAP.
    retry_backoff=int(BACKOFF_BASE.total_seconds()),
    retry_backoff_max=int(BACKOFF_CAP.total_seconds()),
    max_retries=8,
)
def send_operator_alert(alert_id: int) -> bool:
    """Send staff alert ``alert_id`` if it is due; temporary failures retry."""
    return operator_alert_send(alert_id=alert_id, now=timezone.now())


@shared_task(name="mycert.tasks.sweep_operator_alerts", acks_late=True, ignore_result=True)
def sweep_operator_alerts() -> int:
    """Queue every alert a down broker or relay left unsent."""
    due = operator_alerts_due_ids(now=timezone.now())
    for alert_id in due:
        send_operator_alert.delay(alert_id)
    if due:
        logger.info("alert sweep queued %s staff alerts", len(due))
    return len(due)
