"""Issue 20, attack 1, on real parts: a database writer cannot issue in someone's name.

PostgreSQL, Redis, a real Celery worker, the OpenID provider (``oidc-provider-mock``)
and an SMTP server in their own processes. Dr X logs in and gets her certificate. Then
the test plays someone who can write to the database (a compromised web host: database
and broker access, no key): it changes Dr X's e-mail to its own and inserts request rows
in her name, without a token, with another professional's token, and with Dr X's own
token replayed, and queues their issuance as the web would. Each request ends
« failed », "unproven"; no key, no certificate, no mail to the attacker; the security
officer gets an alert by e-mail for each.
"""

from __future__ import annotations

from email.header import decode_header, make_header
from email.message import Message

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert.business_days import add_business_days
from mycert.models import Certificate, CertificateRequest, Delivery, Professional
from mycert.tasks.issuance import issue_certificate
from mycert.views.auth import ID_TOKEN_SESSION_KEY
from tests.support.oidc_provider import login_professional, professional_claims
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DR_X_EMAIL = "dr.x@cabinet.lu"
ATTACKER_EMAIL = "attacker@evil.example"


@pytest.fixture
def worker(oidc_settings, settings, ca, smtp_process: SmtpProcess, worker_env, tmp_path):
    """One worker that trusts the OpenID provider's keys and sends to the SMTP process."""
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    worker_env["EMAIL_URL"] = f"smtp://{smtp_process.host}:{smtp_process.port}"
    # worker_env copied the settings before oidc_settings could matter: be explicit.
    worker_env["OIDC_ISSUER"] = oidc_settings.issuer
    worker_env["OIDC_CLIENT_ID"] = settings.OIDC_CLIENT_ID
    # Long enough for the test to rewrite a row between a refused e-mail and its retry.
    worker_env["MYCERT_DELIVERY_BACKOFF_SECONDS"] = "8"
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        yield workers
    finally:
        workers.stop_all()


def _to(messages: list[Message], address: str) -> list[Message]:
    return [m for m in messages if address in str(m.get("To", ""))]


def _login(oidc_settings, sub: str, **claims: str) -> Client:
    client = Client()
    response = login_professional(client, oidc_settings, sub, professional_claims(**claims))
    assert response.status_code == 302
    return client


def _insert_request(professional: Professional, *, id_token: str) -> int:
    """What a database writer does: a request row, then the task the web would queue."""
    now = timezone.now()
    row = CertificateRequest.objects.create(
        professional=professional,
        key_type=settings.MYCERT_CERT_KEY_TYPE,
        language="fr",
        terms_version=settings.MYCERT_TERMS_VERSION,
        terms_accepted_at=now,
        due_at=add_business_days(now, 5),
        id_token=id_token,
    )
    issue_certificate.delay(row.pk)
    return row.pk


def _ended(request_id: int) -> bool:
    return CertificateRequest.objects.get(pk=request_id).status in ("failed", "sent")


@pytest.fixture
def dr_x_served(worker: WorkerProcess, oidc_settings, smtp_process: SmtpProcess) -> str:
    """Dr X logged in, asked, got her certificate; yields her session's ID token."""
    client = _login(
        oidc_settings,
        "dr-x",
        professional_id="LU-DR-X",
        email=DR_X_EMAIL,
        given_name="Xavière",
        family_name="Exemple",
    )
    token = client.session[ID_TOKEN_SESSION_KEY]
    response = client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 302
    request = CertificateRequest.objects.get()
    try:
        wait_until(lambda: _ended(request.pk), timeout=90, what="Dr X's request to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{worker.logs()[-6000:]}") from exc
    assert CertificateRequest.objects.get(pk=request.pk).status == "sent"
    wait_until(
        lambda: len(_to(smtp_process.messages(), DR_X_EMAIL)) == 2,
        timeout=60,
        what="Dr X's two e-mails",
    )
    return token


