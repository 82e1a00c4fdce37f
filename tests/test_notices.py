"""Revocation notices and expiry reminders: real CA, real SMTP server, real gpg."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from mycert.models import Certificate, CertificateRequest, Delivery, Professional, Vendor
from mycert.outbox import delivery_send
from mycert.services.issuance import request_issue, request_mark_sent
from mycert.services.notices import (
    expiry_reminders_create,
    expiry_reminders_due,
    revocation_notices_create,
)
from mycert.services.revocation import AlreadyRevoked, certificate_revoke, certificates_supersede
from mycert.services.vendors import vendor_set_pgp_key
from mycert.tasks.notices import send_expiry_reminders
from tests.factories import CertificateRequestFactory, ProfessionalFactory, VendorFactory
from tests.support.gpg import GpgKey, confirm_on_worker, decrypt
from tests.support.smtp_server import TestSmtpServer

pytestmark = pytest.mark.django_db

Issue = Callable[..., Certificate]


def subject_of(message: Message) -> str:
    return str(make_header(decode_header(str(message["Subject"]))))


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


@pytest.fixture
def issue(ca: Any) -> Issue:
    """Issue a real certificate; its keystore e-mails are marked sent (not under test).

    ``closed``: the request is marked sent without superseding anything, so that the
    professional may ask again; leave it open to run ``request_mark_sent`` yourself.
    """

    def make(
        *,
        professional: Professional | None = None,
        vendor: Vendor | None = None,
        closed: bool = True,
        **fields: Any,
    ) -> Certificate:
        request = CertificateRequestFactory.create(
            professional=professional or ProfessionalFactory.create(),
            vendor=vendor,
            vendor_copy_consent=vendor is not None,
            **fields,
        )
        outcome = request_issue(request_id=request.pk, now=timezone.now())
        assert outcome.certificate_id is not None
        Delivery.objects.filter(certificate_id=outcome.certificate_id).update(
            status=Delivery.Status.SENT, sealed_payload=None
        )
        if closed:
            CertificateRequest.objects.filter(pk=request.pk).update(
                status=CertificateRequest.Status.SENT
            )
        return Certificate.objects.get(pk=outcome.certificate_id)

    return make


@pytest.fixture
def vendor_with_key(vendor_key: GpgKey, mycert_gpg_home: Path) -> Vendor:
    vendor = VendorFactory.create(name="Logiciel Santé SA", email=vendor_key.uid_address)
    vendor = vendor_set_pgp_key(
        vendor_id=vendor.pk, pgp_key=vendor_key.public, actor="test", now=timezone.now()
    )
    confirm_on_worker(vendor)
    return vendor


@pytest.fixture
def sending(
    smtp_settings: TestSmtpServer, eager_tasks: None, django_capture_on_commit_callbacks: Any
) -> Callable[[], Any]:
    """Run what commits schedule (the sends, the CRL) in-process, to the real SMTP server."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def mailbox(smtp_settings: TestSmtpServer) -> TestSmtpServer:
    return smtp_settings


def revoke(certificate: Certificate, **kwargs: Any) -> Certificate:
    arguments: dict[str, Any] = {
        "reason": Certificate.RevocationReason.KEY_COMPROMISE,
        "via": Certificate.RevokedVia.HELPDESK,
        "actor": None,
        "now": timezone.now(),
        **kwargs,
    }
    return certificate_revoke(certificate_id=certificate.pk, **arguments)


# --- Revocation notices ----------------------------------------------------------------------


