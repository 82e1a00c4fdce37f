"""The outbox against a real SMTP server and real gpg: order, retries, failures, wiping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any, cast

import pytest
from django.utils import timezone

from mycert.mail.messages import CertificateFacts, Envelope, keystore_message, password_message
from mycert.mail.transport import SendError, send_message
from mycert.models import (
    AuditEvent,
    Certificate,
    CertificateRequest,
    Delivery,
    OperatorAlert,
    Vendor,
)
from mycert.outbox import (
    BACKOFF_CAP,
    SendResult,
    backoff_delay,
    deliveries_due_ids,
    delivery_create_for_certificate,
    delivery_retry,
    delivery_send,
)
from mycert.sealing import SealError, unseal
from mycert.services.audit import audit_verify_chain
from mycert.services.issuance import delivery_failure_report
from mycert.services.vendors import vendor_set_pgp_key
from tests.factories import CertificateRequestFactory, VendorFactory
from tests.support.gpg import GpgKey, confirm_on_worker, decrypt
from tests.support.smtp_server import SmtpProcess, TestSmtpServer

KEYSTORE = b"\x30\x82\x0a\x00 not really PKCS#12, but binary: \x00\xff\xfe"
PASSWORD = "K7QX-M9RT-4WZP-H3NC-8VJD-2FBL"

pytestmark = pytest.mark.django_db


def make_certificate(*, vendor: Vendor | None = None, language: str = "fr") -> Certificate:
    """A certificate row with its request; no real X.509 needed for mail."""
    request = cast(
        CertificateRequest,
        CertificateRequestFactory(
            vendor=vendor,
            language=language,
            status=CertificateRequest.Status.SENDING,
            vendor_copy_consent=vendor is not None,
        ),
    )
    now = timezone.now()
    serial = f"{request.pk:04x}" + "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1"
    return Certificate.objects.create(
        request=request,
        professional=request.professional,
        serial=serial[:40],
        subject="CN=Anne Muller",
        issuer="CN=Issuing CA",
        key_type="ec-p256",
        not_before=now,
        not_after=now + timedelta(days=3 * 365),
        fingerprint_sha256=f"{request.pk:064x}",
        pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )


def create(
    certificate: Certificate, *, vendor: Vendor | None = None, language: str = "fr"
) -> dict[tuple[str, str], Delivery]:
    rows = delivery_create_for_certificate(
        certificate=certificate,
        keystore=KEYSTORE,
        password=PASSWORD,
        vendor=vendor,
        language=language,
        professional_email=certificate.professional.email,
    )
    return {(d.recipient, d.content): d for d in rows}


def sealed(delivery: Delivery) -> bytes:
    assert delivery.sealed_payload is not None
    return bytes(delivery.sealed_payload)


def parts(message: Message) -> list[Message]:
    return [p for p in message.walk() if not p.is_multipart()]


def text_of(message: Message) -> str:
    for part in parts(message):
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


def attachments(message: Message) -> list[Message]:
    return [p for p in parts(message) if p.get_filename()]


@pytest.fixture
def vendor_with_key(vendor_key: GpgKey, mycert_gpg_home: Path) -> Vendor:
    """A vendor whose address is its key's user ID, confirmed on the worker host."""
    vendor = cast(Vendor, VendorFactory(name="Logiciel Santé SA", email=vendor_key.uid_address))
    vendor = vendor_set_pgp_key(
        vendor_id=vendor.pk, pgp_key=vendor_key.public, actor="test", now=timezone.now()
    )
    confirm_on_worker(vendor)
    return vendor


@pytest.fixture
def celery_eager() -> Iterator[None]:
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = previous


# --- Creating the rows ---------------------------------------------------------------------


def test_two_rows_for_the_professional(settings: Any) -> None:
    settings.DEFAULT_FROM_EMAIL = "MyCert <mycert@esante.lu>"
    certificate = make_certificate()
    rows = create(certificate)

    assert set(rows) == {("professional", "keystore"), ("professional", "password")}
    keystore, password = rows["professional", "keystore"], rows["professional", "password"]
    assert keystore.after is None
    assert password.after == keystore
    assert keystore.to_email == certificate.professional.email
    assert keystore.key == f"cert:{certificate.pk}:professional:keystore"
    assert password.key == f"cert:{certificate.pk}:professional:password"
    assert re.fullmatch(r"<[0-9a-f]{32}@esante\.lu>", keystore.message_id)
    assert keystore.message_id != password.message_id
    # Stored sealed, never in clear.
    assert KEYSTORE not in sealed(keystore)
    assert unseal(sealed(keystore)) == KEYSTORE
    assert unseal(sealed(password)) == PASSWORD.encode()
    assert PASSWORD.encode() not in sealed(password)
    assert keystore.pgp_fingerprint == ""


def test_four_rows_with_a_vendor_pinned(vendor_with_key: Vendor, vendor_key: GpgKey) -> None:
    rows = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)

    assert len(rows) == 4
    vendor_keystore = rows["vendor", "keystore"]
    vendor_password = rows["vendor", "password"]
    assert vendor_password.after == vendor_keystore
    assert vendor_keystore.to_email == vendor_with_key.email
    assert vendor_keystore.vendor == vendor_with_key
    assert vendor_keystore.pgp_fingerprint == vendor_key.fingerprint
    assert vendor_password.pgp_fingerprint == vendor_key.fingerprint
    assert rows["professional", "keystore"].pgp_fingerprint == ""
    assert len({d.message_id for d in rows.values()}) == 4


# --- Sending --------------------------------------------------------------------------------


