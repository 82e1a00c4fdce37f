"""The HSM goes away during a batch and comes back (issue 22): nothing lost, nothing twice.

A real prefork worker signs with a SoftHSM2 token. The token is taken away (its
folder moved: SoftHSM2 then answers CKR_GENERAL_ERROR, as a module that lost its
device does) while a batch is submitted, then put back. Token, session and module
errors are temporary: every request waits with back-off, as in a broker or database
outage, and is issued exactly once when the token is back; none ends ``failed``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from mycert import custody
from mycert.models import Certificate, CertificateRequest, OperatorAlert
from tests.support.smtp_server import SmtpProcess
from tests.support.softhsm import SoftHsm
from tests.support.worker import (
    WorkerProcess,
    assert_batch_complete,
    batch_figures,
    fast_fault_env,
    submit_batch,
    wait_for_batch,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BATCH = 8
OUTAGE_SECONDS = 12


def test_token_down_during_a_batch_every_request_issued_once(
    settings: Any,
    smtp_process: SmtpProcess,
    softhsm: SoftHsm,
    worker_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    label = softhsm.init_token("outage")
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    settings.MYCERT_CA_BACKEND = "pkcs11"
    settings.MYCERT_PKCS11_MODULE = softhsm.module
    settings.MYCERT_PKCS11_TOKEN_LABEL = label
    settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = softhsm.init_token("outage-root")
    settings.MYCERT_PKCS11_PIN = ""
    settings.MYCERT_PKCS11_PIN_FILE = str(pin_file)
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    custody.cache_clear()
    call_command("init_ca", key_type="ec-p256")
    custody.cache_clear()

    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    worker_env.pop("MYCERT_CA_KEY_PASSPHRASE", None)
    worker_env.update(
        {
            "MYCERT_CA_BACKEND": "pkcs11",
            "MYCERT_PKCS11_MODULE": softhsm.module,
            "MYCERT_PKCS11_TOKEN_LABEL": label,
            "MYCERT_PKCS11_PIN_FILE": str(pin_file),
            "MYCERT_CA_DIR": str(settings.MYCERT_CA_DIR),
            "SOFTHSM2_CONF": str(softhsm.conf),
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "localhost",
        }
    )
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    away = softhsm.directory.with_name(softhsm.directory.name + "-away")
    try:
        workers.start("w1", concurrency=2)
        # The pool's children have opened their sessions: the token is in use.
        wait_until(
            lambda: workers.logs().count("PKCS#11 session opened") >= 3,
            timeout=60,
            what="the worker's sessions",
        )
        started = time.monotonic()
        softhsm.directory.rename(away)  # the HSM goes away
        try:
            ids = submit_batch(BATCH, vendor=None)
            try:
                wait_until(
                    lambda: "temporary error, retrying" in workers.logs(),
                    timeout=60,
                    what="issuance meeting the outage",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{workers.logs()[-6000:]}") from exc
            time.sleep(OUTAGE_SECONDS)
            during = {
                "failed": CertificateRequest.objects.filter(
                    pk__in=ids, status=CertificateRequest.Status.FAILED
                ).count(),
                "issued": Certificate.objects.filter(request_id__in=ids).count(),
            }
        finally:
            away.rename(softhsm.directory)  # and comes back
        outage = time.monotonic() - started
        try:
            wait_for_batch(ids, smtp_process.by_message_id, timeout=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{workers.logs()[-6000:]}") from exc
        figures = batch_figures(ids, smtp_process.by_message_id(), started=started)
    finally:
        if away.exists():
            away.rename(softhsm.directory)
        workers.stop_all()
        custody.cache_clear()

    retries = workers.logs().count("temporary error, retrying")
    with capsys.disabled():
        print(
            figures.report("HSM token down"),
            f"outage={outage:.1f}s issuance retries during it={retries} "
            f"failed during it={during['failed']} issued during it={during['issued']}",
        )
    assert during == {"failed": 0, "issued": 0}, "nothing is signed nor failed while it is away"
    assert_batch_complete(figures)
    assert not CertificateRequest.objects.filter(pk__in=ids).exclude(status="sent").exists()
    assert not OperatorAlert.objects.filter(kind="request_failed").exists()