def test_a_database_writer_cannot_issue_in_dr_xs_name(
    dr_x_served: str, worker: WorkerProcess, oidc_settings, smtp_process: SmtpProcess
) -> None:
    dr_x = Professional.objects.get(oidc_subject="dr-x")
    # The attacker is a professional too, with a LuxTrust login of their own.
    attacker_client = _login(
        oidc_settings, "mallory", professional_id="LU-MALLORY", email=ATTACKER_EMAIL
    )
    attacker_token = attacker_client.session[ID_TOKEN_SESSION_KEY]

    # Dr X's e-mail is now the attacker's, in every row a web host can write.
    Professional.objects.filter(pk=dr_x.pk).update(email=ATTACKER_EMAIL)
    dr_x.user.__class__.objects.filter(pk=dr_x.user_id).update(email=ATTACKER_EMAIL)

    attempts = {
        "missing": "",  # a request row without a token
        "another professional's login": attacker_token,  # the attacker's own login
        "login already used": dr_x_served,  # Dr X's token, read from her session, replayed
    }
    ended: dict[int, str] = {}
    for check, token in attempts.items():
        request_id = _insert_request(dr_x, id_token=token)
        try:
            wait_until(
                lambda request_id=request_id: _ended(request_id),
                timeout=60,
                what=f"the {check!r} request",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{worker.logs()[-6000:]}") from exc
        ended[request_id] = check

    for request_id, check in ended.items():
        request = CertificateRequest.objects.get(pk=request_id)
        assert request.status == "failed", check
        assert request.last_error == f"unproven: {check}"
        assert request.id_token == ""
        assert not Certificate.objects.filter(request_id=request_id).exists()
    assert Certificate.objects.filter(professional=dr_x).count() == 1

    # The security officer is told of each, by e-mail, by the worker.
    wait_until(
        lambda: len(_to(smtp_process.messages(), settings.MYCERT_SECURITY_EMAIL)) >= 3,
        timeout=60,
        what="three security alerts",
    )
    alerts = _to(smtp_process.messages(), settings.MYCERT_SECURITY_EMAIL)
    subjects = " ".join(str(make_header(decode_header(str(m["Subject"])))) for m in alerts)
    for request_id in ended:
        assert f"n° {request_id}" in subjects
    # And nothing ever went to the attacker's address.
    assert _to(smtp_process.messages(), ATTACKER_EMAIL) == []


def test_a_database_writer_cannot_redirect_dr_xs_keystore(
    worker: WorkerProcess, oidc_settings, smtp_process: SmtpProcess
) -> None:
    """Her keystore e-mail waits for a retry (the relay said 451); its row is rewritten."""
    smtp_process.stop()
    smtp_process.start(fail_next=1, fail_code=451)
    client = _login(
        oidc_settings, "dr-x", professional_id="LU-DR-X", email=DR_X_EMAIL, family_name="Exemple"
    )
    response = client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 302

    def keystore_row() -> Delivery | None:
        return Delivery.objects.filter(
            recipient=Delivery.Recipient.PROFESSIONAL, content=Delivery.Content.KEYSTORE
        ).first()

    try:
        wait_until(
            lambda: (row := keystore_row()) is not None and row.status == "retrying",
            timeout=90,
            interval=0.05,
            what="the keystore e-mail to wait for its retry",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{worker.logs()[-6000:]}") from exc
    Delivery.objects.filter(recipient=Delivery.Recipient.PROFESSIONAL).update(
        to_email=ATTACKER_EMAIL
    )

    wait_until(
        lambda: (row := keystore_row()) is not None and row.status == "failed",
        timeout=60,
        what="the redirected keystore e-mail to fail",
    )
    row = keystore_row()
    assert row is not None
    assert "sealed for another address" in row.last_error
    wait_until(
        lambda: any(
            "détourné" in str(make_header(decode_header(str(m["Subject"]))))
            for m in _to(smtp_process.messages(), settings.MYCERT_SECURITY_EMAIL)
        ),
        timeout=60,
        what="the security officer's alert",
    )
    assert _to(smtp_process.messages(), ATTACKER_EMAIL) == []
