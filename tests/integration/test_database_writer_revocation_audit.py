"""Issue 20, attacks 2 and 4: a database writer against real workers, on PostgreSQL.

The test process plays the attacker with the database superuser's connection (it can
switch triggers off), a real Celery worker plays the CA's worker (its own high-water
mark, its own head file), and a real SMTP server receives the security officer's alerts.
"""

from __future__ import annotations

import json
import secrets
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from mycert.models import AuditEvent, Certificate, Crl, OcspResponse
from mycert.services.audit import GENESIS_HASH, audit_record, audit_verify_chain, event_hash
from mycert.services.issuance import request_issue
from mycert.services.revocation import certificate_revoke
from mycert.tasks.audit import export_audit_head
from mycert.tasks.publication import publish_crl, refresh_ocsp_responses
from tests.factories import CertificateRequestFactory, VendorFactory
from tests.support.smtp_server import TestSmtpServer
from tests.support.worker import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _security_mail(smtp: TestSmtpServer, subject: str) -> bool:
    return any(
        subject in str(make_header(decode_header(str(message.message["Subject"]))))
        for message in smtp.to(settings.MYCERT_SECURITY_EMAIL)
    )


def _crls() -> int:
    return Crl.objects.count()


def _stored_answer(certificate_id: int) -> ocsp.OCSPResponse:
    der = OcspResponse.objects.values_list("der_sha256", flat=True).get(
        certificate_id=certificate_id
    )
    return ocsp.load_der_ocsp_response(bytes(der))


def test_a_database_writer_cannot_undo_a_revocation(
    smtp_settings: TestSmtpServer, ca: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        request = CertificateRequestFactory.create()
        certificate_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
        assert certificate_id is not None
        record = Certificate.objects.get(pk=certificate_id)
        good_answer = bytes(
            OcspResponse.objects.values_list("der_sha256", flat=True).get(pk=certificate_id)
        )
        publish_crl.delay()
        wait_until(lambda: _crls() == 1, timeout=60, what="the first CRL")

        # The helpdesk revokes; the worker signs the revoked answer and the next CRL.
        certificate_revoke(
            certificate_id=certificate_id,
            reason=Certificate.RevocationReason.KEY_COMPROMISE,
            via=Certificate.RevokedVia.HELPDESK,
            actor=None,
            now=timezone.now(),
        )
        wait_until(lambda: _crls() == 2, timeout=60, what="the revocation's CRL")
        wait_until(
            lambda: (
                _stored_answer(certificate_id).certificate_status is ocsp.OCSPCertStatus.REVOKED
            ),
            timeout=60,
            what="the revoked answer",
        )

        # The web role's way is shut: PostgreSQL's trigger refuses to clear it.
        with pytest.raises(IntegrityError, match="one-way"), transaction.atomic():
            Certificate.objects.filter(pk=certificate_id).update(revoked_at=None)

        # A superuser switches triggers off, clears the revocation, puts back the old
        # "good" answer and makes it look due for beat's refresh.
        attack_at = timezone.now()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                "UPDATE mycert_certificate SET revoked_at = NULL, revocation_reason = '', "
                "revoked_via = '' WHERE id = %s",
                [certificate_id],
            )
            cursor.execute(
                "UPDATE mycert_ocspresponse SET status = 'good', der_sha1 = %s, der_sha256 = %s, "
                "this_update = now() - interval '1 day' WHERE certificate_id = %s",
                [good_answer, good_answer, certificate_id],
            )

        refresh_ocsp_responses.delay()  # beat, every 5 minutes
        publish_crl.delay()  # beat, hourly

        wait_until(lambda: _crls() == 3, timeout=60, what="the next CRL")
        latest = Crl.objects.order_by("-number").first()
        assert latest is not None
        listed = x509.load_der_x509_crl(bytes(latest.der))
        assert listed.get_revoked_certificate_by_serial_number(record.serial_number) is not None

        wait_until(
            lambda: (
                _stored_answer(certificate_id).this_update_utc >= attack_at.replace(microsecond=0)
            ),
            timeout=60,
            what="the refreshed answer",
        )
        assert _stored_answer(certificate_id).certificate_status is ocsp.OCSPCertStatus.REVOKED

        wait_until(
            lambda: _security_mail(smtp_settings, "révocation effacée"),
            timeout=60,
            what="the security officer's alert",
        )
        assert "revocation_cleared" in workers.logs()
    finally:
        workers.stop_all()


def _rewrite_all_unkeyed() -> None:
    """Every event rewritten as a plain SHA-256 link with altered content, with SQL."""
    previous_hash = GENESIS_HASH
    with transaction.atomic(), connection.cursor() as cursor:
        for event in AuditEvent.objects.order_by("pk"):
            details = {**event.details, "forged": True}
            forged = event_hash(
                previous_hash=previous_hash,
                created_at=event.created_at,
                actor=event.actor,
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                details=details,
            )
            cursor.execute(
                "UPDATE mycert_auditevent SET details = %s, previous_hash = %s, hash = %s, "
                "hash_scheme = 'sha256' WHERE id = %s",
                [json.dumps(details), previous_hash, forged, event.pk],
            )
            previous_hash = forged


def test_a_database_writer_cannot_downgrade_the_audit_trail(
    smtp_settings: TestSmtpServer,
    ca: Any,
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
) -> None:
    key = secrets.token_urlsafe(32)
    head_file = tmp_path / "worker-side" / "audit-head.jsonl"
    head_file.parent.mkdir()
    settings.MYCERT_AUDIT_KEY = key
    settings.MYCERT_AUDIT_HEAD_FILE = str(head_file)
    worker_env.update({"MYCERT_AUDIT_KEY": key, "MYCERT_AUDIT_HEAD_FILE": str(head_file)})
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        vendor = VendorFactory.create()
        first = audit_record(actor="system", action=AuditEvent.Action.VENDOR_CREATED, target=vendor)
        audit_record(actor="user:7", action=AuditEvent.Action.REQUEST_SUBMITTED, details={"n": 1})
        export_audit_head.delay()  # beat, every 15 minutes
        wait_until(head_file.exists, timeout=60, what="the first exported head")
        exported = head_file.read_text()
        assert json.loads(exported)["first_keyed_event"] == first.pk

        _rewrite_all_unkeyed()
        assert audit_verify_chain() == (2, None)  # the walk alone sees a valid plain chain

        # The next export finds it, appends nothing, alerts security.
        export_audit_head.delay()
        wait_until(
            lambda: _security_mail(smtp_settings, "journal d'audit"),
            timeout=60,
            what="the security officer's alert",
        )
        assert head_file.read_text() == exported

        # The next write is not a switch-over that would make the rewrite look normal.
        audit_record(
            actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED, details={"serial": "ab"}
        )
        assert not AuditEvent.objects.filter(action="audit.chain_keyed").exists()
        assert AuditEvent.objects.filter(action="audit.downgrade_detected").exists()

        with pytest.raises(CommandError, match="Audit chain"):
            call_command("verify_audit")
    finally:
        workers.stop_all()
