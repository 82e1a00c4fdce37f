"""Revoke without logging in (issue 23): the code of the password e-mail, and its page.

Issued through the real issuing task, sent to a real SMTP server, the vendor's copy
OpenPGP-encrypted with gpg and decrypted again: the code is read from the professional's
e-mail as its holder would read it, then typed into « Révoquer sans connexion ».
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import ScryptPasswordHasher
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mycert.models import AuditEvent, Certificate, CertificateRequest, Delivery, OperatorAlert
from mycert.ops import ratelimit
from mycert.outbox.content import password_payload_open
from mycert.pki import generate_revocation_code
from mycert.sealing import unseal
from mycert.services import revocation_codes
from mycert.services.revocation import certificate_revoke
from mycert.services.revocation_codes import CANDIDATES_MAX, revocation_code_hash
from mycert.services.vendors import vendor_add_confirmed
from mycert.views import revocation_code as views
from tests.factories import CertificateRequestFactory, VendorFactory
from tests.support.gpg import GpgKey, decrypt
from tests.support.smtp_server import TestSmtpServer

pytestmark = pytest.mark.django_db

CODE_PATTERN = re.compile(r"\b(?:[A-Za-z0-9]{5}-){4}[A-Za-z0-9]{5}\b")
START = "/revoke/"
CONFIRM = "/revoke/confirm/"
REFUSED = "do not match a certificate that can be revoked"


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


def html_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/html part")


@pytest.fixture
def tasks_eager() -> Iterator[None]:
    from config.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = previous


def _issue(**request: Any) -> Certificate:
    """Issue through the task, as a worker does (it also sends the e-mails it can)."""
    from mycert.tasks.issuance import issue_certificate

    certificate_request = CertificateRequestFactory.create(**request)
    issue_certificate.apply(args=(certificate_request.pk,), throw=True)
    return Certificate.objects.get(request=certificate_request)


def _issue_unsent(**request: Any) -> Certificate:
    """Issue through the service only: the e-mails wait in the outbox, sealed."""
    from mycert.services.issuance import request_issue

    certificate_request = CertificateRequestFactory.create(**request)
    outcome = request_issue(request_id=certificate_request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _code_of(certificate: Certificate) -> str:
    """The code sealed in the professional's password row (before it is sent and wiped)."""
    row = Delivery.objects.get(
        certificate=certificate,
        recipient=Delivery.Recipient.PROFESSIONAL,
        content=Delivery.Content.PASSWORD,
    )
    _password, code = password_payload_open(unseal(bytes(row.sealed_payload or b"")))
    assert code
    return code


@pytest.fixture
def issued(ca: Any) -> tuple[Certificate, str]:
    """A certificate whose e-mails wait in the outbox (nothing sent here), and its code."""
    certificate = _issue_unsent()
    return certificate, _code_of(certificate)


def _check(client: Client, identifier: str, code: str, **extra: Any) -> Any:
    return client.post(START, {"identifier": identifier, "code": code}, **extra)


def _revoke(client: Client, identifier: str, code: str, reason: str = "keyCompromise") -> Any:
    checked = _check(client, identifier, code)
    assert checked.status_code == 302, checked.content.decode()
    assert checked["Location"] == CONFIRM
    return client.post(CONFIRM, {"reason": reason, "confirm": "on"})


def _unrevoked(certificate: Certificate) -> None:
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    assert certificate.revocation_code_hash
    assert not AuditEvent.objects.filter(action="certificate.revoked").exists()


# --- The code: made at issuance, sealed in the professional's e-mail only, hashed -----------


