"""Issue 20, attack 3, on PostgreSQL with a real worker: a database writer redirects the
vendor copies.

The vendor was added on the worker host (``add_vendor``): its address and key are in
the worker's keyring and anchor. Then someone who can write to the database, and
nothing else, swaps the vendor's e-mail address and OpenPGP key (and fingerprint) in
its row, with plain SQL. A professional who chose that vendor submits a request. The
worker issues the certificate and sends the professional's two e-mails; the vendor
copy never leaves for the attacker's address: it ends ``failed`` with the reason, and
the security officer (``MYCERT_SECURITY_EMAIL``) receives the alert.
"""

from __future__ import annotations

from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from mycert.mail.gpg import openpgp
from mycert.models import AuditEvent, CertificateRequest, Delivery
from tests.factories import ConfirmedVendorFactory
from tests.support.gpg import GpgKey
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import WorkerProcess, fast_fault_env, submit_batch, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ATTACKER = "copies@attacker.example"


def subject(message: Any) -> str:
    return str(make_header(decode_header(str(message.get("Subject", "")))))


def test_a_database_writer_cannot_redirect_vendor_copies(
    settings: Any,
    ca: Any,
    smtp_process: SmtpProcess,
    vendor_key: GpgKey,
    key_factory: Any,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    settings.EMAIL_HOST, settings.EMAIL_PORT = smtp_process.host, smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    vendor = ConfirmedVendorFactory.create(key=vendor_key)  # add_vendor on the worker host
    attacker: GpgKey = key_factory(f"Logiciel Médical SA <{ATTACKER}>")
    # The database writer: one UPDATE, no service, no audit event, no alert.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mycert_vendor SET email = %s, pgp_public_key = %s, pgp_fingerprint = %s "
            "WHERE id = %s",
            [ATTACKER, attacker.public, attacker.fingerprint, vendor.pk],
        )
    (request_id,) = submit_batch(1, vendor=vendor, with_vendor_every=1)

    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    security = str(django_settings.MYCERT_SECURITY_EMAIL)

    def to(address: str) -> list[Any]:
        return [m for m in smtp_process.messages() if address in str(m.get("To", ""))]

    def done() -> bool:
        request = CertificateRequest.objects.get(pk=request_id)
        refused = Delivery.objects.filter(
            certificate__request_id=request_id, recipient="vendor", status="failed"
        ).exists()
        alerted = any("refusée" in subject(m) for m in to(security))
        return request.status == CertificateRequest.Status.SENT and refused and alerted

    try:
        wait_until(done, timeout=120, interval=0.5, what="the request sent and the refusal alerted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()[-6000:]}") from exc
    finally:
        workers.stop_all()

    request = CertificateRequest.objects.get(pk=request_id)
    professional_email = request.professional.email
    copy = Delivery.objects.get(
        certificate__request_id=request_id, recipient="vendor", content="keystore"
    )
    password_copy = Delivery.objects.get(
        certificate__request_id=request_id, recipient="vendor", content="password"
    )
    # Nothing went to the attacker, encrypted or not; the professional got both e-mails.
    assert to(ATTACKER) == []
    assert len(to(professional_email)) == 2
    assert copy.status == Delivery.Status.FAILED
    assert copy.recipient_refused
    assert "not the address confirmed for vendor" in copy.last_error
    assert password_copy.status == Delivery.Status.FAILED, "refused with its keystore copy"
    assert password_copy.recipient_refused
    # The security officer is told where the row wanted the copy to go.
    (alert,) = [m for m in to(security) if "refusée" in subject(m)]
    body = alert.get_payload(decode=True).decode()
    assert ATTACKER in body
    assert attacker.fingerprint in body
    assert f"confirm_vendor {vendor.pk}" in body
    # The attacker's key never entered the worker's keyring; the log line says it too.
    assert openpgp().key_in_keyring(attacker.fingerprint, now=timezone.now()) is None
    assert f"delivery {copy.pk} REFUSED" in workers.logs()
    failed = AuditEvent.objects.get(action="delivery.failed", object_id=str(copy.pk))
    assert failed.details["recipient_refused"] is True
