"""The self-check's verdicts, its header trust, audit and rate limit (issue #15).

Behind nginx (tests/integration/test_selfcheck_nginx.py) the header is nginx's
``$ssl_client_escaped_cert``; here the test client sends the same URL-escaped PEM from
the loopback address nginx would use, or from elsewhere to forge it.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.mail import EmailMultiAlternatives
from django.test import Client
from django.utils import timezone

from mycert.mail.messages import CertificateFacts, Envelope, keystore_message
from mycert.models import AuditEvent
from mycert.services.revocation import certificate_revoke
from tests.support import keystores

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _check_host(settings: Any) -> None:
    """The test client's requests come to the self-check's host ("testserver")."""
    settings.MYCERT_CHECK_BASE_URL = "https://testserver"


def _header(certificate: x509.Certificate) -> dict[str, Any]:
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return {"HTTP_X_MYCERT_CLIENT_CERT": quote(pem, safe="")}


def _status(certificate: x509.Certificate | None, **extra: Any) -> dict[str, Any]:
    headers = _header(certificate) if certificate is not None else {}
    response = Client().get("/check/status.json", **headers, **extra)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return dict(response.json())


def test_a_valid_certificate_is_ok_with_the_fields_the_issue_lists(ca: Any) -> None:
    issued = keystores.issue(professional_id="LU-MED-424242")
    assert issued.record is not None
    body = _status(issued.certificate)
    assert body == {
        "status": "ok",
        "serial": issued.record.serial,
        "professional_id": "LU-MED-424242",
        "not_after": issued.record.not_after.isoformat(),
        "revoked_at": None,
        "reason": None,
    }


def test_the_page_names_the_holder_and_says_not_revoked_in_french(ca: Any) -> None:
    issued = keystores.issue(given_name="Léa", family_name="Schmit", professional_id="LU-1")
    assert issued.record is not None
    page = Client().get("/check/", **_header(issued.certificate), HTTP_ACCEPT_LANGUAGE="fr")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Léa Schmit" in text
    assert "LU-1" in text
    assert issued.record.serial in text
    assert "valable jusqu’au" in text or "valable jusqu'au" in text
    assert "non révoqué" in text


def test_no_certificate_explains_how_to_import_the_keystore(ca: Any) -> None:
    assert _status(None)["status"] == "no_certificate"
    text = Client().get("/check/", HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert 'data-status="no_certificate"' in text
    assert "Firefox" in text
    assert "certmgr.msc" in text
    assert "Schlüsselbund" in text


def test_a_forged_header_from_outside_the_proxy_is_ignored(ca: Any) -> None:
    issued = keystores.issue()
    body = _status(issued.certificate, REMOTE_ADDR="203.0.113.7")
    assert body["status"] == "no_certificate"
    assert body["serial"] is None


def test_a_header_sent_to_another_host_name_is_ignored(ca: Any, settings: Any) -> None:
    """The main site's nginx runs on a trusted address too: a header sent through it, to
    the main host name, is not the self-check's nginx speaking (issue 21 §4)."""
    issued = keystores.issue()
    settings.MYCERT_CHECK_BASE_URL = "https://check.mycert.example"
    settings.ALLOWED_HOSTS = ["mycert.example", "check.mycert.example"]
    main = _status(issued.certificate, HTTP_HOST="mycert.example")
    assert main["status"] == "no_certificate"
    assert main["serial"] is None
    assert _status(issued.certificate, HTTP_HOST="check.mycert.example")["status"] == "ok"
    # nginx's $host carries no port; a port, when given, must be the check's.
    assert _status(issued.certificate, HTTP_HOST="check.mycert.example:443")["status"] == "ok"
    wrong_port = _status(issued.certificate, HTTP_HOST="check.mycert.example:8000")
    assert wrong_port["status"] == "no_certificate"
    settings.MYCERT_CHECK_BASE_URL = "https://check.mycert.example:8443"
    assert _status(issued.certificate, HTTP_HOST="check.mycert.example:8443")["status"] == "ok"
    assert _status(issued.certificate, HTTP_HOST="check.mycert.example:443")["status"] == (
        "no_certificate"
    )


def test_without_a_check_host_no_header_is_believed(ca: Any, settings: Any) -> None:
    issued = keystores.issue()
    settings.MYCERT_CHECK_BASE_URL = ""
    assert _status(issued.certificate)["status"] == "no_certificate"


def test_the_trusted_proxy_addresses_are_a_setting(ca: Any, settings: Any) -> None:
    issued = keystores.issue()
    settings.MYCERT_CHECK_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert _status(issued.certificate)["status"] == "no_certificate"  # 127.0.0.1 no more
    assert _status(issued.certificate, REMOTE_ADDR="10.1.2.3")["status"] == "ok"


def test_a_revoked_certificate_says_when_and_why(ca: Any) -> None:
    issued = keystores.issue()
    assert issued.record is not None
    revoked_at = timezone.now()
    certificate_revoke(
        certificate_id=issued.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=revoked_at,
    )
    body = _status(issued.certificate)
    assert body["status"] == "revoked"
    assert body["reason"] == "keyCompromise"
    assert body["revoked_at"] == revoked_at.isoformat()
    text = Client().get("/check/", **_header(issued.certificate), HTTP_ACCEPT_LANGUAGE="en")
    assert "was revoked on" in text.content.decode()
    assert "key compromise" in text.content.decode()


