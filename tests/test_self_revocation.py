"""A professional revokes their own certificate from "My certificates"."""

from __future__ import annotations

import html
from email.message import Message
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert import custody
from mycert.models import AuditEvent, Certificate, Crl, Delivery, Professional
from mycert.services.issuance import request_issue
from mycert.services.revocation import certificate_revoke
from tests.factories import CertificateRequestFactory, ProfessionalFactory
from tests.support.smtp_server import TestSmtpServer

pytestmark = pytest.mark.django_db


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


def _issue(professional: Professional, *, keystore_sent: bool = True) -> Certificate:
    request = CertificateRequestFactory.create(professional=professional)
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    if keystore_sent:
        Delivery.objects.filter(
            certificate_id=outcome.certificate_id, content=Delivery.Content.KEYSTORE
        ).update(status=Delivery.Status.SENT, sealed_payload=None)
    return Certificate.objects.get(pk=outcome.certificate_id)


@pytest.fixture
def professional() -> Professional:
    return ProfessionalFactory.create(language="en")


@pytest.fixture
def certificate(ca: Any, professional: Professional) -> Certificate:
    return _issue(professional)


@pytest.fixture
def client_en(client: Client, professional: Professional) -> Client:
    client.force_login(professional.user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def url(certificate: Certificate) -> str:
    return reverse("revoke-certificate", args=[certificate.pk])


def unchanged(certificate: Certificate) -> None:
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoked").exists()
    assert not Delivery.objects.filter(content="revocation").exists()


def ocsp_status(client: Client, certificate: Certificate) -> ocsp.OCSPResponse:
    issuing = custody.ca_certificates_load().issuing
    leaf = x509.load_pem_x509_certificate(certificate.pem.encode())
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
    response = client.post(
        "/pki/ocsp/",
        request.public_bytes(serialization.Encoding.DER),
        content_type="application/ocsp-request",
    )
    assert response.status_code == 200
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return parsed


def test_my_certificates_offers_revocation(client_en: Client, certificate: Certificate) -> None:
    page = client_en.get(reverse("my-certificates")).content.decode()
    assert f'href="{url(certificate)}"' in page


def test_confirmation_page_explains_and_changes_nothing(
    client_en: Client, certificate: Certificate
) -> None:
    # Even with the form's fields in the query string, GET only asks.
    response = client_en.get(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    page = response.content.decode()
    assert certificate.serial in page
    assert 'value="keyCompromise"' in page
    assert 'value="cessationOfOperation"' in page
    assert 'value="superseded"' not in page
    assert 'name="confirm"' in page
    assert "csrfmiddlewaretoken" in page
    assert "CRL" in page
    assert "OCSP" in page
    assert "stops working with the services of the Agence eSanté" in page
    assert "new request" in page
    assert "Revoke this certificate" in page
    unchanged(certificate)


def test_post_revokes_publishes_and_tells(
    client_en: Client,
    certificate: Certificate,
    professional: Professional,
    eager_tasks: None,
    smtp_settings: TestSmtpServer,
    django_capture_on_commit_callbacks: Any,
) -> None:
    assert ocsp_status(client_en, certificate).certificate_status == ocsp.OCSPCertStatus.GOOD

    with django_capture_on_commit_callbacks(execute=True):
        response = client_en.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    assert response.status_code == 302
    assert response["Location"] == reverse("my-certificates")
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    assert certificate.revoked_via == Certificate.RevokedVia.PROFESSIONAL
    assert certificate.revoked_by == professional.user

    event = AuditEvent.objects.get(action="certificate.revoked", object_id=str(certificate.pk))
    assert event.actor == f"user:{professional.user.pk}"
    assert event.details["via"] == "professional"
    assert event.details["reason"] == "keyCompromise"

    # The CRL was re-signed on commit and lists it.
    crl = x509.load_der_x509_crl(bytes(Crl.objects.latest().der))
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    # OCSP answers from the database at once.
    answer = ocsp_status(client_en, certificate)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise

    # The notice went to the professional.
    (notice,) = smtp_settings.to(professional.email)
    assert "at your request" in text_of(notice.message)

    page = client_en.get(response["Location"]).content.decode()
    assert "Your certificate has been revoked." in page
    assert f'href="{url(certificate)}"' not in page


def test_no_longer_needed(client_en: Client, certificate: Certificate) -> None:
    response = client_en.post(url(certificate), {"reason": "cessationOfOperation", "confirm": "on"})
    assert response.status_code == 302
    certificate.refresh_from_db()
    assert certificate.revocation_reason == Certificate.RevocationReason.CESSATION_OF_OPERATION


@pytest.mark.parametrize(
    ("language", "label", "misread"),
    [
        ("fr", "certificat plus nécessaire", "cessation d'activité"),
        ("de", "Zertifikat nicht mehr benötigt", "Tätigkeit eingestellt"),
        ("en", "certificate no longer needed", "cessation of operation"),
    ],
)
def test_no_longer_needed_is_not_shown_as_having_stopped_practising(
    client_en: Client, certificate: Certificate, language: str, label: str, misread: str
) -> None:
    """RFC 5280's cessationOfOperation stays the code; the words say what was chosen
    (issue 23, point 5): « cessation d'activité » reads "stopped practising"."""
    client_en.post(url(certificate), {"reason": "cessationOfOperation", "confirm": "on"})
    certificate.refresh_from_db()
    assert certificate.revocation_reason == "cessationOfOperation"

    page = client_en.get(reverse("my-certificates"), HTTP_ACCEPT_LANGUAGE=language)
    shown = html.unescape(page.content.decode())
    assert label in shown
    assert misread not in shown


def test_another_professionals_certificate_is_not_found(
    client_en: Client, ca: Any, certificate: Certificate
) -> None:
    others = _issue(ProfessionalFactory.create())
    for response in (
        client_en.get(url(others)),
        client_en.post(url(others), {"reason": "keyCompromise", "confirm": "on"}),
        client_en.get(reverse("revoke-certificate", args=[others.pk + 1000])),
    ):
        assert response.status_code == 404
    unchanged(others)


def test_already_revoked_is_a_conflict(client_en: Client, certificate: Certificate) -> None:
    certificate_revoke(
        certificate_id=certificate.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )
    for response in (
        client_en.get(url(certificate)),
        client_en.post(url(certificate), {"reason": "cessationOfOperation", "confirm": "on"}),
    ):
        assert response.status_code == 409
        assert "This certificate is already revoked" in response.content.decode()
    certificate.refresh_from_db()
    assert certificate.revoked_via == Certificate.RevokedVia.HELPDESK
    assert AuditEvent.objects.filter(action="certificate.revoked").count() == 1


def test_expired_is_a_conflict(client_en: Client, certificate: Certificate) -> None:
    Certificate.objects.filter(pk=certificate.pk).update(not_after=timezone.now())
    response = client_en.get(url(certificate))
    assert response.status_code == 409
    assert "expired" in response.content.decode()


def test_missing_csrf_token_is_refused(
    ca: Any, professional: Professional, certificate: Certificate
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(professional.user)
    response = client.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})
    assert response.status_code == 403
    unchanged(certificate)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reason": "superseded", "confirm": "on"}, "Choose one of the two reasons shown."),
        ({"reason": "bogus", "confirm": "on"}, "Choose one of the two reasons shown."),
        ({"confirm": "on"}, "Choose why you revoke the certificate."),
        ({"reason": "keyCompromise"}, "Tick the box to confirm"),
    ],
)
def test_bad_input_is_refused(
    client_en: Client, certificate: Certificate, data: dict[str, str], message: str
) -> None:
    response = client_en.post(url(certificate), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    unchanged(certificate)


def test_anonymous_is_sent_to_login(client: Client, certificate: Certificate) -> None:
    response = client.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("oidc-login"))
    unchanged(certificate)