def test_professional_and_vendor_told_in_their_languages_vendor_encrypted(
    issue: Issue,
    vendor_with_key: Vendor,
    vendor_key: GpgKey,
    sending: Callable[[], Any],
    mailbox: TestSmtpServer,
) -> None:
    professional = ProfessionalFactory.create(language="de", given_name="Jean", family_name="Weber")
    certificate = issue(professional=professional, vendor=vendor_with_key, language="en")

    with sending():
        revoke(certificate)

    rows = {d.recipient: d for d in Delivery.objects.filter(content="revocation")}
    assert set(rows) == {"professional", "vendor"}
    assert rows["professional"].key == f"revocation:{certificate.pk}:professional"
    assert rows["vendor"].pgp_fingerprint == vendor_key.fingerprint
    assert all(row.status == Delivery.Status.SENT for row in rows.values())
    assert all(row.sealed_payload is None for row in rows.values())

    (to_professional,) = mailbox.to(professional.email)
    assert to_professional.message["Content-Language"] == "de"
    assert subject_of(to_professional.message) == (
        f"MyCert: Ihr Zertifikat {certificate.serial[:16]} wurde widerrufen"
    )
    body = text_of(to_professional.message)
    assert "Guten Tag Jean Weber" in body
    assert "durch den Helpdesk der Agence eSanté" in body
    assert "Sperrliste (CRL)" in body
    assert "OCSP" in body
    assert "Grund: Schlüsselkompromittierung" in body
    assert "/request/" in body
    assert "helpdesk@esante.lu" in body

    (to_vendor,) = mailbox.to(vendor_with_key.email)
    outer = to_vendor.message
    assert outer.get_content_type() == "multipart/encrypted"
    assert professional.family_name not in to_vendor.data.decode(errors="replace")
    assert "Weber" not in str(outer["Subject"])
    inner = decrypt(vendor_key, outer)
    assert inner["Content-Language"] == "en"
    assert (
        subject_of(inner)
        == f"MyCert: certificate of Jean Weber revoked ({certificate.serial[:16]})"
    )
    vendor_body = text_of(inner)
    assert "as a software vendor (Logiciel Santé SA)" in vendor_body
    assert "Delete your copy of this keystore" in vendor_body


def test_french_notice_names_the_reason_and_how_to_renew(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer, settings: Any
) -> None:
    settings.MYCERT_BASE_URL = "https://mycert.esante.lu"
    certificate = issue()

    with sending():
        revoke(certificate, reason=Certificate.RevocationReason.CESSATION_OF_OPERATION)

    (message,) = mailbox.messages
    assert subject_of(message.message).startswith("MyCert : votre certificat")
    body = text_of(message.message)
    assert "a été révoqué le" in body
    assert "par le helpdesk de l'Agence eSanté" in body
    assert "Motif : certificat plus nécessaire" in body
    assert "cessation d'activité" not in body  # "stopped practising" to a doctor
    assert "https://mycert.esante.lu/request/" in body
    assert "(+352) 27 12 50 18 33" in body


def test_superseded_certificate_notice_says_a_newer_one_replaced_it(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer
) -> None:
    first = issue()
    second = issue(professional=first.professional, closed=False)
    now = timezone.now()

    with sending():
        request_mark_sent(certificate_id=second.pk, now=now)
        request_mark_sent(certificate_id=second.pk, now=now)  # a redelivered task
        later = now + timedelta(days=settings.MYCERT_SUPERSEDE_AFTER_DAYS)
        certificates_supersede(now=later)
        certificates_supersede(now=later)  # a second beat: still one notice

    first.refresh_from_db()
    assert first.revoked_via == Certificate.RevokedVia.SUPERSEDED
    (message,) = mailbox.messages
    assert subject_of(message.message) == (
        f"MyCert : votre ancien certificat {first.serial[:16]} a été remplacé"
    )
    body = text_of(message.message)
    assert "Votre nouveau certificat MyCert vous a été envoyé" in body
    assert f"keystore {second.serial[:16]}" in body
    assert "Il remplace le certificat ci-dessous" in body
    assert "Installez le nouveau keystore" in body
    assert "faites une nouvelle demande" not in body


def test_each_notice_once_even_if_revocation_runs_twice(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer
) -> None:
    vendor = VendorFactory.create()
    confirm_on_worker(vendor)  # a vendor without a key: its address, anchored
    certificate = issue(vendor=vendor)

    with sending():
        revoke(certificate)
    with pytest.raises(AlreadyRevoked):
        revoke(certificate, via=Certificate.RevokedVia.PROFESSIONAL)
    certificate.refresh_from_db()
    assert revocation_notices_create(certificate=certificate) == []  # keys already taken
    for delivery_id in Delivery.objects.filter(content="revocation").values_list("pk", flat=True):
        delivery_send(delivery_id=delivery_id, now=timezone.now())  # a duplicate task

    assert Delivery.objects.filter(content="revocation").count() == 2
    assert sorted(mailbox.by_message_id().values()) == [1, 1]
    assert len(mailbox.to(vendor.email)) == 1
    # Without a key on file the vendor's notice leaves in clear, like its keystore mails.
    assert mailbox.to(vendor.email)[0].message.get_content_type() != "multipart/encrypted"


