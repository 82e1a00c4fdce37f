"""Recovery without a person: lost tasks and dropped connections.

A broker restarted without persistence, or a worker killed while holding the message
(Redis gives it back only after its one-hour visibility timeout), loses the task queued
by ``request_submit``. Beat's ``sweep_requests`` queues it again; issuing is idempotent.
A database connection dropped while an e-mail is with the relay is re-opened to record
the send, rather than leaving the row leased and sending it twice.
"""

from __future__ import annotations

import re
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerDown

from mycert.mail.transport import send_message
from mycert.models import Certificate, CertificateRequest, Delivery
from mycert.outbox import SendResult, delivery_send
from mycert.services.issuance import request_issue, requests_stuck_ids
from mycert.services.requests import request_submit
from mycert.tasks.issuance import issue_certificate, sweep_requests
from tests.factories import CertificateRequestFactory, ProfessionalFactory
from tests.support.id_tokens import id_token_for
from tests.support.smtp_server import TestSmtpServer


def _aged(request: CertificateRequest, age: timedelta) -> CertificateRequest:
    # submitted_at is auto_now_add: move it back in the database.
    CertificateRequest.objects.filter(pk=request.pk).update(submitted_at=timezone.now() - age)
    request.refresh_from_db()
    return request


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the ids sent to the issuance task instead of running it."""
    sent: list[int] = []
    monkeypatch.setattr(issue_certificate, "delay", lambda request_id: sent.append(request_id))
    return sent


@pytest.mark.django_db
def test_only_old_requests_without_certificate_are_stuck() -> None:
    old = timedelta(minutes=30)
    submitted = _aged(CertificateRequestFactory.create(), old)
    issuing = _aged(CertificateRequestFactory.create(status=CertificateRequest.Status.ISSUING), old)
    _aged(CertificateRequestFactory.create(status=CertificateRequest.Status.SENDING), old)
    _aged(CertificateRequestFactory.create(status=CertificateRequest.Status.SENT), old)
    _aged(CertificateRequestFactory.create(status=CertificateRequest.Status.FAILED), old)
    CertificateRequestFactory.create()  # just submitted: its task is probably queued

    stuck = requests_stuck_ids(now=timezone.now(), older_than=timedelta(minutes=10))

    assert stuck == [submitted.pk, issuing.pk]


@pytest.mark.django_db
def test_sweep_queues_stuck_requests_after_the_setting(settings, queued: list[int]) -> None:
    settings.MYCERT_REQUEST_SWEEP_AFTER_SECONDS = 600
    stuck = _aged(CertificateRequestFactory.create(), timedelta(minutes=11))
    _aged(CertificateRequestFactory.create(), timedelta(minutes=9))

    assert sweep_requests() == 1
    assert queued == [stuck.pk]


@pytest.mark.django_db
def test_sweep_is_in_the_beat_schedule(settings) -> None:
    entries = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"mycert.tasks.sweep_requests", "mycert.tasks.sweep_outbox"} <= entries


@pytest.mark.django_db
def test_swept_request_is_issued_once_however_often_swept(settings, ca, eager_tasks) -> None:
    settings.MYCERT_REQUEST_SWEEP_AFTER_SECONDS = 60
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    request = _aged(CertificateRequestFactory.create(), timedelta(minutes=5))

    sweep_requests()
    CertificateRequest.objects.filter(pk=request.pk).update(
        status=CertificateRequest.Status.ISSUING
    )  # as if a sweep raced the original task: the certificate exists already
    sweep_requests()
    sweep_requests()

    assert Certificate.objects.filter(request=request).count() == 1
    assert Certificate.objects.filter(professional=request.professional).count() == 1


@pytest.mark.django_db
def test_database_lost_while_sending_leaves_the_mails_to_the_outbox_sweep(
    ca, eager_tasks, smtp_settings: TestSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issued, then the database drops before the first e-mail: no failed task, no loss.

    The rows were written leased to the lost worker: the sweep sends them once the lease
    has run out, not before (no second worker races the first one)."""
    from django.db import OperationalError

    from mycert.outbox import deliveries_due_ids
    from mycert.tasks.delivery import sweep_outbox

    def database_gone(**kwargs: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("mycert.tasks.delivery.deliveries_send", database_gone)
    request = CertificateRequestFactory.create()

    issue_certificate.delay(request.pk)  # does not raise

    rows = Delivery.objects.filter(certificate__request=request)
    assert rows.count() == 2
    keystores = {r.pk for r in rows if r.content == Delivery.Content.KEYSTORE}
    assert set(deliveries_due_ids(now=timezone.now())) & keystores == set()
    lease_ends = max(r.next_attempt_at for r in rows if r.next_attempt_at is not None)
    assert set(deliveries_due_ids(now=lease_ends + timedelta(seconds=1))) >= keystores
    rows.update(next_attempt_at=timezone.now() - timedelta(seconds=1))  # the lease ran out
    monkeypatch.undo()
    assert sweep_outbox() == 1  # the keystore e-mail; its password e-mail follows it
    assert len(smtp_settings.messages) == 2
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT


@pytest.mark.django_db(transaction=True)
def test_submit_survives_a_broker_that_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request is recorded and the page answers; the sweep queues it later."""

    def broker_down(request_id: int) -> None:
        raise BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(issue_certificate, "delay", broker_down)
    professional = ProfessionalFactory.create()

    request = request_submit(
        professional=professional,
        vendor=None,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(professional),
    )

    assert CertificateRequest.objects.get(pk=request.pk).status == "submitted"
    later = timezone.now() + timedelta(minutes=15)
    assert requests_stuck_ids(now=later, older_than=timedelta(minutes=10)) == [request.pk]


@pytest.mark.django_db(transaction=True)
def test_connection_dropped_while_sending_is_recorded_once(
    ca,
    smtp_settings: TestSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay accepted, then the session died: the send is recorded, not repeated."""
    if connection.vendor != "postgresql":
        pytest.skip("terminating a database session needs PostgreSQL")
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    delivery_id = outcome.ready_delivery_ids[0]

    def send_then_lose_the_session(message):
        send_message(message)
        pid = connection.connection.info.backend_pid
        params = connection.get_connection_params()
        with psycopg.connect(
            **{
                k: v
                for k, v in params.items()
                if k in ("host", "port", "user", "dbname", "password")
            },
            autocommit=True,
        ) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

    monkeypatch.setattr("mycert.outbox.send.send_message", send_then_lose_the_session)

    result = delivery_send(delivery_id=delivery_id, now=timezone.now())

    assert result.result is SendResult.SENT
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == Delivery.Status.SENT
    assert delivery.sealed_payload is None
    assert smtp_settings.by_message_id() == {delivery.message_id: 1}


def test_every_beat_entry_names_a_task_by_the_name_in_its_decorator(settings) -> None:
    """A beat entry whose name matches no task would be sent to no one, every period."""
    from config.celery import app

    app.loader.import_default_modules()
    for entry, scheduled in settings.CELERY_BEAT_SCHEDULE.items():
        assert scheduled["task"] in app.tasks, entry


def test_every_beat_entry_names_its_task_the_same_way(settings) -> None:
    """``mycert.tasks.<name>`` everywhere: one spelling to grep for and to monitor."""
    for entry, scheduled in settings.CELERY_BEAT_SCHEDULE.items():
        assert re.fullmatch(r"mycert\.tasks\.[a-z_]+", scheduled["task"]), entry