def test_french_confirmation_page(
    client: Client, professional: Professional, certificate: Certificate
) -> None:
    client.force_login(professional.user)
    page = client.get(url(certificate)).content.decode()
    assert 'lang="fr"' in page
    assert "Révoquer ce certificat" in page


# --- Issue 12 and 13: revocation and the outbox agree; a broker down is no error page ------


def test_nothing_is_offered_before_the_keystore_is_sent(
    client_en: Client, professional: Professional, ca: Any
) -> None:
    """Self-revocation waits for the keystore e-mail: before it, the outbox owns the rows."""
    certificate = _issue(professional, keystore_sent=False)

    page = client_en.get(reverse("my-certificates")).content.decode()
    assert url(certificate) not in page
    response = client_en.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    assert response.status_code == 409
    assert "still being sent" in response.content.decode()
    unchanged(certificate)


def test_revoking_cancels_the_unsent_password_and_wipes_it(
    client_en: Client, certificate: Certificate, django_capture_on_commit_callbacks: Any
) -> None:
    password = Delivery.objects.get(certificate=certificate, content=Delivery.Content.PASSWORD)
    assert password.status == Delivery.Status.PENDING

    with django_capture_on_commit_callbacks(execute=False):
        response = client_en.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    assert response.status_code == 302
    password.refresh_from_db()
    assert password.status == Delivery.Status.CANCELLED
    assert password.sealed_payload is None
    certificate.request.refresh_from_db()
    assert not certificate.request.is_in_progress, "the professional may request again"


def test_a_reported_key_compromise_tells_the_helpdesk(
    client_en: Client, certificate: Certificate, django_capture_on_commit_callbacks: Any
) -> None:
    from mycert.models import OperatorAlert

    with django_capture_on_commit_callbacks(execute=False):
        client_en.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    (alert,) = OperatorAlert.objects.filter(kind="key_compromise_reported")
    assert alert.recipient == OperatorAlert.Recipient.HELPDESK
    assert certificate.professional.professional_id in alert.body
    assert "compromission" in alert.body


def test_another_reason_raises_no_alert(
    client_en: Client, certificate: Certificate, django_capture_on_commit_callbacks: Any
) -> None:
    from mycert.models import OperatorAlert

    with django_capture_on_commit_callbacks(execute=False):
        client_en.post(url(certificate), {"reason": "cessationOfOperation", "confirm": "on"})

    assert not OperatorAlert.objects.filter(kind="key_compromise_reported").exists()


def test_a_broker_down_after_the_revocation_is_no_error_page(
    client_en: Client,
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The revocation committed; the CRL waits for the hourly beat, not for a 500."""
    from kombu.exceptions import OperationalError as BrokerDown

    from mycert.tasks.alerts import send_operator_alert
    from mycert.tasks.publication import publish_crl

    def broker_down(*args: object, **kwargs: object) -> None:
        raise BrokerDown("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(publish_crl, "delay", broker_down)
    monkeypatch.setattr(send_operator_alert, "delay", broker_down)
    crls_before = Crl.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_en.post(url(certificate), {"reason": "keyCompromise", "confirm": "on"})

    assert response.status_code == 302
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert Crl.objects.count() == crls_before, "no CRL yet: the broker is down"
    # What beat's hourly run does: the revoked certificate is listed.
    from mycert.services.publication import crl_publish

    crl_publish(now=timezone.now())
    crl = x509.load_der_x509_crl(bytes(Crl.objects.latest().der))
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
