"""Staff alerts: stored with the event, sent once after commit, swept when left."""

from __future__ import annotations

from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, cast

import pytest
from django.db import transaction
from django.utils import timezone

from mycert.models import OperatorAlert
from mycert.services.alerts import (
    operator_alert_create,
    operator_alert_send,
    operator_alerts_due_ids,
)
from mycert.tasks.alerts import sweep_operator_alerts
from tests.support.smtp_server import TestSmtpServer

pytestmark = pytest.mark.django_db

TEST_TEMPLATES = Path(__file__).parent / "templates"
#: A test-only kind, with templates in tests/templates/, outside ``OperatorAlert.Kind``.
PROBE = cast(OperatorAlert.Kind, "test_probe")


@pytest.fixture
def probe_templates(settings: Any) -> None:
    """A test-only alert kind (``test_probe``) beside the real templates."""
    engine = dict(settings.TEMPLATES[0])
    engine["DIRS"] = [*engine["DIRS"], TEST_TEMPLATES]
    settings.TEMPLATES = [engine]


@pytest.fixture
def raise_probe(django_capture_on_commit_callbacks: Any) -> Any:
    """Raise a ``test_probe`` alert in a transaction and run what follows its commit."""

    def raise_(recipient: OperatorAlert.Recipient = OperatorAlert.Recipient.HELPDESK) -> int:
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            alert = operator_alert_create(
                recipient=recipient, kind=PROBE, context={"request_id": 7, "name": "Anne"}
            )
        return alert.pk

    return raise_


@pytest.mark.usefixtures("probe_templates", "eager_tasks")
def test_an_alert_reaches_the_helpdesk_once_its_transaction_commits(
    smtp_settings: TestSmtpServer, settings: Any, raise_probe: Any
) -> None:
    settings.MYCERT_HELPDESK_EMAIL = "helpdesk@example.lu"
    alert_id = raise_probe()

    [received] = smtp_settings.to("helpdesk@example.lu")
    assert str(make_header(decode_header(received.subject))) == "Essai : demande n° 7"
    body = bytes(received.message.get_payload(decode=True)).decode()
    assert "La demande n° 7 de Anne attend une action." in body
    assert OperatorAlert.objects.get(pk=alert_id).sent_at is not None
    assert operator_alerts_due_ids(now=timezone.now()) == []


@pytest.mark.usefixtures("probe_templates", "eager_tasks")
def test_a_security_alert_goes_to_the_security_address(
    smtp_settings: TestSmtpServer, settings: Any, raise_probe: Any
) -> None:
    settings.MYCERT_SECURITY_EMAIL = "rssi@example.lu"
    raise_probe(OperatorAlert.Recipient.SECURITY)

    assert len(smtp_settings.to("rssi@example.lu")) == 1


@pytest.mark.usefixtures("probe_templates")
def test_an_alert_rolled_back_with_its_event_never_exists(smtp_settings: TestSmtpServer) -> None:
    def event_that_fails() -> None:
        with transaction.atomic():
            operator_alert_create(
                recipient=OperatorAlert.Recipient.HELPDESK,
                kind=PROBE,
                context={"request_id": 1, "name": "x"},
            )
            raise RuntimeError("the event failed")

    with pytest.raises(RuntimeError):
        event_that_fails()

    assert not OperatorAlert.objects.exists()
    assert smtp_settings.messages == []


@pytest.mark.usefixtures("probe_templates")
def test_the_sweep_sends_what_a_down_relay_left_and_a_claimed_alert_is_not_sent_twice(
    smtp_settings: TestSmtpServer, eager_tasks: None, raise_probe: Any
) -> None:
    smtp_settings.stop()
    alert_id = raise_probe()  # the task after commit meets a relay that is down
    alert = OperatorAlert.objects.get(pk=alert_id)
    assert alert.sent_at is None
    assert alert.last_error

    smtp_settings.start()
    # The lease of the failed attempt is still running: the sweep leaves the alert alone.
    assert sweep_operator_alerts() == 0
    OperatorAlert.objects.filter(pk=alert_id).update(next_attempt_at=timezone.now())
    assert sweep_operator_alerts() == 1

    assert len(smtp_settings.messages) == 1
    assert OperatorAlert.objects.get(pk=alert_id).sent_at is not None
    # Sent is final: a late duplicate task does nothing.
    assert operator_alert_send(alert_id=alert_id, now=timezone.now()) is False
    assert len(smtp_settings.messages) == 1


def test_a_failed_alert_waits_as_long_as_a_delivery_would(
    smtp_settings: TestSmtpServer, probe_templates: None
) -> None:
    """Alerts share the outbox's back-off (docs/architecture.md « Staff alerts »)."""
    from mycert.mail.transport import SendError, backoff_delay

    with transaction.atomic():
        alert = operator_alert_create(
            recipient=OperatorAlert.Recipient.HELPDESK, kind=PROBE, context={"request_id": 7}
        )
    smtp_settings.stop()
    for attempt in (1, 2, 3):
        now = timezone.now()
        OperatorAlert.objects.filter(pk=alert.pk).update(next_attempt_at=None)
        with pytest.raises(SendError):
            operator_alert_send(alert_id=alert.pk, now=now)
        waiting = OperatorAlert.objects.get(pk=alert.pk)
        assert waiting.attempts == attempt
        assert waiting.next_attempt_at == now + backoff_delay(attempt)