def test_the_professional_gets_the_code_and_the_vendor_only_the_way_to_revoke(
    ca: Any,
    settings: Any,
    smtp_settings: TestSmtpServer,
    tasks_eager: None,
    vendor_key: GpgKey,
    mycert_gpg_home: Path,
) -> None:
    settings.LANGUAGE_CODE = "fr"
    # Added on the worker host: confirmed in its keyring, where copies may go.
    vendor = vendor_add_confirmed(
        name="Logiciel Santé SA",
        email=vendor_key.uid_address,
        pgp_key=vendor_key.public,
        actor="test",
        now=timezone.now(),
    )
    certificate = _issue(vendor=vendor, vendor_copy_consent=True)
    professional = certificate.professional

    keystore_mail, password_mail = (m.message for m in smtp_settings.to(professional.email))
    text = text_of(password_mail)
    (code,) = CODE_PATTERN.findall(text)
    assert "CODE DE RÉVOCATION" in text
    assert f"Numéro de série : {certificate.serial}" in text
    assert f"{settings.MYCERT_BASE_URL}/revoke/" in text
    assert "notez-le à part du keystore" in text
    assert code in html_of(password_mail)
    assert code not in text_of(keystore_mail)

    # The vendor's copies, decrypted: how the professional revokes, never the code.
    vendor_mails = [decrypt(vendor_key, m.message) for m in smtp_settings.to(vendor.email)]
    assert len(vendor_mails) == 2
    vendor_text = "\n".join(text_of(m) + html_of(m) for m in vendor_mails)
    assert not CODE_PATTERN.search(vendor_text)
    assert code not in vendor_text
    assert "sans se connecter, avec le code de révocation que lui seul a reçu" in vendor_text
    assert f"{settings.MYCERT_BASE_URL}/revoke/" in vendor_text

    # The row keeps a slow hash of it, never the code; the sealed payloads are wiped.
    certificate.refresh_from_db()
    assert certificate.revocation_code_hash.startswith("scrypt$")
    assert code not in certificate.revocation_code_hash
    assert ScryptPasswordHasher().verify(code, certificate.revocation_code_hash)
    assert not Delivery.objects.filter(
        certificate=certificate, sealed_payload__isnull=False
    ).exists()

    # And it revokes that certificate.
    response = _revoke(Client(), certificate.serial, code)
    assert response.status_code == 302
    certificate.refresh_from_db()
    assert certificate.revoked_via == Certificate.RevokedVia.CODE


@pytest.mark.parametrize(
    ("language", "words"),
    [("de", ("WIDERRUFSCODE", "Seriennummer:")), ("en", ("REVOCATION CODE", "Serial number:"))],
)
def test_the_code_in_german_and_english(
    ca: Any, smtp_settings: TestSmtpServer, tasks_eager: None, language: str, words: tuple[str, str]
) -> None:
    certificate = _issue(language=language)
    (_keystore, password_mail) = smtp_settings.to(certificate.professional.email)
    text = text_of(password_mail.message)
    assert len(CODE_PATTERN.findall(text)) == 1
    for word in words:
        assert word in text


def test_the_vendor_row_never_holds_the_code(issued: tuple[Certificate, str]) -> None:
    _first, code = issued
    certificate = _issue_unsent(vendor=VendorFactory.create())
    rows = Delivery.objects.filter(certificate=certificate)
    for row in rows.filter(content=Delivery.Content.PASSWORD):
        password, sealed_code = password_payload_open(unseal(bytes(row.sealed_payload or b"")))
        assert password
        if row.recipient == Delivery.Recipient.VENDOR:
            assert sealed_code == ""
        else:
            assert CODE_PATTERN.fullmatch(sealed_code)
    # Each certificate its own code.
    assert _code_of(certificate) != code


def test_a_password_row_sealed_before_codes_existed_still_sends(
    ca: Any, smtp_settings: TestSmtpServer, issued: tuple[Certificate, str]
) -> None:
    from mycert.outbox import deliveries_send
    from mycert.sealing import seal

    certificate, _code = issued
    rows = Delivery.objects.filter(certificate=certificate).order_by("pk")
    rows.filter(content=Delivery.Content.PASSWORD).update(sealed_payload=seal(b"Abcd-Efgh"))
    deliveries_send(delivery_ids=[row.pk for row in rows], now=timezone.now())
    (_keystore, password_mail) = smtp_settings.to(certificate.professional.email)
    text = text_of(password_mail.message)
    assert "Abcd-Efgh" in text
    assert not CODE_PATTERN.search(text)
    assert "CODE DE RÉVOCATION" not in text


