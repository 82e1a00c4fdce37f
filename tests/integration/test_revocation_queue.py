"""A revocation reaches OCSP and the CRL while an issuance backlog waits in the broker.

Launch day queues hundreds of issuances (minutes of work for the workers). The work a
revocation triggers (re-signing the certificate's OCSP answer, publishing a CRL) must
not wait behind them: until the revoked answer is stored the responder says tryLater,
and a soft-fail relying service keeps accepting the certificate.

On real parts: PostgreSQL, Redis, one real worker started as documented (no ``-Q``),
issuances submitted through the real service (enqueued on commit), the helpdesk's
« Yes, revoke » in the admin, the OCSP and CRL endpoints. The assertion is on order,
not on wall-clock time (the machine's speed varies several-fold): when OCSP first says
"revoked", and when the CRL lists the certificate, most of the backlog must still be
unissued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert.models import Certificate
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from tests.factories import CertificateRequestFactory
from tests.support.ocsp import ocsp_request_der
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import WorkerProcess, submit_batch, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

#: Issuances queued ahead of the revocation. One worker with one pool process takes them
#: one at a time; behind them all, the revocation would be seen only once none is left.
BACKLOG = 40


def _issued_of(request_ids: list[int]) -> Callable[[], int]:
    """How many of these requests have their certificate now."""
    return lambda: Certificate.objects.filter(request_id__in=request_ids).count()


def _ocsp_status(client: Client, record: Certificate) -> ocsp.OCSPCertStatus | None:
    """Ask the responder as a relying service would; None for tryLater."""
    body = ocsp_request_der(x509.load_pem_x509_certificate(record.pem.encode()))
    reply = client.post(reverse("pki-ocsp"), body, content_type="application/ocsp-request")
    answer = ocsp.load_der_ocsp_response(reply.content)
    if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER
        return None
    return answer.certificate_status


def _ocsp_says_revoked(client: Client, record: Certificate) -> bool:
    """Revoked yet? Never "good" once the revocation has committed."""
    status = _ocsp_status(client, record)
    assert status != ocsp.OCSPCertStatus.GOOD, "good after revocation"
    return status == ocsp.OCSPCertStatus.REVOKED


def _crl_lists(client: Client, record: Certificate) -> bool:
    crl = x509.load_der_x509_crl(client.get(reverse("pki-crl")).content)
    return crl.get_revoked_certificate_by_serial_number(int(record.serial, 16)) is not None


def test_a_revocation_overtakes_the_issuance_backlog(
    settings,
    ca,
    smtp_process: SmtpProcess,
    worker_env: dict[str, str],
    helpdesk: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    worker_env["MYCERT_CERT_KEY_TYPE"] = "ec-p256"
    worker_env["EMAIL_URL"] = f"smtp://{smtp_process.host}:{smtp_process.port}"
    crl_publish(now=timezone.now())  # the previous CRL the revocation's publication follows
    target = CertificateRequestFactory.create()
    certificate_id = request_issue(request_id=target.pk, now=timezone.now()).certificate_id
    assert certificate_id is not None
    record = Certificate.objects.get(pk=certificate_id)
    web = Client()
    assert _ocsp_status(web, record) == ocsp.OCSPCertStatus.GOOD
    assert not _crl_lists(web, record)

    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1", concurrency=1)
    try:
        backlog = submit_batch(BACKLOG, vendor=None)
        issued = _issued_of(backlog)
        # The worker is warm and busy with the backlog, the rest of it in the broker.
        wait_until(lambda: issued() >= 1, timeout=120, what="the first issuance")

        changelist = reverse("admin:mycert_certificate_changelist")
        form = {"action": "revoke_selected", "_selected_action": [record.pk]}
        clicked = time.monotonic()
        done = helpdesk.post(
            changelist, {**form, "post": "yes", "reason": "keyCompromise", "comment": "t"}
        )
        assert done.status_code == 302
        issued_at_click = issued()

        # Bounded only so that a broken build ends: the assertions below are on order.
        wait_until(
            lambda: _ocsp_says_revoked(web, record),
            timeout=300,
            interval=0.05,
            what="OCSP to say revoked",
        )
        ocsp_seconds, left_at_ocsp = time.monotonic() - clicked, BACKLOG - issued()
        wait_until(lambda: _crl_lists(web, record), timeout=300, interval=0.05, what="the CRL")
        crl_seconds, left_at_crl = time.monotonic() - clicked, BACKLOG - issued()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()[-4000:]}") from exc
    finally:
        workers.stop_all()

    with capsys.disabled():
        print(
            f"\n[revocation queue] backlog {BACKLOG} issuances, {BACKLOG - issued_at_click} "
            f"left at the click; OCSP revoked after {ocsp_seconds:.2f} s with {left_at_ocsp} "
            f"left, CRL after {crl_seconds:.2f} s with {left_at_crl} left"
        )
    # Behind the backlog, nothing would be left. Ahead of it, the revocation's two tasks
    # wait for the issuance running at the click and, by rotation, for one more at most.
    assert left_at_ocsp >= BACKLOG // 2, "OCSP said revoked only once the backlog drained"
    assert left_at_crl >= BACKLOG // 2, "the CRL listed it only once the backlog drained"