def test_keystore_then_password(smtp_settings: TestSmtpServer) -> None:
    certificate = make_certificate()
    rows = create(certificate)
    keystore, password = rows["professional", "keystore"], rows["professional", "password"]
    now = timezone.now()

    # The password mail waits for the keystore mail.
    assert delivery_send(delivery_id=password.pk, now=now).result is SendResult.WAITING
    assert smtp_settings.messages == []

    outcome = delivery_send(delivery_id=keystore.pk, now=now)
    assert outcome.result is SendResult.SENT
    assert outcome.ready_ids == (password.pk,)
    assert outcome.issuance_sent_certificate_id is None
    last = delivery_send(delivery_id=password.pk, now=now)
    assert last.result is SendResult.SENT
    assert last.issuance_sent_certificate_id == certificate.pk

    first, second = smtp_settings.messages
    assert first.message_id == keystore.message_id
    assert second.message_id == password.message_id
    assert first.rcpt_tos == (certificate.professional.email,)

    # The keystore mail: text + HTML + the .p12.
    (attachment,) = attachments(first.message)
    assert attachment.get_content_type() == "application/x-pkcs12"
    assert attachment.get_filename() == f"mycert-{certificate.serial[:16]}.p12"
    assert attachment.get_payload(decode=True) == KEYSTORE
    assert {p.get_content_type() for p in parts(first.message)} == {
        "text/plain",
        "text/html",
        "application/x-pkcs12",
    }
    body = text_of(first.message)
    assert "keytool -list -v -storetype PKCS12" in body
    assert "Windows" in body
    assert "macOS" in body
    assert "helpdesk@esante.lu" in body
    assert "(+352) 27 12 50 18 33" in body
    assert PASSWORD not in first.data.decode(errors="replace")

    # The password mail: the password and a pointer, never the keystore.
    assert attachments(second.message) == []
    assert PASSWORD in text_of(second.message)
    assert "e-mail 1/2" in text_of(second.message)
    assert first.message["Auto-Submitted"] == "auto-generated"

    # Wiped once sent, audited; the outbox says the pair is complete and closes nothing.
    for row in (keystore, password):
        row.refresh_from_db()
        assert row.status == Delivery.Status.SENT
        assert row.sealed_payload is None
        assert row.sent_at == now
        assert row.attempts == 1
    assert AuditEvent.objects.filter(action="delivery.sent").count() == 2
    certificate.request.refresh_from_db()
    assert certificate.request.status == CertificateRequest.Status.SENDING


def test_sending_twice_sends_once(smtp_settings: TestSmtpServer) -> None:
    keystore = create(make_certificate())["professional", "keystore"]
    now = timezone.now()

    assert delivery_send(delivery_id=keystore.pk, now=now).result is SendResult.SENT
    assert delivery_send(delivery_id=keystore.pk, now=now).result is SendResult.DONE
    assert smtp_settings.by_message_id()[keystore.message_id] == 1


def test_a_leased_row_is_left_alone(smtp_settings: TestSmtpServer) -> None:
    """Another worker holds it (claimed, sending): a duplicate task does nothing."""
    keystore = create(make_certificate())["professional", "keystore"]
    now = timezone.now()
    Delivery.objects.filter(pk=keystore.pk).update(next_attempt_at=now + timedelta(minutes=2))

    outcome = delivery_send(delivery_id=keystore.pk, now=now)

    assert outcome.result is SendResult.NOT_DUE
    assert smtp_settings.messages == []


def test_only_the_professionals_two_mails_complete_the_issuance(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor
) -> None:
    """A vendor copy still unsent (or failed for good) never holds the professional back."""
    certificate = make_certificate(vendor=vendor_with_key)
    rows = create(certificate, vendor=vendor_with_key)
    now = timezone.now()
    first = delivery_send(delivery_id=rows["professional", "keystore"].pk, now=now)
    assert first.issuance_sent_certificate_id is None
    last = delivery_send(delivery_id=rows["professional", "password"].pk, now=now)
    assert last.issuance_sent_certificate_id == certificate.pk
    for key in [("vendor", "keystore"), ("vendor", "password")]:
        outcome = delivery_send(delivery_id=rows[key].pk, now=now)
        assert outcome.result is SendResult.SENT
        assert outcome.issuance_sent_certificate_id is None


def test_vendor_copy_is_pgp_mime(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor, vendor_key: GpgKey
) -> None:
    certificate = make_certificate(vendor=vendor_with_key)
    rows = create(certificate, vendor=vendor_with_key)
    now = timezone.now()
    for key in [("vendor", "keystore"), ("vendor", "password")]:
        assert delivery_send(delivery_id=rows[key].pk, now=now).result is SendResult.SENT

    keystore_mail, password_mail = smtp_settings.messages
    professional = certificate.professional
    for received, part in ((keystore_mail, "1/2"), (password_mail, "2/2")):
        outer = received.message
        # RFC 3156 §4.
        assert outer.get_content_type() == "multipart/encrypted"
        assert outer.get_param("protocol") == "application/pgp-encrypted"
        version, data = cast(list[Message], outer.get_payload())
        assert version.get_content_type() == "application/pgp-encrypted"
        assert str(version.get_payload()).strip() == "Version: 1"
        assert data.get_content_type() == "application/octet-stream"
        assert str(data.get_payload()).lstrip().startswith("-----BEGIN PGP MESSAGE-----")
        # Nothing readable outside but a counter (keystore first): no name, no secret.
        assert header_text(received.subject) == f"MyCert : message chiffré ({part})"
        raw = received.data.decode(errors="replace")
        assert professional.family_name not in raw
        assert PASSWORD not in raw
        assert received.rcpt_tos == (vendor_with_key.email,)

    inner = decrypt(vendor_key, keystore_mail.message)
    assert inner.get_param("protected-headers") == "v1"
    assert header_text(inner["Subject"]).startswith("MyCert : copie d'un certificat")
    (attachment,) = attachments(inner)
    assert attachment.get_filename() == f"mycert-{certificate.serial[:16]}.p12"
    assert attachment.get_payload(decode=True) == KEYSTORE
    body = text_of(inner)
    assert professional.full_name in body
    assert professional.professional_id in body
    assert "Logiciel Santé SA" in body

    inner_password = decrypt(vendor_key, password_mail.message)
    assert PASSWORD in text_of(inner_password)
    assert attachments(inner_password) == []


def test_temporary_failure_backs_off_then_delivers_once(smtp_settings: TestSmtpServer) -> None:
    keystore = create(make_certificate())["professional", "keystore"]
    smtp_settings.fail_next(2, code=451)
    now = timezone.now()

    first = delivery_send(delivery_id=keystore.pk, now=now)
    assert first.result is SendResult.RETRY
    assert first.retry_at == now + timedelta(seconds=30)
    keystore.refresh_from_db()
    assert keystore.status == Delivery.Status.RETRYING
    assert keystore.attempts == 1
    assert keystore.last_error.startswith("refused: 451")
    assert keystore.sealed_payload is not None

    # Too early: nothing happens.
    assert delivery_send(delivery_id=keystore.pk, now=now + timedelta(seconds=10)).result is (
        SendResult.NOT_DUE
    )
    second = delivery_send(delivery_id=keystore.pk, now=now + timedelta(seconds=30))
    assert second.result is SendResult.RETRY
    assert second.retry_at == now + timedelta(seconds=30 + 60)
    third = delivery_send(delivery_id=keystore.pk, now=now + timedelta(seconds=90))
    assert third.result is SendResult.SENT

    assert smtp_settings.by_message_id() == {keystore.message_id: 1}
    keystore.refresh_from_db()
    assert keystore.attempts == 3
    assert keystore.last_error == ""