def test_the_stored_hash_is_scrypt_with_interactive_parameters(settings: Any) -> None:
    settings.MYCERT_REVOCATION_CODE_SCRYPT_N = 2**14  # the default, not the tests' cheap one
    code = generate_revocation_code()
    encoded = revocation_code_hash(code)
    algorithm, n, salt, r, p, _digest = encoded.split("$")
    assert (algorithm, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(salt) >= 22
    assert code not in encoded
    assert revocation_code_hash(code) != encoded  # salted
    assert ScryptPasswordHasher().verify(code, encoded)


# --- The page: two steps -------------------------------------------------------------------


def test_the_first_step_asks_for_the_serial_and_the_code(client: Client) -> None:
    response = client.get(START, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    page = response.content.decode()
    assert '<h1 id="revoke-code-title">Revoke without logging in</h1>' in page
    assert 'name="identifier"' in page
    assert 'name="code"' in page
    assert 'autocomplete="off"' in page
    assert "csrfmiddlewaretoken" in page


@pytest.mark.parametrize(
    ("language", "title"),
    [("fr", "Révoquer sans connexion"), ("de", "Ohne Anmeldung widerrufen"), ("en", "Revoke without logging in")],
)  # fmt: skip
def test_the_page_is_linked_from_the_login_page_and_every_footer(
    client: Client, settings: Any, language: str, title: str
) -> None:
    home = client.get("/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert f'href="{START}"' in home  # under « Se connecter avec LuxTrust »
    # The footer's is absolute: the self-check's host serves no other MyCert page.
    footer = f'<a href="{settings.MYCERT_BASE_URL}{START}">{title}</a>'
    assert footer in home
    check_page = client.get("/check/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert footer in check_page
    page = client.get(START, HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert f"<title>{title}" in page


def test_the_holder_sees_whose_certificate_then_revokes_it(
    client: Client, issued: tuple[Certificate, str]
) -> None:
    certificate, code = issued
    professional = certificate.professional
    Delivery.objects.filter(certificate=certificate).update(
        status=Delivery.Status.SENT, sealed_payload=None
    )
    # Typed as people type: a prefix of the serial in capitals with colons, spaces.
    spelled = ":".join(re.findall("..", certificate.serial[:16].upper()))
    checked = _check(client, f"  serial={spelled} ", code.replace("-", " "))
    assert checked.status_code == 302
    assert checked["Location"] == CONFIRM

    confirm = client.get(CONFIRM, HTTP_ACCEPT_LANGUAGE="en")
    assert confirm.status_code == 200
    assert confirm["Cache-Control"].startswith("max-age=0")
    page = confirm.content.decode()
    assert professional.full_name in page
    assert professional.professional_id in page
    assert certificate.serial in page
    assert 'value="keyCompromise"' in page
    assert 'value="cessationOfOperation"' in page
    assert 'value="superseded"' not in page
    assert code not in page
    _unrevoked(certificate)

    done = client.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"})
    assert done.status_code == 302
    assert done["Location"] == "/revoke/done/"
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    assert certificate.revoked_via == Certificate.RevokedVia.CODE
    assert certificate.revoked_by is None
    assert certificate.revocation_code_hash == ""  # spent

    event = AuditEvent.objects.get(action="certificate.revoked", object_id=str(certificate.pk))
    assert event.details["via"] == "code"
    assert event.details["reason"] == "keyCompromise"
    # The notices, as for any revocation; a reported compromise alerts the helpdesk.
    notices = Delivery.objects.filter(
        certificate=certificate, content=Delivery.Content.REVOCATION_NOTICE
    )
    assert list(notices.values_list("recipient", flat=True)) == [Delivery.Recipient.PROFESSIONAL]
    assert OperatorAlert.objects.filter(kind="key_compromise_reported").count() == 1

    page = client.get(done["Location"], HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Certificate revoked" in page
    assert certificate.serial[:16] in page


def test_the_notices_go_to_the_professional_and_the_vendor(
    ca: Any,
    settings: Any,
    smtp_settings: TestSmtpServer,
    tasks_eager: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = False
    # A vendor without a key, its address confirmed on the worker host (add_vendor).
    vendor = vendor_add_confirmed(
        name="Éditeur sans clé", email="support@vendor.example.lu", actor="test", now=timezone.now()
    )
    certificate = _issue(vendor=vendor, vendor_copy_consent=True, language="en")
    professional = certificate.professional
    (_k, password_mail) = smtp_settings.to(professional.email)
    (code,) = CODE_PATTERN.findall(text_of(password_mail.message))
    sent_before = len(smtp_settings.messages)

    with django_capture_on_commit_callbacks(execute=True):
        response = _revoke(Client(), professional.professional_id, code, "cessationOfOperation")
    assert response.status_code == 302

    # The professional in their own language (French), the vendor in the request's.
    notices = smtp_settings.messages[sent_before:]
    (to_professional,) = [m for m in notices if professional.email in m.rcpt_tos]
    assert "avec son code de révocation, sur la page « Révoquer sans connexion »" in text_of(
        to_professional.message
    )
    (to_vendor,) = [m for m in notices if vendor.email in m.rcpt_tos]
    assert certificate.serial in text_of(to_vendor.message)
    assert "was revoked" in text_of(to_vendor.message)
    request = CertificateRequest.objects.get(pk=certificate.request_id)
    assert request.status == CertificateRequest.Status.SENT
    assert not OperatorAlert.objects.filter(kind="key_compromise_reported").exists()


def test_a_professional_identifier_finds_both_valid_certificates(
    ca: Any, issued: tuple[Certificate, str]
) -> None:
    older, older_code = issued
    Delivery.objects.update(status=Delivery.Status.SENT)
    CertificateRequest.objects.filter(pk=older.request_id).update(
        status=CertificateRequest.Status.SENT
    )
    newer = _issue_unsent(professional=older.professional)
    newer_code = _code_of(newer)

    # Lower case, and the older certificate's code: the older one is revoked, not the newer.
    response = _revoke(Client(), older.professional.professional_id.lower(), older_code)
    assert response.status_code == 302
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.revoked_via == Certificate.RevokedVia.CODE
    assert newer.revoked_at is None
    assert _revoke(Client(), newer.professional.professional_id, newer_code).status_code == 302
    newer.refresh_from_db()
    assert newer.revoked_via == Certificate.RevokedVia.CODE


# --- Refusals: one answer for all, and the same work ---------------------------------------


def _refusal_body(response: Any) -> str:
    """The page without what differs between any two renderings (CSRF token, the echo)."""
    page = response.content.decode()
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)
    return re.sub(r'name="identifier"([^>]*?)value="[^"]*"', r'name="identifier"\1', page)


def test_a_wrong_code_an_unknown_serial_and_another_certificates_code_read_the_same(
    client: Client, ca: Any, issued: tuple[Certificate, str]
) -> None:
    certificate, code = issued
    other_certificate = _issue_unsent()
    other_code = _code_of(other_certificate)
    attempts = {
        "wrong code": (certificate.serial, generate_revocation_code()),
        "unknown serial": ("1" * 40, code),
        "unknown identifier": ("LU-MED-999999999", code),
        "another certificate's code": (certificate.serial, other_code),
        "the code, another certificate's serial": (other_certificate.serial, code),
    }
    bodies = set()
    for identifier, typed in attempts.values():
        response = _check(client, identifier, typed, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400
        assert REFUSED in response.content.decode()
        assert typed not in response.content.decode()  # the code is never echoed
        bodies.add(_refusal_body(response))
    assert len(bodies) == 1
    _unrevoked(certificate)
    _unrevoked(other_certificate)
    assert client.get(CONFIRM)["Location"] == START  # nothing was checked


def test_a_used_code_is_refused(client: Client, issued: tuple[Certificate, str]) -> None:
    certificate, code = issued
    assert _revoke(client, certificate.serial, code).status_code == 302
    again = _check(Client(), certificate.serial, code, HTTP_ACCEPT_LANGUAGE="en")
    assert again.status_code == 400
    assert REFUSED in again.content.decode()
    assert AuditEvent.objects.filter(action="certificate.revoked").count() == 1


@pytest.mark.parametrize("how", ["helpdesk", "expired"])
def test_a_revoked_or_expired_certificates_code_is_refused(
    client: Client, issued: tuple[Certificate, str], how: str
) -> None:
    certificate, code = issued
    if how == "helpdesk":
        certificate_revoke(
            certificate_id=certificate.pk,
            reason=Certificate.RevocationReason.UNSPECIFIED,
            via=Certificate.RevokedVia.HELPDESK,
            actor=None,
            now=timezone.now(),
        )
    else:
        Certificate.objects.filter(pk=certificate.pk).update(not_after=timezone.now())
    response = _check(client, certificate.serial, code, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 400
    assert REFUSED in response.content.decode()


def test_a_certificate_revoked_between_the_two_steps_is_a_conflict(
    client: Client, issued: tuple[Certificate, str]
) -> None:
    certificate, code = issued
    assert _check(client, certificate.serial, code).status_code == 302
    certificate_revoke(
        certificate_id=certificate.pk,
        reason=Certificate.RevocationReason.UNSPECIFIED,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )
    response = client.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"})
    assert response.status_code == 409
    certificate.refresh_from_db()
    assert certificate.revoked_via == Certificate.RevokedVia.HELPDESK


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"identifier": "", "code": "x"}, "Enter the certificate&#x27;s serial number"),
        ({"identifier": "abc", "code": ""}, "Enter the revocation code"),
        ({"identifier": "abc", "code": "Abcd-Efgh-Jkmn-Pqrs-Tuvw-Xyz2"}, "five groups of five"),
        ({"identifier": "abc" * 100, "code": "x"}, "at most 200 characters"),
    ],
)
def test_bad_input_says_what_to_do(client: Client, data: dict[str, str], message: str) -> None:
    response = client.post(START, data, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_second_step_needs_a_fresh_check(
    client: Client, issued: tuple[Certificate, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, code = issued
    # Without the first step: back to it, nothing revoked.
    response = client.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"})
    assert response.status_code == 302
    assert response["Location"] == START
    # A check older than CONFIRM_SECONDS counts for nothing.
    assert _check(client, certificate.serial, code).status_code == 302
    later = views.clock() + views.CONFIRM_SECONDS + 1
    monkeypatch.setattr(views, "clock", lambda: later)
    response = client.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"})
    assert response["Location"] == START
    _unrevoked(certificate)


def test_the_second_step_refuses_bad_input_and_changes_nothing(
    client: Client, issued: tuple[Certificate, str]
) -> None:
    certificate, code = issued
    assert _check(client, certificate.serial, code).status_code == 302
    for data in ({"reason": "superseded", "confirm": "on"}, {"reason": "keyCompromise"}):
        response = client.post(CONFIRM, data, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400
    _unrevoked(certificate)


def test_a_checked_code_does_not_travel_to_another_session(
    client: Client, issued: tuple[Certificate, str]
) -> None:
    certificate, code = issued
    before = client.get(START).cookies  # a session cookie, if any, before the check
    assert _check(client, certificate.serial, code).status_code == 302
    assert client.cookies["sessionid"].value != getattr(before.get("sessionid"), "value", None)
    stranger = Client()
    assert stranger.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"}).status_code == 302
    _unrevoked(certificate)


def test_both_steps_need_the_csrf_token(issued: tuple[Certificate, str]) -> None:
    certificate, code = issued
    client = Client(enforce_csrf_checks=True)
    assert _check(client, certificate.serial, code).status_code == 403
    assert client.post(CONFIRM, {"reason": "keyCompromise", "confirm": "on"}).status_code == 403
    _unrevoked(certificate)


def test_every_attempt_costs_the_same_number_of_hashes(
    client: Client, issued: tuple[Certificate, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, code = issued
    counted: list[str] = []
    hasher = revocation_codes._CodeHasher
    original = hasher.encode

    def encode(self: ScryptPasswordHasher, password: str, salt: str, *args: Any) -> str:
        counted.append(salt)
        return original(self, password, salt, *args)

    monkeypatch.setattr(hasher, "encode", encode)
    cases = [
        ("unknown serial", "f" * 40, code),
        ("wrong code", certificate.serial, generate_revocation_code()),
        ("professional identifier", certificate.professional.professional_id, code),
        ("right code", certificate.serial, code),
    ]
    for _name, identifier, typed in cases:
        counted.clear()
        _check(Client(), identifier, typed)
        assert len(counted) == CANDIDATES_MAX, _name


# --- Brute force is throttled -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.value = 1_000_000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit, "now", clock)
    return clock


def test_an_address_is_throttled_even_with_the_right_code_then_free_again(
    settings: Any, issued: tuple[Certificate, str], clock: Clock
) -> None:
    settings.MYCERT_RATELIMIT_REVOCATION_CODE = "3/900"
    certificate, code = issued
    client = Client()
    for _ in range(3):
        assert _check(client, certificate.serial, generate_revocation_code()).status_code == 400
    throttled = _check(client, certificate.serial, code, HTTP_ACCEPT_LANGUAGE="en")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    page = throttled.content.decode()
    assert "Too many attempts" in page
    assert settings.MYCERT_HELPDESK_PHONE in page
    # Another identifier from the same address: still throttled (the address counts).
    assert _check(client, "LU-MED-1", code).status_code == 429
    _unrevoked(certificate)

    clock.value += 900
    assert _check(client, certificate.serial, code).status_code == 302


def test_a_certificate_is_throttled_whatever_the_address_and_spelling(
    settings: Any, issued: tuple[Certificate, str], clock: Clock
) -> None:
    settings.MYCERT_RATELIMIT_REVOCATION_CODE = "3/900"
    certificate, code = issued
    spellings = [
        certificate.serial,
        certificate.serial[:16],
        certificate.professional.professional_id,
    ]
    for number, identifier in enumerate(spellings):
        response = _check(
            Client(REMOTE_ADDR=f"192.0.2.{number + 1}"), identifier, generate_revocation_code()
        )
        assert response.status_code == 400
    assert _check(Client(REMOTE_ADDR="198.51.100.7"), certificate.serial, code).status_code == 429
    _unrevoked(certificate)


def test_an_unknown_serial_is_throttled_like_a_known_one(settings: Any, clock: Clock) -> None:
    settings.MYCERT_RATELIMIT_REVOCATION_CODE = "2/900"
    serial = "ab" * 20
    statuses = [
        _check(Client(REMOTE_ADDR=f"192.0.2.{n}"), serial, generate_revocation_code()).status_code
        for n in range(1, 4)
    ]
    assert statuses == [400, 400, 429]


# --- The code is nowhere in clear -----------------------------------------------------------


def _every_row() -> Iterator[str]:
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                yield " ".join(
                    bytes(value).hex() if isinstance(value, bytes | memoryview) else str(value)
                    for value in row
                )


def test_the_code_is_in_no_log_in_no_table_and_not_in_the_admin(
    ca: Any,
    settings: Any,
    smtp_settings: TestSmtpServer,
    tasks_eager: None,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    certificate = _issue()
    (_k, password_mail) = smtp_settings.to(certificate.professional.email)
    (code,) = CODE_PATTERN.findall(text_of(password_mail.message))
    forms = [code, code.replace("-", ""), code.encode().hex()]

    # The page, a refusal and the revocation, logged at DEBUG.
    client = Client()
    _check(client, certificate.serial, code[:-1] + ("A" if code[-1] != "A" else "B"))
    with django_capture_on_commit_callbacks(execute=True):
        assert _revoke(client, certificate.serial, code).status_code == 302

    # MyCert's and its libraries' records; not the test relay's (aiosmtpd logs each line
    # it receives at DEBUG: it stands for the professional's mailbox).
    logs = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name != "mail.log"
    )
    assert "revoked with its revocation code" in logs  # the scan saw the page's logs
    assert not any(form in logs for form in forms)

    # Every row of every table (SQLite or PostgreSQL), bytes as hex, everything else as text.
    dump = "\n".join(_every_row())
    assert certificate.fingerprint_sha256 in dump  # the scan reads the tables
    assert not any(form in dump or form.upper() in dump for form in forms)

    # The admin: neither the code nor its hash.
    admin_client = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin_client.force_login(User.objects.create_superuser("root", password=None))
    page = admin_client.get(
        reverse("admin:mycert_certificate_change", args=[certificate.pk])
    ).content.decode()
    assert "revoc" in page.lower()
    assert "scrypt$" not in page
    assert code not in page


def test_an_error_report_masks_the_code(rf: Any) -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.views.debug import SafeExceptionReporterFilter

    request = rf.post(START, {"identifier": "LU-MED-1", "code": "Abcde-Fghjk-Mnpqr-Stuvw-Xyz23"})
    request.session = SessionStore()
    request._dont_enforce_csrf_checks = True
    views.revoke_without_login(request)
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert shown["identifier"] == "LU-MED-1"
    assert shown["code"] != "Abcde-Fghjk-Mnpqr-Stuvw-Xyz23"
    assert set(shown["code"]) == {"*"}


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(identifier=st.text(max_size=60), code=st.text(max_size=60))
def test_any_text_is_a_clear_400_and_revokes_nothing(
    client: Client, settings: Any, issued: tuple[Certificate, str], identifier: str, code: str
) -> None:
    settings.MYCERT_RATELIMIT_ENABLED = False  # hostile input, not the limiter, is tested
    certificate, _code = issued
    response = _check(client, identifier, code)
    assert response.status_code == 400
    _unrevoked(certificate)


def test_an_error_while_checking_shows_no_code_in_the_report(
    issued: tuple[Certificate, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from django.views.debug import ExceptionReporter

    certificate, code = issued

    def broken(self: ScryptPasswordHasher, password: str, encoded: str) -> bool:
        # Django's own verify(password, encoded) frame would show the code as ``password``.
        raise RuntimeError("the hasher failed")

    monkeypatch.setattr(revocation_codes._CodeHasher, "verify", broken)
    try:
        revocation_codes.revocation_code_match(candidates=[certificate.pk], code=code)
    except RuntimeError:
        exc_type, exc, traceback = sys.exc_info()
    else:
        raise AssertionError("the broken hasher was not called")
    assert traceback is not None
    # From the service's frame on (this test's own frame holds the code, of course).
    frames = ExceptionReporter(None, exc_type, exc, traceback.tb_next).get_traceback_frames()
    variables = {
        (frame["function"], name): str(value) for frame in frames for name, value in frame["vars"]
    }
    assert variables[("revocation_code_match", "canonical")] == "*" * 20
    assert not [key for key, value in variables.items() if code in value]