def test_a_superseded_certificate_says_to_install_the_newer_one(ca: Any) -> None:
    issued = keystores.issue()
    assert issued.record is not None
    certificate_revoke(
        certificate_id=issued.record.pk,
        reason="superseded",
        via="superseded",
        actor=None,
        now=timezone.now(),
    )
    assert _status(issued.certificate)["reason"] == "superseded"
    text = Client().get("/check/", **_header(issued.certificate), HTTP_ACCEPT_LANGUAGE="fr")
    assert "remplacé par un plus récent" in text.content.decode()


def test_an_expired_certificate_is_expired(ca: Any) -> None:
    stale = keystores.expired(keystores.issue())
    body = _status(stale.certificate)
    assert body["status"] == "expired"
    assert body["not_after"] == stale.certificate.not_valid_after_utc.isoformat()


def test_a_certificate_not_yet_valid_is_named_so(ca: Any) -> None:
    now = timezone.now()
    early = keystores.variant(
        keystores.issue(), not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
    )
    assert _status(early.certificate)["status"] == "not_yet_valid"


def test_a_certificate_without_client_auth_is_wrong_usage(ca: Any) -> None:
    server = keystores.variant(keystores.issue(), server_auth_only=True)
    assert _status(server.certificate)["status"] == "wrong_usage"


def test_another_cas_certificate_is_unknown_issuer_and_its_claims_are_not_echoed(
    ca: Any,
) -> None:
    other, _ = keystores.foreign()
    body = _status(other.certificate)
    assert body["status"] == "unknown_issuer"
    assert body["professional_id"] is None  # its subject says LU-MED-999999: not believed


def test_a_certificate_signed_by_mycert_but_unknown_to_its_database_is_never_ok(
    ca: Any,
) -> None:
    orphan = keystores.variant(keystores.issue(), record=False)
    assert _status(orphan.certificate)["status"] == "unknown_issuer"


def test_a_header_that_is_not_a_certificate_is_a_clear_answer_not_a_500(ca: Any) -> None:
    response = Client().get("/check/status.json", HTTP_X_MYCERT_CLIENT_CERT="not%20a%20cert")
    assert response.status_code == 200
    assert response.json()["status"] == "unknown_issuer"


def test_each_check_is_audited_with_serial_and_result_only(ca: Any) -> None:
    issued = keystores.issue()
    assert issued.record is not None
    before = AuditEvent.objects.count()
    _status(issued.certificate)
    _status(None)
    events = list(AuditEvent.objects.order_by("pk")[before:])
    assert [e.action for e in events] == ["selfcheck.checked", "selfcheck.checked"]
    assert events[0].details == {"serial": issued.record.serial, "result": "ok"}
    assert events[0].object_id == str(issued.record.pk)
    assert events[1].details == {"serial": None, "result": "no_certificate"}


def test_checks_are_rate_limited(ca: Any, settings: Any) -> None:
    settings.MYCERT_RATELIMIT_CHECK = "2/300"
    client = Client()
    assert client.get("/check/status.json").status_code == 200
    assert client.get("/check/").status_code == 200
    refused = client.get("/check/status.json")
    assert refused.status_code == 429
    assert refused["Retry-After"]


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("fr", "Vérifiez que votre certificat fonctionne : https://check.example.lu/"),
        ("de", "Prüfen Sie, ob Ihr Zertifikat funktioniert: https://check.example.lu/"),
        ("en", "Check that your certificate works: https://check.example.lu/"),
    ],
)
def test_the_keystore_email_points_to_the_self_check(
    settings: Any, language: str, words: str
) -> None:
    facts = CertificateFacts(
        serial="ab" * 20,
        professional_name="Anne Muller",
        professional_id="LU-MED-1",
        not_after=timezone.now(),
    )
    envelope = Envelope(to="anne@example.lu", message_id="<1@x>", language=language)
    settings.MYCERT_CHECK_BASE_URL = ""
    without = keystore_message(envelope=envelope, facts=facts, keystore=b"p12")
    assert "check.example.lu" not in str(without.message())
    settings.MYCERT_CHECK_BASE_URL = "https://check.example.lu"
    message = keystore_message(envelope=envelope, facts=facts, keystore=b"p12")
    assert words in str(message.body)
    assert isinstance(message, EmailMultiAlternatives)
    html = [content for content, mimetype in message.alternatives if mimetype == "text/html"]
    assert 'href="https://check.example.lu/"' in str(html[0])


def test_my_certificates_points_to_the_self_check(ca: Any, settings: Any) -> None:
    issued = keystores.issue()
    assert issued.record is not None
    client = Client(HTTP_ACCEPT_LANGUAGE="fr")
    client.force_login(issued.record.professional.user)
    settings.MYCERT_CHECK_BASE_URL = "https://check.example.lu"
    page = client.get("/certificates/").content.decode()
    assert "Vérifiez que votre certificat fonctionne" in page
    assert 'href="https://check.example.lu/"' in page
    settings.MYCERT_CHECK_BASE_URL = ""
    assert "Vérifiez" not in client.get("/certificates/").content.decode()


def test_the_check_host_is_allowed_and_a_trusted_origin(tmp_path: Path) -> None:
    from tests.test_deploy import SETUP, _production_env

    env = _production_env(tmp_path, MYCERT_CHECK_BASE_URL="https://check.mycert.esante.lu/")
    shown = subprocess.run(
        [sys.executable, "-c", SETUP + "print(s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "'check.mycert.esante.lu'" in shown
    assert "'https://check.mycert.esante.lu'" in shown