def test_notice_rows_roll_back_with_the_revocation(issue: Issue) -> None:
    from django.db import transaction

    certificate = issue()

    @transaction.atomic
    def failing_batch() -> None:
        revoke(certificate)
        raise RuntimeError("the admin's batch failed")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert not Delivery.objects.filter(content="revocation").exists()


# --- Expiry reminders ------------------------------------------------------------------------


def _ends_in(certificate: Certificate, delta: timedelta) -> datetime:
    now = timezone.now()
    Certificate.objects.filter(pk=certificate.pk).update(not_after=now + delta)
    return now


def test_reminders_at_60_30_and_7_days_once_each(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer
) -> None:
    certificate = issue()
    now = _ends_in(certificate, timedelta(days=61))
    assert expiry_reminders_create(now=now) == []

    seen = []
    for days in (60, 30, 7):
        now = _ends_in(certificate, timedelta(days=days) - timedelta(hours=2))
        assert [d.days for d in expiry_reminders_due(now=now)] == [days]
        with sending():
            assert send_expiry_reminders.delay().get() == 1
            assert send_expiry_reminders.delay().get() == 0  # the next day's run: nothing
        assert expiry_reminders_create(now=now) == []
        seen.append(days)
        certificate.refresh_from_db()
        assert certificate.expiry_reminders_sent == sorted(seen, reverse=True)

    rows = Delivery.objects.filter(content="expiry").order_by("pk")
    assert [row.key for row in rows] == [f"expiry:{certificate.pk}:{d}" for d in (60, 30, 7)]
    assert all(row.status == Delivery.Status.SENT for row in rows)
    assert len(mailbox.messages) == 3
    last = mailbox.messages[-1].message
    assert subject_of(last).startswith(
        f"MyCert : votre certificat {certificate.serial[:16]} expire le"
    )
    body = text_of(last)
    assert "dans 7 jours" in body
    assert "/request/" in body
    assert "nouvelle demande" in body
    assert "helpdesk@esante.lu" in body


def test_reminder_in_the_professionals_language(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer
) -> None:
    certificate = issue(professional=ProfessionalFactory.create(language="en"))
    _ends_in(certificate, timedelta(days=30) - timedelta(hours=1))
    with sending():
        send_expiry_reminders.delay()
    (message,) = mailbox.messages
    assert "in 30 days" in text_of(message.message)
    assert "RENEW THE CERTIFICATE" in text_of(message.message)


def test_first_seen_late_gets_only_the_tightest_reminder(issue: Issue) -> None:
    certificate = issue()
    now = _ends_in(certificate, timedelta(days=20))
    assert len(expiry_reminders_create(now=now)) == 1
    certificate.refresh_from_db()
    assert certificate.expiry_reminders_sent == [30]
    assert expiry_reminders_due(now=now) == []
    assert not Delivery.objects.filter(key=f"expiry:{certificate.pk}:60").exists()


def test_no_reminder_for_revoked_expired_or_renewed(issue: Issue) -> None:
    revoked = issue()
    revoke(revoked)
    _ends_in(revoked, timedelta(days=5))

    expired = issue()
    _ends_in(expired, -timedelta(days=1))

    renewed = issue()
    _ends_in(renewed, timedelta(days=5))
    newer = issue(professional=renewed.professional)
    assert newer.not_after > timezone.now() + timedelta(days=300)

    assert expiry_reminders_due(now=timezone.now()) == []
    assert expiry_reminders_create(now=timezone.now()) == []
    assert not Delivery.objects.filter(content="expiry").exists()


def test_a_failed_renewal_brings_the_reminder_back(issue: Issue) -> None:
    old = issue()
    _ends_in(old, timedelta(days=25))
    newer = issue(professional=old.professional)
    assert expiry_reminders_due(now=timezone.now()) == []
    # The newer certificate revoked (compromised at once): the old one needs renewing again.
    revoke(newer)
    (due,) = expiry_reminders_due(now=timezone.now())
    assert (due.certificate_id, due.days) == (old.pk, 30)


def test_request_status_untouched_by_notices(
    issue: Issue, sending: Callable[[], Any], mailbox: TestSmtpServer
) -> None:
    certificate = issue(closed=False)
    request_mark_sent(certificate_id=certificate.pk, now=timezone.now())
    with sending():
        revoke(certificate)
    request = CertificateRequest.objects.get(pk=certificate.request_id)
    assert request.status == CertificateRequest.Status.SENT
    assert len(mailbox.messages) == 1
