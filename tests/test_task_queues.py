"""Which queue each task's messages go to, as Celery's own router decides at send time.

A revocation's work has a queue of its own so that it overtakes an issuance backlog
(config/settings.py, CELERY_TASK_QUEUES; tests/integration/test_revocation_queue.py
measures it with a real worker). These tests keep a later refactor (a task renamed, a
route dropped) from sending it back behind the issuances without anyone noticing.
"""

from __future__ import annotations

import pytest
from celery import Task

from config.celery import app
from mycert.tasks.alerts import send_operator_alert, sweep_operator_alerts
from mycert.tasks.audit import export_audit_head
from mycert.tasks.delivery import (
    send_delivery,
    supersede_certificates,
    sweep_outbox,
    wipe_failed_payloads,
)
from mycert.tasks.issuance import issue_certificate, sweep_requests
from mycert.tasks.notices import send_expiry_reminders
from mycert.tasks.publication import (
    publish_crl,
    publish_crl_previous_name,
    refresh_ocsp_responses,
    renew_ocsp_responder,
    sign_ocsp_responses,
)


def _queue_of(task: Task) -> str:  # type: ignore[type-arg]
    """The queue a message of this task is published to (by name, as beat sends it too)."""
    return str(app.amqp.router.route({}, task.name)["queue"].name)


@pytest.mark.parametrize(
    "task",
    [sign_ocsp_responses, publish_crl, publish_crl_previous_name],
    ids=lambda task: task.name,
)
def test_a_revocations_work_goes_to_the_revocation_queue(task: Task) -> None:  # type: ignore[type-arg]
    assert _queue_of(task) == "revocation"


@pytest.mark.parametrize(
    "task",
    [
        issue_certificate,
        sweep_requests,
        send_delivery,
        sweep_outbox,
        supersede_certificates,
        wipe_failed_payloads,
        send_operator_alert,
        sweep_operator_alerts,
        send_expiry_reminders,
        export_audit_head,
        refresh_ocsp_responses,
        renew_ocsp_responder,
    ],
    ids=lambda task: task.name,
)
def test_issuance_delivery_and_the_sweeps_stay_on_the_default_queue(task: Task) -> None:  # type: ignore[type-arg]
    assert _queue_of(task) == "celery"


def test_a_worker_started_without_q_consumes_both_queues() -> None:
    """A worker reads every declared queue; the default keeps the name older messages carry."""
    assert app.conf.task_default_queue == "celery"
    assert set(app.amqp.queues) == {"celery", "revocation"}
    default = app.amqp.queues["celery"]
    # As Celery declares its default queue when none is listed: RabbitMQ accepts it again.
    assert (default.exchange.name, default.exchange.type, default.routing_key) == (
        "celery",
        "direct",
        "celery",
    )


def test_every_route_names_a_declared_queue_and_a_registered_task(settings) -> None:
    """A route to an undeclared queue would create one that no worker reads."""
    app.loader.import_default_modules()
    for name, route in settings.CELERY_TASK_ROUTES.items():
        assert route["queue"] in app.amqp.queues, name
        assert name in app.tasks, name


def test_a_busy_worker_prefetches_nothing_behind_its_running_tasks(settings) -> None:
    """Late acks and a multiplier of 1: a worker holds only the messages it is running."""
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_ACKS_LATE is True
