"""Every request ends, revocation and the outbox agree, the outbox decides nothing (issue 12).

In-process, on the real CA, real gpg and a real SMTP server; tasks run eagerly. The
races between workers are in ``tests/integration/test_lifecycle_races.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from mycert.models import (
    AuditEvent,
    Certificate,
    CertificateRequest,
    Delivery,
    OperatorAlert,
    Professional,
    Vendor,
)
from mycert.outbox import SendResult, delivery_retry, delivery_send
from mycert.services.issuance import request_issue
from mycert.services.requests import request_submit
from mycert.services.revocation import certificate_revoke
from tests.factories import CertificateRequestFactory, ProfessionalFactory, VendorFactory
from tests.support.gpg import GpgKey, confirm_expired_key_on_worker
from tests.support.id_tokens import id_token_for
from tests.support.smtp_server import TestSmtpServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def celery_eager() -> Iterator[None]:
    from config.celery import app

    always, propagates = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = always, propagates


def _submit_and_issue(professional: Professional, vendor: Vendor | None = None) -> int:
    """Submit through the service, then run the issuance task as a worker would."""
    from mycert.tasks.issuance import issue_certificate

    request = CertificateRequestFactory.create(
        professional=professional, vendor=vendor, vendor_copy_consent=vendor is not None
    )
    issue_certificate.delay(request.pk)
    return int(request.pk)


def _alerts(kind: str) -> list[OperatorAlert]:
    return list(OperatorAlert.objects.filter(kind=kind))


# --- Every request ends, and the professional can always try again ------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        # 100 characters of name: the CN's upper bound is 64 (RFC 5280 Appendix A.1).
        ({"given_name": "Anne-Marie-" + "G" * 39, "family_name": "Muller-" + "W" * 42}, "64"),
        # An internationalised address (RFC 6531): the profile's rfc822Name is ASCII only.
        ({"email": "anne.müller@cabinet.example.lu"}, "ASCII"),
    ],
    ids=["100-character-name", "internationalised-e-mail"],
)
def test_a_request_the_profile_refuses_fails_once_and_the_helpdesk_is_told(
    ca: Any, celery_eager: None, smtp_settings: TestSmtpServer, fields: dict[str, str], words: str
) -> None:
    professional = ProfessionalFactory.create(**fields)
    request_id = _submit_and_issue(professional)

    request = CertificateRequest.objects.get(pk=request_id)
    assert request.status == CertificateRequest.Status.FAILED
    assert words in request.last_error
    assert not Certificate.objects.filter(request=request).exists()
    assert AuditEvent.objects.filter(action="request.failed", object_id=str(request_id)).exists()
    (alert,) = _alerts("request_failed")
    assert alert.recipient == OperatorAlert.Recipient.HELPDESK
    assert professional.professional_id in alert.body
    # The sweep no longer re-issues it (a new key every 5 minutes, for ever).
    from mycert.services.issuance import requests_stuck_ids

    later = timezone.now() + timedelta(hours=1)
    assert request_id not in requests_stuck_ids(now=later, older_than=timedelta(minutes=10))
    # After « failed », the professional may submit again.
    again = request_submit(
        professional=professional,
        vendor=None,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(professional),
    )
    assert again.pk != request_id


def test_my_certificates_tells_to_request_again_after_a_failure(
    ca: Any, celery_eager: None, client: Any
) -> None:
    professional = ProfessionalFactory.create(given_name="G" * 60, family_name="W" * 40)
    _submit_and_issue(professional)
    client.force_login(professional.user)

    page = client.get("/certificates/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "the helpdesk is informed" in page
    assert "Please make a new request." in page


# --- Only the professional's two e-mails decide « sent »; vendor copies never block ------


@pytest.fixture
def vendor_with_expired_key(expired_key: GpgKey, mycert_gpg_home: Path) -> Vendor:
    """A vendor whose key was fine when entered (and confirmed) and has expired since."""
    vendor = VendorFactory.create(
        name="Logiciel Ancien SA",
        email=expired_key.uid_address,
        pgp_public_key=expired_key.public,
        pgp_fingerprint=expired_key.fingerprint,
    )
    confirm_expired_key_on_worker(vendor, expired_key, mycert_gpg_home)
    return vendor


def test_an_expired_vendor_key_never_blocks_the_professional(
    ca: Any, celery_eager: None, smtp_settings: TestSmtpServer, vendor_with_expired_key: Vendor
) -> None:
    professional = ProfessionalFactory.create()
    request_id = _submit_and_issue(professional, vendor=vendor_with_expired_key)

    request = CertificateRequest.objects.get(pk=request_id)
    assert request.status == CertificateRequest.Status.SENT
    vendor_copy = Delivery.objects.get(
        certificate__request=request, recipient="vendor", content="keystore"
    )
    assert vendor_copy.status == Delivery.Status.FAILED
    assert "expired" in vendor_copy.last_error
    assert [m.rcpt_tos for m in smtp_settings.messages] == [(professional.email,)] * 2
    (alert,) = _alerts("delivery_failed")
    assert "Logiciel Ancien SA" in alert.body
    assert professional.professional_id in alert.body
    # The professional may request again at once.
    request_submit(
        professional=professional,
        vendor=None,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(professional),
    )


def test_failed_payloads_are_wiped_after_the_grace_days_and_the_request_ends(
    ca: Any, celery_eager: None, smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """The professional's keystore e-mail failed for good: kept 7 days for a retry, then gone."""
    from mycert.tasks.delivery import wipe_failed_payloads

    settings.MYCERT_FAILED_PAYLOAD_DAYS = 7
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    keystore = Delivery.objects.get(pk=outcome.ready_delivery_ids[0])
    Delivery.objects.filter(pk=keystore.pk).update(
        status=Delivery.Status.FAILED, last_error="550 mailbox unavailable"
    )
    assert wipe_failed_payloads() == 0, "within the 7 days the helpdesk may still retry"

    Delivery.objects.filter(pk=keystore.pk).update(updated_at=timezone.now() - timedelta(days=8))
    assert wipe_failed_payloads() == 1

    keystore.refresh_from_db()
    assert keystore.sealed_payload is None
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.FAILED
    assert _alerts("request_failed")
    # The certificate is revoked with it (issue 22), which cancels the row: no retry.
    with pytest.raises(ValueError, match="is cancelled"):
        delivery_retry(delivery_id=keystore.pk, actor="user:7")


