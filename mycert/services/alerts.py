"""Alerts to the agency's own staff: the helpdesk and the security officer.

Some events need a person, not a retry: a request that failed for good, a vendor copy
that cannot be delivered, a key reported compromised, a change to where vendor copies
go. Each raises an alert, rendered from ``templates/emails/alerts/<kind>_subject.txt``
and ``<kind>.txt`` in the agency's language (``LANGUAGE_CODE``) and stored in the
transaction of the event itself, so the alert exists exactly when the event does. A
task sends it after commit; the sweep sends whatever a down broker or relay left.

Sending is claim → send → record, like the outbox (``mycert.outbox``) but
without payloads: the claim is one conditional ``UPDATE`` that takes a lease, so the
task and the sweep never send the same alert at the same time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import translation

from mycert.mail.transport import SendError, backoff_delay, send_message
from mycert.models import OperatorAlert

__all__ = [
    "ALERT_LEASE",
    "operator_alert_create",
    "operator_alert_send",
    "operator_alerts_due_ids",
]

logger = logging.getLogger(__name__)

#: How long a claimed alert is left alone: longer than one SMTP exchange with its
#: timeout, short enough that a worker lost mid-send delays the alert by minutes only.
ALERT_LEASE = timedelta(minutes=2)


def _address(recipient: str) -> str:
    if recipient == OperatorAlert.Recipient.SECURITY:
        return str(settings.MYCERT_SECURITY_EMAIL)
    return str(settings.MYCERT_HELPDESK_EMAIL)


@transaction.atomic(savepoint=False)
def operator_alert_create(
    *, recipient: OperatorAlert.Recipient, kind: OperatorAlert.Kind, context: dict[str, Any]
) -> OperatorAlert:
    """Store an alert in the caller's transaction; send it once that commits."""
    with translation.override(settings.LANGUAGE_CODE):
        subject = render_to_string(f"emails/alerts/{kind}_subject.txt", context)
        body = render_to_string(f"emails/alerts/{kind}.txt", context)
    alert = OperatorAlert.objects.create(
        recipient=recipient,
        kind=kind,
        # One line: a subject with a line break would be refused by the mail library.
        subject=" ".join(subject.split())[:255],
        body=body.strip() + "\n",
    )
    from mycert.tasks.alerts import send_operator_alert

    alert_id = alert.pk
    transaction.on_commit(lambda: send_operator_alert.delay(alert_id), robust=True)
    return alert


def _claim(alert_id: int, now: datetime) -> bool:
    """Take the alert for this worker if nobody sent or holds it (one statement)."""
    claimed = (
        OperatorAlert.objects.filter(pk=alert_id, sent_at__isnull=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=now + ALERT_LEASE, attempts=F("attempts") + 1)
    )
    return claimed == 1


def operator_alert_send(*, alert_id: int, now: datetime) -> bool:
    """Send one alert if it is due; return whether it was sent by this call.

    A temporary relay failure re-raises ``SendError`` for the task to retry; a permanent
    one is recorded and left to the sweep, which tries again until
    ``MYCERT_DELIVERY_MAX_ATTEMPTS``: an alert is worth more than a quiet failure.
    """
    if not _claim(alert_id, now):
        return False
    alert = OperatorAlert.objects.get(pk=alert_id)
    message = EmailMessage(
        subject=alert.subject,
        body=alert.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[_address(alert.recipient)],
        headers={"Auto-Submitted": "auto-generated"},  # RFC 3834 §5
    )
    try:
        send_message(message)
    except SendError as exc:
        # The outbox's back-off (30 s doubling, capped at 30 min): the sweep waits as long
        # as a delivery would before trying this alert again.
        OperatorAlert.objects.filter(pk=alert_id).update(
            last_error=exc.reason, next_attempt_at=now + backoff_delay(alert.attempts)
        )
        logger.warning("staff alert %s not sent: %s", alert_id, exc.reason)
        if exc.temporary:
            raise
        return False
    OperatorAlert.objects.filter(pk=alert_id).update(sent_at=now, last_error="")
    logger.info("staff alert %s (%s) sent", alert_id, alert.kind)
    return True


def operator_alerts_due_ids(*, now: datetime) -> list[int]:
    """Alerts not sent yet, not leased, with attempts left."""
    return list(
        OperatorAlert.objects.filter(
            sent_at__isnull=True, attempts__lt=settings.MYCERT_DELIVERY_MAX_ATTEMPTS
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