def test_relay_down_is_temporary(smtp_settings: TestSmtpServer) -> None:
    keystore = create(make_certificate())["professional", "keystore"]
    smtp_settings.stop()
    now = timezone.now()

    outcome = delivery_send(delivery_id=keystore.pk, now=now)

    assert outcome.result is SendResult.RETRY
    assert "connection failed" in outcome.error
    smtp_settings.start()
    assert outcome.retry_at is not None
    assert delivery_send(delivery_id=keystore.pk, now=outcome.retry_at).result is SendResult.SENT
    assert len(smtp_settings.messages) == 1


def test_attempts_run_out(smtp_settings: TestSmtpServer, settings: Any) -> None:
    settings.MYCERT_DELIVERY_MAX_ATTEMPTS = 2
    keystore = create(make_certificate())["professional", "keystore"]
    smtp_settings.fail_next(5, code=421)
    now = timezone.now()

    assert delivery_send(delivery_id=keystore.pk, now=now).result is SendResult.RETRY
    outcome = delivery_send(delivery_id=keystore.pk, now=now + timedelta(minutes=5))

    assert outcome.result is SendResult.FAILED
    keystore.refresh_from_db()
    assert keystore.status == Delivery.Status.FAILED
    assert keystore.sealed_payload is not None


def test_permanent_failure_then_helpdesk_retry(smtp_settings: TestSmtpServer) -> None:
    rows = create(make_certificate())
    keystore, password = rows["professional", "keystore"], rows["professional", "password"]
    smtp_settings.fail_next(1, code=550)
    now = timezone.now()

    outcome = delivery_send(delivery_id=keystore.pk, now=now)

    assert outcome.result is SendResult.FAILED
    keystore.refresh_from_db()
    assert keystore.status == Delivery.Status.FAILED
    assert keystore.last_error.startswith("refused: 550")
    assert unseal(sealed(keystore)) == KEYSTORE  # kept for the helpdesk
    failed = AuditEvent.objects.get(action="delivery.failed")
    assert failed.object_id == str(keystore.pk)
    assert failed.details["permanent"] is True
    # The password mail does not go out without its keystore mail.
    assert delivery_send(delivery_id=password.pk, now=now).result is SendResult.WAITING
    assert deliveries_due_ids(now=now) == []

    delivery_retry(delivery_id=keystore.pk, actor="user:7")

    keystore.refresh_from_db()
    assert keystore.status == Delivery.Status.PENDING
    assert keystore.attempts == 0
    assert AuditEvent.objects.get(action="delivery.retried").actor == "user:7"
    assert deliveries_due_ids(now=now) == [keystore.pk]
    outcome = delivery_send(delivery_id=keystore.pk, now=now)
    assert outcome.result is SendResult.SENT
    assert outcome.ready_ids == (password.pk,)


def test_retry_refuses_what_did_not_fail() -> None:
    keystore = create(make_certificate())["professional", "keystore"]

    with pytest.raises(ValueError, match="only failed"):
        delivery_retry(delivery_id=keystore.pk, actor="user:7")


@pytest.mark.parametrize(("code", "result"), [(550, SendResult.FAILED), (450, SendResult.RETRY)])
def test_recipient_refused(smtp_settings: TestSmtpServer, code: int, result: SendResult) -> None:
    certificate = make_certificate()
    keystore = create(certificate)["professional", "keystore"]
    smtp_settings.refuse_recipient(certificate.professional.email, code=code)

    outcome = delivery_send(delivery_id=keystore.pk, now=timezone.now())

    assert outcome.result is result
    keystore.refresh_from_db()
    assert keystore.last_error.startswith(f"recipient refused: {code}")
    # The relay's reply is stored without the address it may echo.
    assert certificate.professional.email not in keystore.last_error
    assert smtp_settings.messages == []


def _keystore_mail(*, to: str, message_id: str) -> Any:
    """A keystore e-mail built outside the outbox, to send with ``send_message``."""
    return keystore_message(
        envelope=Envelope(to=to, message_id=message_id),
        facts=CertificateFacts(
            serial="ab" * 20,
            professional_name="Anne Muller",
            professional_id="LU-1",
            not_after=timezone.now(),
        ),
        keystore=KEYSTORE,
    )


@pytest.fixture
def relay_connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every SMTP connection opened during the test, as (host, port): the real connect."""
    import smtplib

    opened: list[tuple[str, int]] = []
    real_connect = smtplib.SMTP.connect

    def counting_connect(self: smtplib.SMTP, host: str = "localhost", port: int = 0, **kw: Any):
        opened.append((host, port))
        return real_connect(self, host, port, **kw)

    monkeypatch.setattr(smtplib.SMTP, "connect", counting_connect)
    return opened


def test_partial_refusal_is_a_failure(smtp_settings: TestSmtpServer) -> None:
    """Django's backend would report success here (docs/architecture.md « Known pitfalls »); MyCert
    does not."""
    smtp_settings.refuse_recipient("refused@example.lu", code=550)
    message = _keystore_mail(to="accepted@example.lu", message_id="<p1@esante.lu>")
    message.to.append("refused@example.lu")

    with pytest.raises(SendError) as caught:
        send_message(message)

    assert caught.value.temporary is False
    assert "550" in caught.value.reason
    assert [m.rcpt_tos for m in smtp_settings.messages] == [("accepted@example.lu",)]


def test_expired_vendor_key_fails_then_new_key_repins(
    smtp_settings: TestSmtpServer,
    vendor_with_key: Vendor,
    vendor_key: GpgKey,
    key_factory: Any,
) -> None:
    vendor_keystore = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)[
        "vendor", "keystore"
    ]
    after_expiry = timezone.now() + timedelta(days=400)

    outcome = delivery_send(delivery_id=vendor_keystore.pk, now=after_expiry)

    assert outcome.result is SendResult.FAILED
    assert "OpenPGP" in outcome.error
    assert "expired" in outcome.error
    assert smtp_settings.messages == []

    new_key = key_factory(f"Logiciel Santé SA <{vendor_with_key.email}>")
    vendor_set_pgp_key(
        vendor_id=vendor_with_key.pk, pgp_key=new_key.public, actor="user:7", now=timezone.now()
    )
    confirm_on_worker(vendor_with_key)  # the security officer, on the worker host
    delivery_retry(delivery_id=vendor_keystore.pk, actor="user:7")
    vendor_keystore.refresh_from_db()
    assert vendor_keystore.pgp_fingerprint == new_key.fingerprint

    assert delivery_send(delivery_id=vendor_keystore.pk, now=timezone.now()).result is (
        SendResult.SENT
    )
    (received,) = smtp_settings.messages
    (attachment,) = attachments(decrypt(new_key, received.message))
    assert attachment.get_payload(decode=True) == KEYSTORE


def test_a_replaced_key_is_not_used_for_pinned_mail(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor, key_factory: Any
) -> None:
    """The pin holds: mail created for the old key never goes to another key silently,
    and once the new key is confirmed it no longer goes to the old one either."""
    vendor_keystore = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)[
        "vendor", "keystore"
    ]
    new_key = key_factory(f"Other <{vendor_with_key.email}>")
    vendor_set_pgp_key(
        vendor_id=vendor_with_key.pk, pgp_key=new_key.public, actor="user:7", now=timezone.now()
    )
    confirm_on_worker(vendor_with_key)

    outcome = delivery_send(delivery_id=vendor_keystore.pk, now=timezone.now())

    assert outcome.result is SendResult.FAILED
    assert "not to the key confirmed" in outcome.error
    assert smtp_settings.messages == []


def test_a_vendor_copy_without_a_key_is_never_sent_in_clear(
    smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """A request made before the vendor policy (or before an upgrade), issued under it:
    the keystore and its password would meet in the vendor's mailbox unencrypted."""
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = True
    keyless = cast(Vendor, VendorFactory(name="Sans Clé SARL"))
    rows = create(make_certificate(vendor=keyless), vendor=keyless)

    outcome = delivery_send(delivery_id=rows["vendor", "keystore"].pk, now=timezone.now())

    assert outcome.result is SendResult.FAILED
    assert outcome.failed_issuance_mail  # the helpdesk is told
    assert "OpenPGP" in outcome.error
    assert smtp_settings.messages == []
    # The professional is not held back by the vendor's copy.
    professional = rows["professional", "keystore"]
    assert delivery_send(delivery_id=professional.pk, now=timezone.now()).result is (
        SendResult.SENT
    )
    assert [m.rcpt_tos for m in smtp_settings.messages] == [(professional.to_email,)]
    # Retrying before the vendor has a key would only fail again: refused, said why.
    with pytest.raises(ValueError, match="no OpenPGP key yet"):
        delivery_retry(delivery_id=rows["vendor", "keystore"].pk, actor="user:7")


