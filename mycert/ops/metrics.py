"""Prometheus metrics: the service's state read from the database, and Celery task durations.

Two sources, two places, said plainly:

- :class:`DatabaseCollector` reads counts from the database on every scrape of the web's
  ``/metrics``. They describe the whole service, so any one web process gives the same
  answer: scrape one (or keep ``max`` by instance in queries).
- Task durations are measured in the worker processes (``task_prerun``/``task_postrun``)
  into a Histogram. A web process never sees them. A worker serves them itself when
  ``MYCERT_WORKER_METRICS_PORT`` is set: with ``--pool=solo`` or ``threads`` the
  histogram lives in that one process; with the default prefork pool each child writes
  to ``PROMETHEUS_MULTIPROC_DIR`` (set it, empty, before the worker starts) and the
  parent's exporter adds the children up (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.utils import timezone
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "DATABASE_REGISTRY",
    "TASK_DURATION",
    "TASK_REGISTRY",
    "DatabaseCollector",
    "connect_task_signals",
]

logger = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    """Counts from the database, taken at scrape time (a handful of aggregate queries)."""

    def collect(self) -> Iterator[Metric]:
        from django.db.models import Min

        from mycert.models import Certificate, CertificateRequest, Crl, Delivery

        now = timezone.now()

        yield _by_status(
            "mycert_certificate_requests",
            "Certificate requests by status.",
            CertificateRequest.objects.all(),
            CertificateRequest.Status.values,
        )

        yield GaugeMetricFamily(
            "mycert_certificate_requests_overdue",
            "Requests still in progress past their due date (5 business days).",
            value=CertificateRequest.objects.overdue(now).count(),
        )

        yield CounterMetricFamily(
            "mycert_certificates_issued",
            "Certificates ever issued.",
            value=Certificate.objects.count(),
        )
        yield CounterMetricFamily(
            "mycert_certificates_revoked",
            "Certificates ever revoked.",
            value=Certificate.objects.revoked().count(),
        )
        yield GaugeMetricFamily(
            "mycert_certificates_valid",
            "Certificates valid now (in their validity period, not revoked).",
            value=Certificate.objects.valid(now).count(),
        )

        yield _by_status(
            "mycert_deliveries",
            "Outbox e-mails by status.",
            Delivery.objects.all(),
            Delivery.Status.values,
        )

        oldest = Delivery.objects.unsent().aggregate(oldest=Min("created_at"))["oldest"]
        yield GaugeMetricFamily(
            "mycert_oldest_undelivered_delivery_age_seconds",
            "Age of the oldest e-mail not yet accepted by the relay (0: none waiting).",
            value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )

        yield from _ceremony_metrics(now)
        yield from _ocsp_margin_metrics(now)

        latest_crl = Crl.objects.order_by("-number").only("next_update").first()
        yield GaugeMetricFamily(
            "mycert_crl_next_update_timestamp_seconds",
            "nextUpdate of the newest CRL, Unix time (0: none published).",
            value=latest_crl.next_update.timestamp() if latest_crl else 0.0,
        )


def _by_status(name: str, documentation: str, rows: Any, statuses: list[str]) -> Metric:
    """One gauge per status, every status named (0 when no row has it): one GROUP BY."""
    from django.db.models import Count

    counts = dict(
        rows.order_by().values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    gauge = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in statuses:
        gauge.add_metric([status], counts.get(status, 0))
    return gauge


def _ceremony_metrics(now: Any) -> Iterator[Metric]:
    """When each ceremony is due: alert on ``mycert_ca_expiry_warning == 1``.

    30 days before the root CRL's nextUpdate and the issuing CA's notAfter; 9 days before
    the OCSP responder's (beat renews it at 10: the warning means beat is late).
    """
    from mycert import custody

    expiry = GaugeMetricFamily(
        "mycert_ca_expiry_timestamp_seconds",
        "Root CRL nextUpdate, OCSP responder and issuing CA notAfter, Unix time.",
        labels=["item"],
    )
    warning = GaugeMetricFamily(
        "mycert_ca_expiry_warning",
        "1 when the item's ceremony is due (30 days; responder: beat is late), docs/deploy.md.",
        labels=["item"],
    )
    try:
        deadlines = custody.ceremony_deadlines()
    except custody.CustodyError:
        deadlines = []  # no CA yet: /healthz says so
    for deadline in deadlines:
        expiry.add_metric([deadline.name], deadline.expires.timestamp())
        warning.add_metric([deadline.name], 1.0 if deadline.due(now) else 0.0)
    yield expiry
    yield warning


def _ocsp_margin_metrics(now: Any) -> Iterator[Metric]:
    """How long the stored OCSP answers last without beat: alert on the warning."""
    from django.conf import settings

    from mycert.services.ocsp import ocsp_alarm_margin, ocsp_answers_earliest_next_update

    earliest = ocsp_answers_earliest_next_update(now=now)
    yield GaugeMetricFamily(
        "mycert_ocsp_earliest_next_update_timestamp_seconds",
        "Nearest nextUpdate of the stored OCSP answers, Unix time (0: no certificate).",
        value=earliest.timestamp() if earliest else 0.0,
    )
    margin = ocsp_alarm_margin(settings.MYCERT_OCSP_VALIDITY)
    yield GaugeMetricFamily(
        "mycert_ocsp_margin_warning",
        "1 when a stored OCSP answer expires within the alarm margin: beat or the workers "
        "are late re-signing (docs/deploy.md §13).",
        value=1.0 if earliest is not None and earliest - now < margin else 0.0,
    )


DATABASE_REGISTRY = CollectorRegistry(auto_describe=False)
DATABASE_REGISTRY.register(DatabaseCollector())

TASK_REGISTRY = CollectorRegistry()
TASK_DURATION = Histogram(
    "mycert_celery_task_duration_seconds",
    "Celery task run time in the worker, by task and final state.",
    ["task", "state"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=TASK_REGISTRY,
)

_started: dict[str, float] = {}
_started_lock = threading.Lock()
_connected = False


def _task_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        with _started_lock:
            _started[task_id] = time.perf_counter()


def _task_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **kwargs: Any
) -> None:
    if not task_id:
        return
    with _started_lock:
        started = _started.pop(task_id, None)
    if started is None:
        return
    name = str(getattr(task, "name", "unknown"))
    TASK_DURATION.labels(task=name, state=state or "UNKNOWN").observe(time.perf_counter() - started)


def _worker_ready(**kwargs: Any) -> None:
    """Serve the task histogram from the worker when a port is configured."""
    from django.conf import settings
    from prometheus_client import start_http_server

    port: int = settings.MYCERT_WORKER_METRICS_PORT
    if not port:
        return
    registry = TASK_REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=settings.MYCERT_WORKER_METRICS_ADDR, registry=registry)
    logger.info("worker metrics on %s:%s", settings.MYCERT_WORKER_METRICS_ADDR, port)


def connect_task_signals() -> None:
    """Measure every task this process runs (called once from ``MyCertConfig.ready``)."""
    global _connected
    if _connected:
        return
    from celery import signals

    signals.task_prerun.connect(_task_prerun, weak=False)
    signals.task_postrun.connect(_task_postrun, weak=False)
    signals.worker_ready.connect(_worker_ready, weak=False)
    _connected = True