def test_a_certificate_never_delivered_is_revoked_and_every_row_wiped(
    ca: Any, celery_eager: None, smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """The keystore e-mail failed for good and was wiped: the password row waiting for it
    is wiped too, the certificate revoked (cessationOfOperation), and the professional
    may request again (issue 22)."""
    from mycert.tasks.delivery import wipe_failed_payloads

    settings.MYCERT_FAILED_PAYLOAD_DAYS = 7
    request = CertificateRequestFactory.create()
    certificate_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    assert certificate_id is not None
    keystore = Delivery.objects.get(
        certificate_id=certificate_id,
        recipient=Delivery.Recipient.PROFESSIONAL,
        content=Delivery.Content.KEYSTORE,
    )
    password = Delivery.objects.get(
        certificate_id=certificate_id, content=Delivery.Content.PASSWORD
    )
    assert password.sealed_payload is not None
    Delivery.objects.filter(pk=keystore.pk).update(
        status=Delivery.Status.FAILED,
        last_error="550 mailbox unavailable",
        updated_at=timezone.now() - timedelta(days=8),
    )

    assert wipe_failed_payloads() == 1

    rows = Delivery.objects.filter(certificate_id=certificate_id)
    assert [r.sealed_payload for r in rows] == [None] * rows.count()
    password.refresh_from_db()
    assert password.status == Delivery.Status.CANCELLED
    certificate = Certificate.objects.get(pk=certificate_id)
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == Certificate.RevocationReason.CESSATION_OF_OPERATION
    assert certificate.revoked_via == Certificate.RevokedVia.UNDELIVERED
    assert "never delivered" in certificate.revocation_comment
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.FAILED
    # The professional can request again.
    request_submit(
        professional=request.professional,
        vendor=None,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(request.professional),
    )


# --- Revocation and the outbox agree ----------------------------------------------------


def test_revoking_cancels_unsent_keystores_and_retry_refuses_them(
    ca: Any, smtp_settings: TestSmtpServer
) -> None:
    vendor = VendorFactory.create()
    request = CertificateRequestFactory.create(vendor=vendor, vendor_copy_consent=True)
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    rows = Delivery.objects.filter(certificate_id=outcome.certificate_id)
    failed = rows.get(recipient="vendor", content="keystore")
    Delivery.objects.filter(pk=failed.pk).update(status=Delivery.Status.FAILED)

    certificate_revoke(
        certificate_id=outcome.certificate_id,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )

    issuance = rows.filter(content__in=["keystore", "password"])
    assert not issuance.filter(sealed_payload__isnull=False).exists()
    assert set(issuance.values_list("status", flat=True)) == {Delivery.Status.CANCELLED}
    for row in issuance:
        assert delivery_send(delivery_id=row.pk, now=timezone.now()).result is SendResult.DONE
    assert not [m for m in smtp_settings.messages if "keystore" in str(m.message["Subject"])]
    # A row failed earlier, then revoked: the helpdesk cannot send it any more.
    Delivery.objects.filter(pk=failed.pk).update(status=Delivery.Status.FAILED)
    with pytest.raises(ValueError, match="revoked"):
        delivery_retry(delivery_id=failed.pk, actor="user:7")
    request.refresh_from_db()
    assert not request.is_in_progress


def test_a_deactivated_vendor_gets_no_copy_not_yet_sent(
    ca: Any, smtp_settings: TestSmtpServer
) -> None:
    vendor = VendorFactory.create()
    request = CertificateRequestFactory.create(vendor=vendor, vendor_copy_consent=True)
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    Vendor.objects.filter(pk=vendor.pk).update(is_active=False)
    vendor_keystore = Delivery.objects.get(
        certificate_id=outcome.certificate_id, recipient="vendor", content="keystore"
    )

    result = delivery_send(delivery_id=vendor_keystore.pk, now=timezone.now())

    assert smtp_settings.messages == []
    vendor_keystore.refresh_from_db()
    assert vendor_keystore.sealed_payload is None
    assert vendor_keystore.status == Delivery.Status.CANCELLED
    assert result.result is SendResult.CANCELLED


# --- The sweep closes what a lost worker left ------------------------------------------


def test_the_sweep_closes_a_request_whose_mails_all_left(
    ca: Any, smtp_settings: TestSmtpServer
) -> None:
    """A worker died between recording the last e-mail and closing the request."""
    from mycert.tasks.delivery import sweep_outbox

    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    rows = Delivery.objects.filter(certificate_id=outcome.certificate_id)
    # Keystore first (its password e-mail waits for it), then the password: the outbox alone.
    for content in ("keystore", "password"):
        delivery_send(delivery_id=rows.get(content=content).pk, now=timezone.now())
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENDING

    sweep_outbox()

    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT


def test_the_password_mail_says_until_when_the_previous_certificate_works(
    ca: Any, smtp_settings: TestSmtpServer, settings: Any
) -> None:
    from django.template.defaultfilters import date as date_filter
    from django.utils import translation

    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 14
    professional = ProfessionalFactory.create()
    first = request_issue(
        request_id=CertificateRequestFactory.create(professional=professional).pk,
        now=timezone.now(),
    )
    assert first.certificate_id is not None
    Delivery.objects.filter(certificate_id=first.certificate_id).update(status="sent")
    CertificateRequest.objects.filter(certificate__pk=first.certificate_id).update(status="sent")
    second = request_issue(
        request_id=CertificateRequestFactory.create(professional=professional).pk,
        now=timezone.now(),
    )
    assert second.certificate_id is not None
    now = timezone.now()
    for delivery_id in second.ready_delivery_ids:
        delivery_send(delivery_id=delivery_id, now=now)
    password = Delivery.objects.get(certificate_id=second.certificate_id, content="password")
    delivery_send(delivery_id=password.pk, now=now)

    body = smtp_settings.messages[-1].data.decode("utf-8", "replace")
    old_serial = Certificate.objects.get(pk=first.certificate_id).serial[:16].lower()
    with translation.override("fr"):
        # The mail dates in the agency's time zone: near its midnight, not UTC's date.
        day = date_filter(timezone.localtime(now + timedelta(days=14)), "DATE_FORMAT")
    assert f"Votre certificat précédent (keystore {old_serial}) reste valable jusqu'au" in body
    assert day in body


# --- Supersession with a grace period, seen from the tasks --------------------------------


def _delivered_certificate(professional: Professional) -> Certificate:
    request_id = _submit_and_issue(professional)
    request = CertificateRequest.objects.get(pk=request_id)
    assert request.status == CertificateRequest.Status.SENT
    return Certificate.objects.get(request=request)


def test_a_renewal_leaves_the_old_certificate_working_during_the_grace_period(
    ca: Any, celery_eager: None, smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """The vendor needs time to install the new keystore: the old one is not revoked at
    delivery but ``MYCERT_SUPERSEDE_AFTER_DAYS`` later, by beat."""
    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 14
    professional = ProfessionalFactory.create()
    old = _delivered_certificate(professional)
    new = _delivered_certificate(professional)

    old.refresh_from_db()
    assert old.revoked_at is None, "the old keystore still works the day the new one arrives"
    from mycert.tasks.delivery import supersede_certificates

    assert supersede_certificates() == 0
    CertificateRequest.objects.filter(pk=new.request_id).update(
        completed_at=timezone.now() - timedelta(days=14, minutes=1)
    )
    assert supersede_certificates() == 1
    old.refresh_from_db()
    assert old.revocation_reason == Certificate.RevocationReason.SUPERSEDED


def test_a_new_certificate_revoked_before_delivery_supersedes_nothing(
    ca: Any, smtp_settings: TestSmtpServer, settings: Any, celery_eager: None
) -> None:
    from mycert.tasks.delivery import send_deliveries_now

    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 0
    professional = ProfessionalFactory.create()
    old = _delivered_certificate(professional)
    request = CertificateRequestFactory.create(professional=professional)
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    keystore = Delivery.objects.get(certificate_id=outcome.certificate_id, content="keystore")
    assert delivery_send(delivery_id=keystore.pk, now=timezone.now()).result is SendResult.SENT
    certificate_revoke(
        certificate_id=outcome.certificate_id,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )

    password = Delivery.objects.get(certificate_id=outcome.certificate_id, content="password")
    send_deliveries_now([password.pk])

    old.refresh_from_db()
    assert old.revoked_at is None, "the only working keystore is the old one"
    password.refresh_from_db()
    assert password.status != Delivery.Status.SENT
