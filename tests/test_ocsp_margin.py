"""The margin of the stored OCSP answers: how long they carry the service without beat,
and the alarm well before it runs out (/healthz, /metrics)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mycert.models import Certificate, OcspResponse
from mycert.ops import health
from mycert.services.issuance import request_issue
from mycert.services.ocsp import REFRESH_EVERY, _refresh_age, ocsp_alarm_margin
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_health() -> None:
    health.clear_cache()


def test_the_default_validity_leaves_two_hours_and_alarms_with_more_than_an_hour_left() -> None:
    """Before: 60 min answers, re-signed at 20 min: ~35 min of outage refused everyone."""
    validity = settings.MYCERT_OCSP_VALIDITY
    assert validity == timedelta(hours=4)
    # Steady state: re-signed at _refresh_age, at most one beat period late.
    worst_left = validity - _refresh_age(validity) - REFRESH_EVERY
    assert worst_left >= timedelta(hours=2)
    margin = ocsp_alarm_margin(validity)
    assert margin < worst_left  # no alarm in the steady state
    assert worst_left - margin >= 3 * REFRESH_EVERY  # three missed runs before it rings
    assert margin >= timedelta(hours=1)  # and then over an hour to mend beat or workers
    # A short validity keeps a sensible alarm too.
    assert ocsp_alarm_margin(timedelta(minutes=60)) == timedelta(minutes=20)


def _issued_with_answer_aged(age: timedelta) -> Certificate:
    request = CertificateRequestFactory.create()
    certificate_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    assert certificate_id is not None
    now = timezone.now()
    OcspResponse.objects.filter(certificate_id=certificate_id).update(
        this_update=now - age, next_update=now - age + settings.MYCERT_OCSP_VALIDITY
    )
    return Certificate.objects.get(pk=certificate_id)


def _ocsp_check(client: Any) -> tuple[int, dict[str, Any]]:
    response = client.get("/healthz")
    return response.status_code, response.json()["checks"]["ocsp"]


def _margin_metrics(client: Any) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").content.decode())
        for sample in family.samples
        if sample.name.startswith("mycert_ocsp_")
    }


def test_fresh_answers_raise_no_alarm(client: Any, ca: Any) -> None:
    validity = settings.MYCERT_OCSP_VALIDITY
    _issued_with_answer_aged(_refresh_age(validity) + REFRESH_EVERY)  # due, beat not yet run
    _, check = _ocsp_check(client)
    assert check["status"] == "ok"
    assert "warnings" not in check
    assert _margin_metrics(client)["mycert_ocsp_margin_warning"] == 0


def test_answers_beat_left_unsigned_raise_the_alarm_before_they_expire(
    client: Any, ca: Any
) -> None:
    validity = settings.MYCERT_OCSP_VALIDITY
    _issued_with_answer_aged(_refresh_age(validity) + 4 * REFRESH_EVERY + timedelta(minutes=1))
    _, check = _ocsp_check(client)
    assert check["status"] == "ok"  # still served: no 503 yet
    assert check["warnings"] == "ocsp_answers_expire_soon"
    metrics = _margin_metrics(client)
    assert metrics["mycert_ocsp_margin_warning"] == 1
    assert (
        metrics["mycert_ocsp_earliest_next_update_timestamp_seconds"] > timezone.now().timestamp()
    )


def test_an_expired_answer_fails_the_check(client: Any, ca: Any) -> None:
    _issued_with_answer_aged(settings.MYCERT_OCSP_VALIDITY + timedelta(minutes=1))
    status, check = _ocsp_check(client)
    assert status == 503
    assert check["error"] == "ocsp_answers_expired"
