"""Every request ends and revocation wins over the outbox, with real workers (issue 12).

On PostgreSQL and Redis, with a real worker process and a real SMTP server; the races
are made to happen, not hoped for: a row lock held by the test, an SMTP server that
accepts a connection and then says nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from mycert.models import Certificate, CertificateRequest, Delivery, OperatorAlert, Vendor
from mycert.services.issuance import request_issue
from mycert.services.revocation import certificate_revoke
from tests.factories import ProfessionalFactory, VendorFactory
from tests.support.gpg import GpgKey, confirm_expired_key_on_worker
from tests.support.id_tokens import id_token_for
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import (
    WorkerProcess,
    fast_fault_env,
    submit_batch,
    sweep_now,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    group = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        yield group
    finally:
        group.stop_all()


def _submit(professional, vendor: Vendor | None = None) -> int:
    from mycert.services.requests import request_submit

    return request_submit(
        professional=professional,
        vendor=vendor,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(professional),
    ).pk


def _ended(request_ids: list[int]) -> bool:
    return not CertificateRequest.objects.filter(pk__in=request_ids).in_progress().exists()


def _row_lock_waiters() -> int:
    """Backends of this test database waiting for a lock (other databases share the server)."""
    with connection.cursor() as cursor:
        # Statistics are snapshotted once per transaction; the caller is inside one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def test_helpdesk_revoking_the_old_certificate_just_before_the_record_sends_nothing_twice(
    settings,
    ca,
    smtp_process: SmtpProcess,
    worker_env: dict[str, str],
    workers: WorkerProcess,
) -> None:
    """The resend race: the old certificate is locked, then revoked by the helpdesk, while
    a worker records the new certificate's password e-mail and supersedes.

    Before issue 12 the record itself revoked the old certificate: it met
    ``AlreadyRevoked``, rolled back, and the password e-mail went out a second time
    once its lease ran out.
    """
    settings.EMAIL_HOST, settings.EMAIL_PORT = smtp_process.host, smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    worker_env["MYCERT_SUPERSEDE_AFTER_DAYS"] = "0"
    professional = ProfessionalFactory.create()
    old_request_id = _submit(professional)
    outcome = request_issue(request_id=old_request_id, now=timezone.now())
    assert outcome.certificate_id is not None
    old = Certificate.objects.get(pk=outcome.certificate_id)
    Delivery.objects.filter(certificate=old).update(status="sent", sealed_payload=None)
    CertificateRequest.objects.filter(pk=old_request_id).update(status="sent")

    revoked_by_helpdesk = threading.Event()
    failure: list[BaseException] = []

    def helpdesk() -> None:
        """Lock the old certificate, wait for a worker to want it, then revoke it.

        The revocation is the row as the helpdesk's transaction leaves it. Not through
        ``certificate_revoke``: that takes the audit chain's lock, which the worker of
        today's code already holds while it waits for this row, and PostgreSQL would
        settle the pair as a deadlock instead of letting the race happen.
        """
        try:
            with transaction.atomic():
                Certificate.objects.select_for_update().get(pk=old.pk)
                wait_until(lambda: _row_lock_waiters() > 0, timeout=60, what="a worker waiting")
                Certificate.objects.filter(pk=old.pk).update(
                    revoked_at=timezone.now(),
                    revocation_reason=Certificate.RevocationReason.CESSATION_OF_OPERATION,
                    revoked_via=Certificate.RevokedVia.HELPDESK,
                )
            revoked_by_helpdesk.set()
        except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
            failure.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=helpdesk)
    holder.start()
    new_request_id = _submit(professional)
    workers.start("w1")
    try:
        holder.join(timeout=90)
        assert not failure, failure
        assert revoked_by_helpdesk.is_set()
        new_rows = Delivery.objects.filter(certificate__request_id=new_request_id)

        def delivered() -> bool:
            ids = set(new_rows.values_list("message_id", flat=True))
            return (
                CertificateRequest.objects.get(pk=new_request_id).status == "sent"
                and bool(ids)
                and ids <= set(smtp_process.by_message_id())
            )

        # Well under the 60 s lease: a rolled-back record would only be sent again then.
        wait_until(delivered, timeout=40, what="the new certificate's e-mails recorded")
        time.sleep(2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()[-5000:]}") from exc
    received = smtp_process.by_message_id()
    for message_id in new_rows.values_list("message_id", flat=True):
        assert received[message_id] == 1, "each e-mail exactly once"
    assert set(new_rows.values_list("status", flat=True)) == {"sent"}
    old.refresh_from_db()
    assert old.revoked_via == Certificate.RevokedVia.HELPDESK, "the helpdesk's revocation stands"
    assert "Traceback" not in workers.logs()


def test_revoking_while_the_keystore_is_at_the_relay_sends_nothing_more(
    settings,
    ca,
    tmp_path: Path,
    worker_env: dict[str, str],
    workers: WorkerProcess,
) -> None:
    """A relay that accepted the connection and hangs: revoked meanwhile, the keystore
    and password e-mails never leave, their payloads are wiped, the request ends."""
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        try:
            while True:
                conn, _ = silent.accept()
                held.append(conn)
        except OSError:
            return

    acceptor = threading.Thread(target=accept_and_say_nothing, daemon=True)
    acceptor.start()

    def close_the_silent_relay() -> None:
        silent.close()
        acceptor.join(timeout=5)
        for conn in held:
            conn.close()

    fast_fault_env(worker_env, email_url=f"smtp://127.0.0.1:{port}")
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    professional = ProfessionalFactory.create()
    request_id = _submit(professional)
    workers.start("w1")
    smtp = SmtpProcess(tmp_path / "maildir", port=port)
    try:
        wait_until(lambda: bool(held), timeout=60, what="the worker at the relay")
        certificate = Certificate.objects.get(request_id=request_id)
        keystore = Delivery.objects.get(
            certificate=certificate, recipient="professional", content="keystore"
        )
        assert keystore.status == Delivery.Status.PENDING, "in flight"
        assert keystore.attempts == 1, "in flight"
        certificate_revoke(
            certificate_id=certificate.pk,
            reason=Certificate.RevocationReason.KEY_COMPROMISE,
            via=Certificate.RevokedVia.HELPDESK,
            actor=None,
            now=timezone.now(),
        )
        # The relay comes back, a real one, on the same port.
        close_the_silent_relay()
        smtp.start()

        def notice_delivered() -> bool:
            sweep_now()
            return any("révoqué" in str(m.get("Subject", "")) for m in smtp.messages()) or any(
                Delivery.objects.filter(content="revocation", status="sent").values_list(
                    "pk", flat=True
                )
            )

        wait_until(notice_delivered, timeout=60, interval=2, what="the revocation notice")
        time.sleep(3)
        sweep_now()
        time.sleep(2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()[-5000:]}") from exc
    finally:
        close_the_silent_relay()
        smtp.stop()
    issuance = Delivery.objects.filter(certificate__request_id=request_id).exclude(
        content="revocation"
    )
    sent_ids = set(smtp.by_message_id())
    assert not sent_ids & set(issuance.values_list("message_id", flat=True)), "no keystore left"
    assert set(issuance.values_list("status", flat=True)) == {Delivery.Status.CANCELLED}
    assert not issuance.filter(sealed_payload__isnull=False).exists()
    assert _ended([request_id]), "the professional may request again"


def test_requests_the_profile_refuses_end_and_a_dead_vendor_key_blocks_no_one(
    settings,
    ca,
    smtp_process: SmtpProcess,
    expired_key: GpgKey,
    worker_env: dict[str, str],
    workers: WorkerProcess,
) -> None:
    """A 100-character name, an internationalised address, a vendor whose key expired:
    each request ends within seconds, the helpdesk is told, nothing is issued twice."""
    settings.EMAIL_HOST, settings.EMAIL_PORT = smtp_process.host, smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    long_name = ProfessionalFactory.create(
        given_name="Anne-Marie-" + "G" * 39, family_name="W" * 50
    )
    idn = ProfessionalFactory.create(email="anne.müller@cabinet.example.lu")
    with_vendor = ProfessionalFactory.create()
    # Fine when it was entered, expired since (vendor_create refuses an expired key).
    expired_vendor = VendorFactory.create(
        email=expired_key.uid_address,
        pgp_public_key=expired_key.public,
        pgp_fingerprint=expired_key.fingerprint,
    )
    # Confirmed on the worker host while it was valid: its copies fail as expired.
    confirm_expired_key_on_worker(expired_vendor, expired_key, Path(settings.MYCERT_GNUPG_HOME))
    ids = [_submit(long_name), _submit(idn), _submit(with_vendor, expired_vendor)]
    ids += submit_batch(2, vendor=None)
    workers.start("w1")
    try:

        def ended() -> bool:
            sweep_now()  # as beat would: a request stuck « issuing » would be issued again
            return _ended(ids)

        wait_until(ended, timeout=60, interval=1, what="all ended")
    except AssertionError as exc:
        statuses = list(CertificateRequest.objects.filter(pk__in=ids).values_list("status"))
        raise AssertionError(f"{exc} {statuses}\n{workers.logs()[-5000:]}") from exc
    status = dict(CertificateRequest.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert status[ids[0]] == status[ids[1]] == CertificateRequest.Status.FAILED
    assert status[ids[2]] == status[ids[3]] == status[ids[4]] == CertificateRequest.Status.SENT
    assert not Certificate.objects.filter(request_id__in=ids[:2]).exists()
    vendor_copies = Delivery.objects.filter(certificate__request_id=ids[2], recipient="vendor")
    assert set(vendor_copies.values_list("status", flat=True)) <= {"failed", "pending"}
    kinds = sorted(OperatorAlert.objects.values_list("kind", flat=True))
    assert kinds == ["delivery_failed", "request_failed", "request_failed"]
    assert workers.logs().count("issued certificate") == 3, "no new key every few minutes"
