"""Export the audit chain's head outside the database, on beat's schedule."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mycert.services.audit import audit_export_head

__all__ = ["export_audit_head"]


@shared_task(name="mycert.tasks.export_audit_head", acks_late=True)
def export_audit_head() -> int | None:
    """Log the chain's head (and append it to ``MYCERT_AUDIT_HEAD_FILE``); return its id."""
    head = audit_export_head(now=timezone.now())
    return head.event_id if head is not None else None
