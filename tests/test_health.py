"""/healthz against a real SMTP server and a real CA; /metrics from database rows."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mycert import custody
from mycert.models import Certificate, CertificateRequest, Delivery
from mycert.ops import health
from mycert.ops.metrics import TASK_REGISTRY
from tests.factories import CertificateRequestFactory, ProfessionalFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_health() -> None:
    health.clear_cache()


def test_healthz_all_ok(client: Any, ca: Any, smtp_settings: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "ca", "ocsp", "custody", "smtp"}
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["latency_ms"] >= 0
    assert body["checks"]["ca"]["ocsp_responder_not_after"]
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_503_when_smtp_is_down(client: Any, ca: Any, smtp_settings: Any) -> None:
    smtp_settings.stop()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["smtp"]["status"] == "error"
    assert body["checks"]["smtp"]["error"]  # the exception's type, nothing more
    assert body["checks"]["database"]["status"] == "ok"


def test_smtp_answer_is_reused_for_a_few_seconds(
    client: Any, ca: Any, smtp_settings: Any, settings: Any
) -> None:
    settings.MYCERT_HEALTH_CACHE_SECONDS = 60
    assert client.get("/healthz").status_code == 200
    smtp_settings.stop()
    assert client.get("/healthz").status_code == 200  # within the reuse window
    health.clear_cache()
    assert client.get("/healthz").status_code == 503


def test_healthz_503_when_the_ca_is_missing(
    client: Any, settings: Any, smtp_settings: Any, tmp_path: Path
) -> None:
    settings.MYCERT_CA_DIR = tmp_path / "no-ca"
    custody.cache_clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["ca"] == {
        "status": "error",
        "latency_ms": pytest.approx(response.json()["checks"]["ca"]["latency_ms"]),
        "error": "ca_missing",
    }
    assert str(tmp_path) not in response.content.decode()


def test_healthz_never_needs_nor_shows_the_passphrase(
    client: Any, ca: Any, settings: Any, smtp_settings: Any
) -> None:
    text = client.get("/healthz").content.decode()
    assert settings.MYCERT_CA_KEY_PASSPHRASE not in text
    # Web hosts hold no key (docs/architecture.md « Hosts and trust boundaries »): their CA check
    # reads public files only.
    wrong = "wrong-" + secrets.token_hex(8)
    settings.MYCERT_CA_KEY_PASSPHRASE = wrong
    custody.cache_clear()
    # The CA check reads public files only (a web host holds no key, issue 11): a wrong
    # passphrase is `manage.py check`'s and the workers' business, and never shown here.
    response = client.get("/healthz")
    assert response.json()["checks"]["ca"]["status"] == "ok"
    assert wrong not in response.content.decode()


def test_healthz_reports_a_missing_ca_by_code(
    client: Any, settings: Any, smtp_settings: Any, tmp_path: Path
) -> None:
    settings.MYCERT_CA_DIR = tmp_path / "nothing"
    custody.cache_clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["ca"]["error"] == "ca_missing"


# --- /metrics ---------------------------------------------------------------------------------


def _certificate(
    request: CertificateRequest, *, revoked: bool = False, expired: bool = False
) -> Certificate:
    now = timezone.now()
    not_after = now - timedelta(days=1) if expired else now + timedelta(days=365)
    return Certificate.objects.create(
        request=request,
        professional=request.professional,
        serial=secrets.token_hex(20),
        subject="CN=Anne Muller",
        issuer="CN=Issuing",
        key_type="ec-p256",
        not_before=now - timedelta(days=400),
        not_after=not_after,
        fingerprint_sha256=secrets.token_hex(32),
        pem="-----BEGIN CERTIFICATE-----",
        revoked_at=now if revoked else None,
    )


def _delivery(certificate: Certificate, status: str, *, age: timedelta = timedelta()) -> Delivery:
    delivery = Delivery.objects.create(
        certificate=certificate,
        recipient=Delivery.Recipient.PROFESSIONAL,
        content=Delivery.Content.KEYSTORE,
        to_email="pro@cabinet.example.lu",
        status=status,
        message_id=f"<{secrets.token_hex(8)}@mycert>",
        key=secrets.token_hex(16),
    )
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - age)
    return delivery


def _scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_from_database_rows(client: Any) -> None:
    sent = [CertificateRequestFactory.create(status="sent") for _ in range(3)]
    CertificateRequestFactory.create(status="submitted")
    overdue = CertificateRequestFactory.create(status="submitted")
    CertificateRequest.objects.filter(pk=overdue.pk).update(
        due_at=timezone.now() - timedelta(hours=1)
    )
    valid = _certificate(sent[0])
    _certificate(sent[1], revoked=True)
    _certificate(sent[2], expired=True)
    _delivery(valid, "sent")
    _delivery(valid, "pending", age=timedelta(minutes=10))
    _delivery(valid, "retrying", age=timedelta(minutes=3))
    _delivery(valid, "failed", age=timedelta(days=2))

    values = _scrape(client)

    assert values[("mycert_certificate_requests", (("status", "sent"),))] == 3
    assert values[("mycert_certificate_requests", (("status", "submitted"),))] == 2
    assert values[("mycert_certificate_requests", (("status", "failed"),))] == 0
    assert values[("mycert_certificate_requests_overdue", ())] == 1
    assert values[("mycert_certificates_issued_total", ())] == 3
    assert values[("mycert_certificates_revoked_total", ())] == 1
    assert values[("mycert_certificates_valid", ())] == 1
    assert values[("mycert_deliveries", (("status", "pending"),))] == 1
    assert values[("mycert_deliveries", (("status", "retrying"),))] == 1
    assert values[("mycert_deliveries", (("status", "sent"),))] == 1
    assert values[("mycert_deliveries", (("status", "failed"),))] == 1
    age = values[("mycert_oldest_undelivered_delivery_age_seconds", ())]
    assert 600 <= age < 660  # the pending one; failed rows wait for the helpdesk, not the relay
    assert b"cabinet.example.lu" not in client.get("/metrics").content


def test_metrics_empty_database(client: Any) -> None:
    ProfessionalFactory()
    values = _scrape(client)
    assert values[("mycert_oldest_undelivered_delivery_age_seconds", ())] == 0
    assert values[("mycert_crl_next_update_timestamp_seconds", ())] == 0


def test_metrics_token(client: Any, settings: Any) -> None:
    settings.MYCERT_METRICS_TOKEN = "scrape-" + secrets.token_hex(8)
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    _scrape(client, HTTP_AUTHORIZATION=f"Bearer {settings.MYCERT_METRICS_TOKEN}")


def test_metrics_allowed_networks(client: Any, settings: Any) -> None:
    settings.MYCERT_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    _scrape(client, REMOTE_ADDR="10.1.2.3")
    settings.MYCERT_METRICS_ALLOWED_IPS = []
    _scrape(client, REMOTE_ADDR="192.0.2.1")


def test_task_durations_are_measured(eager_tasks: None) -> None:
    from mycert.tasks.delivery import sweep_outbox

    def count() -> float:
        value = TASK_REGISTRY.get_sample_value(
            "mycert_celery_task_duration_seconds_count",
            {"task": "mycert.tasks.sweep_outbox", "state": "SUCCESS"},
        )
        return value or 0.0

    before = count()
    sweep_outbox.delay()
    assert count() == before + 1


def test_a_web_host_stays_healthy_when_its_copied_responder_certificate_expires(
    client: Any, settings: Any, tmp_path: Path, smtp_settings: Any
) -> None:
    """Web hosts serve stored OCSP answers and never use ocsp.pem: its end is a warning
    (the copy is stale, or beat is late), never a 503 that drains every web host."""
    from mycert.pki import KeyType

    settings.MYCERT_CA_DIR = tmp_path / "ca"
    paths = custody.ca_paths()
    custody.ca_create(
        paths,
        b"a-passphrase-of-the-old-ca-1234",
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.EC_P256,
        now=timezone.now() - timedelta(days=31),  # the 30-day responder has ended
        root_passphrase=b"the-old-root-s-own-passphrase",
        root_key_path=tmp_path / "offline" / "root-key.pem",
    )
    settings.MYCERT_CA_KEY_PASSPHRASE = ""  # a web host
    custody.cache_clear()

    response = client.get("/healthz")

    assert response.status_code == 200, response.content
    ca = response.json()["checks"]["ca"]
    assert ca["status"] == "ok"
    assert "ocsp_responder_expired" in ca["warnings"].split(",")
