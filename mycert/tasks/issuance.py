"""Issue a request's certificate in the background."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from mycert.services.issuance import request_issue, request_mark_issuing

__all__ = ["issue_certificate"]

logger = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=20)
def issue_certificate(self, request_id: int) -> None:  # type: ignore[no-untyped-def]
    """Issue the certificate of request ``request_id`` and queue its keystore e-mails."""
    from mycert.tasks.delivery import send_delivery

    request_mark_issuing(request_id=request_id)
    try:
        outcome = request_issue(request_id=request_id, now=timezone.now())
    except (OperationalError, InterfaceError) as exc:
        # A dropped connection or a lock timeout: the request is untouched, try again.
        logger.warning("request %s: database error, retrying (%s)", request_id, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(5 * 2**self.request.retries, 300)) from exc
    for delivery_id in outcome.ready_delivery_ids:
        send_delivery.delay(delivery_id)
