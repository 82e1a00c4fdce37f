"""A real Celery prefork worker signing with a SoftHSM2 token (MYCERT_CA_BACKEND=pkcs11).

Each pool child opens its own PKCS#11 session after the fork; the parent, which runs
Django's checks before forking, never opens one. The worker's environment holds a PIN
file and no passphrase; its CA folder holds no private key.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from django.core.management import call_command

from mycert import custody
from mycert.models import Certificate
from tests.support.smtp_server import SmtpProcess
from tests.support.softhsm import SoftHsm
from tests.support.worker import (
    WorkerProcess,
    batch_figures,
    fast_fault_env,
    submit_batch,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BATCH = 6


def test_prefork_children_sign_in_the_token(
    settings: Any,
    smtp_process: SmtpProcess,
    softhsm: SoftHsm,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    label = softhsm.init_token("worker")
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o400)
    settings.MYCERT_CA_BACKEND = "pkcs11"
    settings.MYCERT_PKCS11_MODULE = softhsm.module
    settings.MYCERT_PKCS11_TOKEN_LABEL = label
    settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = softhsm.init_token("worker-root")
    settings.MYCERT_PKCS11_PIN = ""
    settings.MYCERT_PKCS11_PIN_FILE = str(pin_file)
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    custody.cache_clear()
    call_command("init_ca", key_type="ec-p256")
    custody.cache_clear()  # this process's session closes: the worker's are its own

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
            # Debug only for the passphrase default: the worker must not need one.
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "localhost",
        }
    )
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        started = time.monotonic()
        ids = submit_batch(BATCH, vendor=None)
        parent = workers.start("w1", concurrency=2)
        try:
            wait_for_batch(ids, smtp_process.by_message_id, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{workers.logs()[-6000:]}") from exc
        figures = batch_figures(ids, smtp_process.by_message_id(), started=started)
    finally:
        workers.stop_all()

    assert figures.completed == BATCH
    logs = workers.logs()
    pattern = r"PKCS#11 session opened on token '\w+' in process (\d+)"
    opened = {int(pid) for pid in re.findall(pattern, logs)}
    assert parent.pid not in opened, "the prefork parent never opens a session"
    # Each pool child opens its own at worker_process_init; the parent's `check` probes
    # the token in a throwaway child of its own.
    in_pool = {int(pid) for pid in re.findall(r"/ForkPoolWorker-\d+\] " + pattern, logs)}
    assert len(in_pool) == 2, logs[-4000:]
    assert len(opened - in_pool) == 1, "the check's probe child"
    issuing = custody.ca_certificates_load().issuing
    for certificate in Certificate.objects.filter(request_id__in=ids):
        x509.load_pem_x509_certificate(certificate.pem.encode()).verify_directly_issued_by(issuing)
    for path in Path(settings.MYCERT_CA_DIR).rglob("*"):
        assert path.is_dir() or b"PRIVATE KEY" not in path.read_bytes(), path
