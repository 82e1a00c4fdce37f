"""Expiry reminders, once a day: thin, ids only."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from mycert.services.notices import expiry_reminders_create
from mycert.tasks.delivery import send_delivery

__all__ = ["send_expiry_reminders"]

logger = logging.getLogger(__name__)


@shared_task(name="mycert.tasks.send_expiry_reminders", acks_late=True, ignore_result=True)
def send_expiry_reminders() -> int:
    """Write the reminders due today to the outbox and queue them; return how many."""
    created = expiry_reminders_create(now=timezone.now())
    for delivery_id in created:
        send_delivery.delay(delivery_id)
    if created:
        logger.info("queued %s expiry reminders", len(created))
    return len(created)