def test_without_the_policy_a_keyless_vendor_copy_goes_in_clear(
    smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """The agency may accept copies protected by its mail gateway alone (deploy.md)."""
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = False
    keyless = cast(Vendor, VendorFactory(name="Sans Clé SARL"))
    confirm_on_worker(keyless)  # its address, anchored on the worker host
    rows = create(make_certificate(vendor=keyless), vendor=keyless)

    outcome = delivery_send(delivery_id=rows["vendor", "keystore"].pk, now=timezone.now())

    assert outcome.result is SendResult.SENT
    (received,) = smtp_settings.messages
    (attachment,) = attachments(received.message)
    assert attachment.get_payload(decode=True) == KEYSTORE


def test_a_retry_pins_the_waiting_password_copy_to_the_new_key_too(
    smtp_settings: TestSmtpServer, settings: Any, mycert_gpg_home: Path, key_factory: Any
) -> None:
    """One retry sends the vendor's pair: the password copy waits for the keystore copy
    and would otherwise fail in turn on the key it was pinned to (or on none)."""
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = True
    keyless = cast(Vendor, VendorFactory(name="Sans Clé SARL", email="pgp@sans-cle.example.lu"))
    rows = create(make_certificate(vendor=keyless), vendor=keyless)
    keystore_copy, password_copy = rows["vendor", "keystore"], rows["vendor", "password"]
    assert delivery_send(delivery_id=keystore_copy.pk, now=timezone.now()).result is (
        SendResult.FAILED
    )

    key = key_factory("Sans Clé SARL <pgp@sans-cle.example.lu>")
    vendor_set_pgp_key(vendor_id=keyless.pk, pgp_key=key.public, actor="user:1", now=timezone.now())
    confirm_on_worker(keyless)
    delivery_retry(delivery_id=keystore_copy.pk, actor="user:7")

    password_copy.refresh_from_db()
    assert password_copy.pgp_fingerprint == key.fingerprint
    sent = delivery_send(delivery_id=keystore_copy.pk, now=timezone.now())
    assert sent.result is SendResult.SENT
    assert sent.ready_ids == (password_copy.pk,)
    assert delivery_send(delivery_id=password_copy.pk, now=timezone.now()).result is (
        SendResult.SENT
    )
    keystore_mail, password_mail = (m.message for m in smtp_settings.messages)
    (attachment,) = attachments(decrypt(key, keystore_mail))
    assert attachment.get_payload(decode=True) == KEYSTORE
    assert PASSWORD in text_of(decrypt(key, password_mail))
    retried = AuditEvent.objects.get(action="delivery.retried")
    assert retried.details["pgp_fingerprint"] == {"old": "", "new": key.fingerprint}
    assert retried.details["password_copy_repinned"] == password_copy.pk


def _failed_vendor_copy(settings: Any) -> Delivery:
    """A vendor keystore copy failed for good and recorded, its report not yet written:
    the state a worker leaves when it dies between the two."""
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = True
    keyless = cast(Vendor, VendorFactory(name="Sans Clé SARL", email="pgp@sans-cle.example.lu"))
    copy = create(make_certificate(vendor=keyless), vendor=keyless)["vendor", "keystore"]
    assert delivery_send(delivery_id=copy.pk, now=timezone.now()).result is SendResult.FAILED
    return copy


def test_a_failure_whose_report_was_lost_is_reported_by_the_outbox_sweep(
    settings: Any, smtp_settings: TestSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mycert.tasks import delivery as delivery_tasks

    copy = _failed_vendor_copy(settings)
    monkeypatch.setattr(delivery_tasks.send_delivery, "delay", lambda _delivery_id: None)
    assert not OperatorAlert.objects.exists()

    delivery_tasks.sweep_outbox()
    delivery_tasks.sweep_outbox()

    (alert,) = OperatorAlert.objects.filter(kind="delivery_failed")
    assert f"n° {copy.pk} " in alert.body
    copy.refresh_from_db()
    assert copy.failure_reported_at is not None


def test_a_failure_is_reported_once_however_often_asked(settings: Any) -> None:
    """The worker's own report and the sweep's may meet: one alert."""
    copy = _failed_vendor_copy(settings)

    assert delivery_failure_report(delivery_id=copy.pk, now=timezone.now())
    assert not delivery_failure_report(delivery_id=copy.pk, now=timezone.now())

    assert OperatorAlert.objects.filter(kind="delivery_failed").count() == 1


def test_a_retried_copy_that_fails_again_is_reported_again(
    settings: Any, key_factory: Any, mycert_gpg_home: Path
) -> None:
    copy = _failed_vendor_copy(settings)
    delivery_failure_report(delivery_id=copy.pk, now=timezone.now())
    key = key_factory("Sans Clé SARL <pgp@sans-cle.example.lu>")
    assert copy.vendor is not None
    vendor_set_pgp_key(
        vendor_id=copy.vendor.pk, pgp_key=key.public, actor="user:1", now=timezone.now()
    )
    confirm_on_worker(copy.vendor)
    delivery_retry(delivery_id=copy.pk, actor="user:7")
    copy.refresh_from_db()
    assert copy.failure_reported_at is None

    # The relay is gone (no SMTP settings here): attempts run out, a new failure.
    settings.MYCERT_DELIVERY_MAX_ATTEMPTS = 1
    assert delivery_send(delivery_id=copy.pk, now=timezone.now()).result is SendResult.FAILED
    assert delivery_failure_report(delivery_id=copy.pk, now=timezone.now())
    assert OperatorAlert.objects.filter(kind="delivery_failed").count() == 2


# --- Sweep, back-off, tasks ---------------------------------------------------------------------


def test_sweep_returns_due_ids_only(smtp_settings: TestSmtpServer) -> None:
    now = timezone.now()
    a = create(make_certificate())
    b = create(make_certificate())
    c = create(make_certificate())
    # a: keystore due, password waits for it.
    # b: keystore backing off until later.
    Delivery.objects.filter(pk=b["professional", "keystore"].pk).update(
        status=Delivery.Status.RETRYING, next_attempt_at=now + timedelta(minutes=1)
    )
    # c: keystore sent, so its password is due; a lease that ran out counts as due.
    delivery_send(delivery_id=c["professional", "keystore"].pk, now=now)
    Delivery.objects.filter(pk=c["professional", "password"].pk).update(
        next_attempt_at=now - timedelta(seconds=1)
    )

    assert deliveries_due_ids(now=now) == [
        a["professional", "keystore"].pk,
        c["professional", "password"].pk,
    ]
    assert b["professional", "keystore"].pk in deliveries_due_ids(now=now + timedelta(minutes=1))


def test_backoff_is_capped_below_the_visibility_timeout() -> None:
    assert [backoff_delay(n).total_seconds() for n in range(1, 8)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1800,
    ]
    assert backoff_delay(50) == BACKOFF_CAP
    assert timedelta(hours=1) > BACKOFF_CAP


def test_task_sends_keystore_then_password(
    smtp_settings: TestSmtpServer, celery_eager: None
) -> None:
    from mycert.tasks.delivery import send_delivery, sweep_outbox

    rows = create(make_certificate())

    send_delivery.delay(rows["professional", "keystore"].pk)

    assert [m.message_id for m in smtp_settings.messages] == [
        rows["professional", "keystore"].message_id,
        rows["professional", "password"].message_id,
    ]
    assert sweep_outbox() == 0


def test_issuance_task_sends_all_four_mails_on_one_relay_session(
    ca: Any,
    smtp_settings: TestSmtpServer,
    celery_eager: None,
    vendor_with_key: Vendor,
    relay_connections: list[tuple[str, int]],
) -> None:
    """One task issues and sends: no e-mail waits behind other queued issuances."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.tasks.issuance import issue_certificate

    request = CertificateRequestFactory.create(vendor=vendor_with_key)

    with CaptureQueriesContext(connection) as queries:
        issue_certificate.delay(request.pk)

    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT
    rows = Delivery.objects.filter(certificate__request=request).order_by("pk")
    # One batch: both keystore e-mails, then both password e-mails.
    assert [m.message_id for m in smtp_settings.messages] == [r.message_id for r in rows]
    assert {rows[0].content, rows[1].content} == {Delivery.Content.KEYSTORE}
    assert relay_connections == [(smtp_settings.host, smtp_settings.port)]
    # A budget, not a target: 4 e-mails each claimed and recorded in its own short
    # transaction with its audit event, and the request closed (PostgreSQL adds an
    # advisory lock per audit event). More means a loop started querying per row.
    assert len(queries) <= 72, "\n".join(q["sql"][:120] for q in queries.captured_queries)


def test_the_request_closes_in_the_transaction_that_records_its_last_email(
    ca: Any, smtp_settings: TestSmtpServer, celery_eager: None, vendor_with_key: Vendor
) -> None:
    """Closing the request is part of recording its password e-mail, not a third step.

    One transaction fewer per certificate, and one chain lock, read and INSERT fewer:
    the request's « sent » event goes in the record's audit INSERT. The two writes
    commit together, so no worker lost between them leaves a request « sending » for
    the sweep to close.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.tasks.issuance import issue_certificate

    request = CertificateRequestFactory.create(vendor=vendor_with_key)
    first_event = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    with CaptureQueriesContext(connection) as queries:
        issue_certificate.delay(request.pk)

    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT
    assert request.completed_at is not None
    audit_inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('INSERT INTO "mycert_auditevent"')
    ]
    # The issuance's events, then the record's: the deliveries' and the request's.
    assert len(audit_inserts) == 2, audit_inserts
    actions = list(
        AuditEvent.objects.filter(pk__gt=first_event)
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions[-1] == AuditEvent.Action.REQUEST_SENT
    assert actions.count(AuditEvent.Action.REQUEST_SENT) == 1
    assert audit_verify_chain()[1] is None


def test_a_batch_is_claimed_recorded_and_audited_with_one_statement_each(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor
) -> None:
    """Four rows, one lease, one record, one INSERT of their audit events.

    No CASE per row and field (bulk_update's): building such an UPDATE cost a worker
    more CPU than the database spent on it; nor an audit INSERT (and chain lock and
    read) per e-mail.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.outbox import deliveries_send

    rows = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)
    keystores = [rows["professional", "keystore"].pk, rows["vendor", "keystore"].pk]

    with CaptureQueriesContext(connection) as queries:
        outcomes = deliveries_send(delivery_ids=keystores, now=timezone.now())

    assert {o.result for o in outcomes} == {SendResult.SENT}
    assert len(smtp_settings.messages) == 4
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2, updates
    assert not any("CASE WHEN" in sql for sql in updates), updates
    # The four « sent » events: one INSERT, chained in the rows' order.
    audit_inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('INSERT INTO "mycert_auditevent"')
    ]
    assert len(audit_inserts) == 1, audit_inserts
    sent_events = AuditEvent.objects.filter(action="delivery.sent").order_by("pk")
    assert len(sent_events) == 4
    assert audit_verify_chain()[1] is None
    for row in Delivery.objects.filter(pk__in=[r.pk for r in rows.values()]):
        assert (row.status, row.attempts, row.sealed_payload) == (Delivery.Status.SENT, 1, None)


def test_the_record_takes_the_rows_a_keystore_unblocks_from_the_claim(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor
) -> None:
    """The claim already read, under its lock, the rows waiting for each keystore
    e-mail: the record does not read them again (three reads of the outbox per batch:
    the claim, the record's lock, the check that the professional has both e-mails)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.outbox import deliveries_send

    rows = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)
    keystores = [rows["professional", "keystore"].pk, rows["vendor", "keystore"].pk]

    with CaptureQueriesContext(connection) as queries:
        outcomes = deliveries_send(delivery_ids=keystores, now=timezone.now())

    assert {o.result for o in outcomes} == {SendResult.SENT}
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "mycert_delivery"' in q["sql"]
    ]
    assert len(reads) == 3, "\n".join(sql[:150] for sql in reads)


def test_the_issuing_task_sends_what_its_transaction_leased_without_claiming_it(
    ca: Any, smtp_settings: TestSmtpServer, celery_eager: None, vendor_with_key: Vendor
) -> None:
    """The issuer's transaction writes the e-mails leased to its own worker, which sends
    them at once: no claim re-reads and re-leases the rows it has just written (a
    SELECT … FOR UPDATE over four joins, an UPDATE and a transaction per certificate).
    What is left of the outbox per certificate: the record's lock and its check that the
    professional has both e-mails, and the record's UPDATE."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.tasks.issuance import issue_certificate

    request = CertificateRequestFactory.create(vendor=vendor_with_key)

    with CaptureQueriesContext(connection) as queries:
        issue_certificate.delay(request.pk)

    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT
    statements = [q["sql"] for q in queries.captured_queries]
    reads = [s for s in statements if s.startswith("SELECT") and 'FROM "mycert_delivery"' in s]
    updates = [s for s in statements if s.startswith('UPDATE "mycert_delivery"')]
    assert len(reads) == 2, "\n".join(sql[:150] for sql in reads)
    assert len(updates) == 1, updates
    rows = list(Delivery.objects.filter(certificate__request=request).order_by("pk"))
    assert [m.message_id for m in smtp_settings.messages] == [r.message_id for r in rows]
    for row in rows:
        assert (row.status, row.attempts, row.sealed_payload, row.next_attempt_at) == (
            Delivery.Status.SENT,
            1,
            None,
            None,
        )
    assert audit_verify_chain()[1] is None


def test_a_worker_lost_between_issuance_and_sending_leaves_rows_the_sweep_sends_later(
    ca: Any, smtp_settings: TestSmtpServer
) -> None:
    """Leased by the issuer's transaction, the rows of a worker that died before sending
    them are no one's until the lease ends (a duplicate task leaves them alone); then
    they are due, and sent once, with the attempt the lease counted."""
    from mycert.outbox import deliveries_due_ids, deliveries_send
    from mycert.services.issuance import request_issue

    request = CertificateRequestFactory.create()
    now = timezone.now()
    outcome = request_issue(request_id=request.pk, now=now, send_now=True)
    # The worker is lost here: nothing sent, nothing recorded.
    assert outcome.certificate_id is not None
    rows = list(Delivery.objects.filter(certificate_id=outcome.certificate_id).order_by("pk"))
    assert [r.attempts for r in rows] == [1, 1]
    assert all(r.next_attempt_at is not None and r.next_attempt_at > now for r in rows)
    assert deliveries_due_ids(now=now) == []
    outcomes = deliveries_send(delivery_ids=[rows[0].pk], now=now)
    assert [o.result for o in outcomes] == [SendResult.NOT_DUE]
    assert smtp_settings.messages == []

    later = max(r.next_attempt_at for r in rows if r.next_attempt_at) + timedelta(seconds=1)
    assert deliveries_due_ids(now=later) == [rows[0].pk]
    outcomes = deliveries_send(delivery_ids=[rows[0].pk], now=later)
    assert {o.result for o in outcomes} == {SendResult.SENT}
    assert [m.message_id for m in smtp_settings.messages] == [r.message_id for r in rows]
    for row in Delivery.objects.filter(pk__in=[r.pk for r in rows]):
        assert (row.status, row.attempts) == (Delivery.Status.SENT, 2)


def test_the_issuing_task_leaves_a_copy_it_may_not_send_to_the_claim(
    ca: Any, smtp_settings: TestSmtpServer, celery_eager: None, settings: Any
) -> None:
    """A vendor copy the claim would refuse (no key where the policy forbids a copy in
    clear) is not written leased: it goes through the claim, in the same batch as the
    professional's leased e-mails, and fails for the helpdesk, while the professional's
    e-mails leave and close the request."""
    from mycert.tasks.issuance import issue_certificate

    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = True
    keyless = cast(Vendor, VendorFactory(name="Sans Clé SARL"))
    request = CertificateRequestFactory.create(vendor=keyless)

    issue_certificate.delay(request.pk)

    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT
    rows = {
        (r.recipient, r.content): r for r in Delivery.objects.filter(certificate__request=request)
    }
    professional = [rows["professional", "keystore"], rows["professional", "password"]]
    assert [m.message_id for m in smtp_settings.messages] == [r.message_id for r in professional]
    assert [(r.status, r.attempts) for r in professional] == [(Delivery.Status.SENT, 1)] * 2
    copy = rows["vendor", "keystore"]
    assert copy.status == Delivery.Status.FAILED
    assert "OpenPGP" in copy.last_error
    assert rows["vendor", "password"].status != Delivery.Status.SENT


def test_relay_connection_is_kept_and_reopened_when_dropped(
    smtp_settings: TestSmtpServer, relay_connections: list[tuple[str, int]]
) -> None:
    """Kept between messages; a relay that closed it costs a reconnect, not a failure."""
    import socket

    from mycert.mail import transport

    opened = relay_connections

    def message(number: int) -> Any:
        return _keystore_mail(to="anne@example.lu", message_id=f"<keep{number}@esante.lu>")

    send_message(message(1))
    send_message(message(2))
    assert len(opened) == 1
    # The relay drops the session (a restart, its idle timer): the NOOP probe notices.
    transport._kept.connection.smtp.sock.shutdown(socket.SHUT_RDWR)
    send_message(message(3))
    assert len(opened) == 2
    # Idle for longer than KEEP_OPEN_SECONDS: closed and opened anew, without a probe.
    transport._kept.connection.last_used -= transport.KEEP_OPEN_SECONDS + 1
    send_message(message(4))
    assert len(opened) == 3
    # A refused message closes the session: the next one starts clean.
    smtp_settings.fail_next(1, code=451)
    with pytest.raises(SendError):
        send_message(message(5))
    assert transport._kept.connection is None
    send_message(message(6))
    assert len(opened) == 4
    assert [m.message_id for m in smtp_settings.messages] == [
        f"<keep{n}@esante.lu>" for n in (1, 2, 3, 4, 6)
    ]


def test_a_kept_session_carries_the_next_message_without_a_probe(
    smtp_settings: TestSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAIL FROM is the probe: a NOOP before each message was one more round trip to the
    relay per e-mail (four per certificate), and a relay that closed the session still
    costs a reconnect only (the test above)."""
    import smtplib

    commands: list[str] = []
    real_putcmd = smtplib.SMTP.putcmd

    def recording_putcmd(self: smtplib.SMTP, cmd: str, args: str = "") -> None:
        commands.append(cmd.lower())
        real_putcmd(self, cmd, args)

    monkeypatch.setattr(smtplib.SMTP, "putcmd", recording_putcmd)
    for number in (1, 2, 3):
        send_message(_keystore_mail(to="anne@example.lu", message_id=f"<np{number}@esante.lu>"))

    assert "noop" not in commands, commands
    assert commands.count("mail") == 3
    assert len(smtp_settings.messages) == 3


def test_task_schedules_its_retry(smtp_settings: TestSmtpServer, celery_eager: None) -> None:
    from mycert.tasks.delivery import send_delivery, sweep_outbox

    keystore = create(make_certificate())["professional", "keystore"]
    smtp_settings.fail_next(1, code=451)

    # Eager mode runs the countdown retry at once: it finds the row backing off.
    assert send_delivery.delay(keystore.pk).get() == "retry"
    keystore.refresh_from_db()
    assert keystore.status == Delivery.Status.RETRYING
    assert sweep_outbox() == 0  # not due yet
    Delivery.objects.filter(pk=keystore.pk).update(next_attempt_at=timezone.now())
    assert sweep_outbox() == 1  # sends it (and then its password)
    assert len(smtp_settings.messages) == 2


# --- Messages ------------------------------------------------------------------------------------


LANGUAGE_CASES = {
    # language asked: (template language, greeting, subject, macOS wording, month)
    "fr": (
        "fr",
        "Votre certificat MyCert est prêt.",
        "MyCert : votre certificat",
        "Trousseau d'accès",
        "décembre",
    ),
    "de": (
        "de",
        "Ihr MyCert-Zertifikat ist bereit.",
        "MyCert: Ihr Zertifikat",
        "Schlüsselbund",
        "Dezember",
    ),
    "en": (
        "en",
        "Your MyCert certificate is ready.",
        "MyCert: your certificate",
        "Keychain",
        "24 December 2029",
    ),
    "de-LU": (
        "de",
        "Ihr MyCert-Zertifikat ist bereit.",
        "MyCert: Ihr Zertifikat",
        "Schlüsselbund",
        "Dezember",
    ),
    "pt": (
        "fr",
        "Votre certificat MyCert est prêt.",
        "MyCert : votre certificat",
        "Trousseau d'accès",
        "décembre",
    ),
}


def header_text(value: str) -> str:
    return str(make_header(decode_header(value)))


@pytest.mark.parametrize("language", list(LANGUAGE_CASES))
def test_messages_in_the_recipients_language(language: str) -> None:
    expected_language, greeting, subject, macos, month = LANGUAGE_CASES[language]
    facts = CertificateFacts(
        serial="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        professional_name="Anne O'Muller",
        professional_id="LU-MED-100001",
        not_after=datetime(2029, 12, 24, 12, tzinfo=timezone.get_current_timezone()),
    )
    envelope = Envelope(to="anne@example.lu", message_id="<m1@esante.lu>", language=language)

    keystore = keystore_message(envelope=envelope, facts=facts, keystore=KEYSTORE).message()
    password = password_message(envelope=envelope, facts=facts, password=PASSWORD).message()

    text = text_of(keystore)
    assert greeting in text
    assert macos in text
    assert month in text
    assert "Anne O'Muller" in text  # plain text is not HTML-escaped
    assert keystore["Message-ID"] == "<m1@esante.lu>"
    assert keystore["Content-Language"] == expected_language
    assert header_text(keystore["Subject"]).startswith(subject)
    html = next(p for p in parts(keystore) if p.get_content_type() == "text/html")
    html_payload = html.get_payload(decode=True)
    assert isinstance(html_payload, bytes)
    assert "Anne O&#x27;Muller" in html_payload.decode()
    assert f'lang="{expected_language}"' in html_payload.decode()
    assert "0a1b2c3d4e5f6071" in header_text(password["Subject"])
    assert PASSWORD in text_of(password)
    assert attachments(password) == []


def test_sink_process_writes_a_maildir(settings: Any, smtp_process: SmtpProcess) -> None:
    """The separate-process sink (for tests with real workers, and the demo)."""
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    rows = create(make_certificate())
    now = timezone.now()

    smtp_process.stop()
    assert delivery_send(delivery_id=rows["professional", "keystore"].pk, now=now).result is (
        SendResult.RETRY
    )
    smtp_process.start()
    later = now + timedelta(minutes=1)
    for key in [("professional", "keystore"), ("professional", "password")]:
        assert delivery_send(delivery_id=rows[key].pk, now=later).result is SendResult.SENT

    stored = smtp_process.messages()
    assert [m["Message-ID"] for m in stored] == [
        rows["professional", "keystore"].message_id,
        rows["professional", "password"].message_id,
    ]
    (attachment,) = attachments(stored[0])
    assert attachment.get_payload(decode=True) == KEYSTORE


def test_a_broken_installation_is_retried_not_stuck(
    smtp_settings: TestSmtpServer, vendor_with_key: Vendor, settings: Any
) -> None:
    """No gpg binary: the attempt is counted, so the row cannot loop under its lease."""
    settings.MYCERT_GPG_BINARY = "/nonexistent/gpg"
    vendor_keystore = create(make_certificate(vendor=vendor_with_key), vendor=vendor_with_key)[
        "vendor", "keystore"
    ]

    outcome = delivery_send(delivery_id=vendor_keystore.pk, now=timezone.now())

    assert outcome.result is SendResult.RETRY
    assert outcome.error.startswith("internal error:")
    assert smtp_settings.messages == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_retries_then_delivers_each_mail_once(
    worker_env: dict[str, str], smtp_process: SmtpProcess, tmp_path: Path
) -> None:
    """A real Celery worker and a separate SMTP process: 451 first, then the retry task."""
    from mycert.tasks.delivery import send_delivery
    from tests.support.worker import WorkerProcess, wait_until

    smtp_process.stop()
    smtp_process.start(fail_next=1, fail_code=451)
    worker_env["EMAIL_URL"] = f"smtp://{smtp_process.host}:{smtp_process.port}"
    rows = create(make_certificate())
    keystore, password = rows["professional", "keystore"], rows["professional", "password"]
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        send_delivery.delay(keystore.pk)
        # The back-off is 30 s after the first temporary failure.
        wait_until(lambda: len(smtp_process.messages()) >= 2, timeout=120, what="two e-mails")
    finally:
        workers.stop_all()

    assert smtp_process.by_message_id() == {keystore.message_id: 1, password.message_id: 1}
    keystore.refresh_from_db()
    password.refresh_from_db()
    assert (keystore.status, keystore.attempts) == (Delivery.Status.SENT, 2)
    assert (password.status, password.attempts) == (Delivery.Status.SENT, 1)
    assert keystore.sealed_payload is None
    assert password.sealed_payload is None


def test_the_migration_marks_earlier_failures_reported(settings: Any) -> None:
    """Upgrading must not alert the helpdesk again of every failure it already knows."""
    import importlib

    from django.apps import apps

    copy = _failed_vendor_copy(settings)
    assert copy.failure_reported_at is None
    migration = importlib.import_module("mycert.migrations.0008_delivery_failure_reported")

    migration.mark_earlier_failures_reported(apps, None)

    copy.refresh_from_db()
    assert copy.failure_reported_at == copy.updated_at


def test_a_rewritten_address_breaks_the_seal_nothing_leaves(smtp_settings: TestSmtpServer) -> None:
    """Issue 20: a database writer redirects Dr X's keystore e-mail to its own address.

    The payload is sealed for the address the issuer verified; the worker refuses to
    send it anywhere else, even after the helpdesk's retry, and the failure is reported.
    """
    certificate = make_certificate()
    rows = create(certificate)
    keystore = rows["professional", "keystore"]
    Delivery.objects.filter(certificate=certificate).update(to_email="attacker@evil.example")
    now = timezone.now()

    outcome = delivery_send(delivery_id=keystore.pk, now=now)

    assert outcome.result is SendResult.FAILED
    keystore.refresh_from_db()
    assert "another address" in keystore.last_error
    delivery_retry(delivery_id=keystore.pk, actor="user:7")
    assert delivery_send(delivery_id=keystore.pk, now=now).result is SendResult.FAILED
    assert smtp_settings.messages == []
    assert delivery_failure_report(delivery_id=keystore.pk, now=now)
    alert = OperatorAlert.objects.get(kind="delivery_failed")
    assert "another address" in alert.body
    security = OperatorAlert.objects.get(kind="delivery_redirected")
    assert security.recipient == OperatorAlert.Recipient.SECURITY
    assert "attacker@evil.example" in security.body


def test_a_sealed_payload_copied_into_another_row_does_not_open_there() -> None:
    certificate = make_certificate()
    rows = create(certificate)
    sealed_for_dr_x = sealed(rows["professional", "keystore"])

    with pytest.raises(SealError):
        unseal(sealed_for_dr_x, recipient="attacker@evil.example")
    assert unseal(sealed_for_dr_x, recipient=certificate.professional.email.upper()) == KEYSTORE


# --- Rotating the outbox key with mail pending (issue 22) --------------------------------------


@pytest.fixture
def outbox_keys(settings: Any) -> Iterator[tuple[str, str]]:
    from cryptography.fernet import Fernet

    from mycert import sealing

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.MYCERT_OUTBOX_KEY = old
    sealing._fernet.cache_clear()
    yield old, new
    sealing._fernet.cache_clear()


def _use_keys(settings: Any, value: str) -> None:
    from mycert import sealing

    settings.MYCERT_OUTBOX_KEY = value
    sealing._fernet.cache_clear()


def test_the_outbox_key_rotates_with_mail_pending(
    settings: Any, smtp_settings: TestSmtpServer, outbox_keys: tuple[str, str]
) -> None:
    from cryptography.fernet import Fernet, InvalidToken
    from django.core.management import call_command

    from mycert import checks

    old, new = outbox_keys
    pending = create(make_certificate())  # sealed with the old key, not sent yet
    waiting = create(make_certificate())

    # Step 1: the new key first, the old one after it, on every worker.
    _use_keys(settings, f"{new}, {old}")
    assert checks.check_outbox_key() == []
    sealed_after = create(make_certificate())
    row = sealed_after["professional", "keystore"]
    # The first key seals (the plaintext starts with the address it is sealed for).
    assert Fernet(new.encode()).decrypt(sealed(row)).endswith(KEYSTORE)
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(sealed(row))
    # Mail sealed under the old key still goes out whole.
    now = timezone.now()
    for content in ("keystore", "password"):
        result = delivery_send(delivery_id=pending["professional", content].pk, now=now)
        assert result.result is SendResult.SENT
    keystore_mail, password_mail = smtp_settings.messages
    (attachment,) = attachments(keystore_mail.message)
    assert attachment.get_payload(decode=True) == KEYSTORE
    assert PASSWORD in text_of(password_mail.message)

    # Step 2: what still waits is sealed again with the new key; the old one can go.
    call_command("reseal_outbox")
    for delivery in waiting.values():
        delivery.refresh_from_db()
        Fernet(new.encode()).decrypt(sealed(delivery))
    _use_keys(settings, new)
    for content in ("keystore", "password"):
        result = delivery_send(delivery_id=waiting["professional", content].pk, now=now)
        assert result.result is SendResult.SENT
    assert len(smtp_settings.messages) == 4
    assert AuditEvent.objects.filter(action="outbox.resealed").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not-a-key", "MYCERT_OUTBOX_KEY is not a Fernet key"),
        ("{new},not-a-key", "MYCERT_OUTBOX_KEY's key n° 2 is not a Fernet key"),
        ("{new},{new}", "lists the same key twice"),
    ],
)
def test_check_names_the_bad_key_in_the_list(
    settings: Any, outbox_keys: tuple[str, str], value: str, message: str
) -> None:
    from mycert import checks

    _use_keys(settings, value.format(new=outbox_keys[1]))
    (error,) = checks.check_outbox_key()
    assert message in error.msg
