"""Two workers at once on the same PostgreSQL and Redis: no duplicate, no lost work.

Thirty professionals submit together (half with an OpenPGP vendor copy); two separate
worker processes, two pool processes each, take the tasks. The sweeps run as beat
would, so duplicate tasks (a request or an e-mail queued twice) happen on purpose and
must change nothing: the request row lock and the outbox claim settle every race.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from mycert.models import AuditEvent, Certificate
from tests.factories import ConfirmedVendorFactory
from tests.support.gpg import GpgKey
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import (
    WorkerProcess,
    assert_batch_complete,
    batch_figures,
    fast_fault_env,
    submit_batch,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BATCH = 30


def _per_worker(log_dir: Path, needle: str) -> dict[str, int]:
    """How many log lines containing ``needle`` each worker wrote (one log file each)."""
    return {
        name: (log_dir / f"worker-{name}.log").read_text(errors="replace").count(needle)
        for name in ("w1", "w2")
    }


def test_two_workers_share_a_batch_without_duplicates(
    settings,
    ca,
    smtp_process: SmtpProcess,
    vendor_key: GpgKey,
    worker_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    vendor = ConfirmedVendorFactory.create(key=vendor_key)  # add_vendor on the worker host
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        started = time.monotonic()
        # Submitted before the workers start: both find a full queue and race for it.
        ids = submit_batch(BATCH, vendor=vendor)
        workers.start("w1", concurrency=2)
        workers.start("w2", concurrency=2)
        try:
            wait_for_batch(ids, smtp_process.by_message_id, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{workers.logs()[-6000:]}") from exc
        figures = batch_figures(ids, smtp_process.by_message_id(), started=started)
    finally:
        workers.stop_all()

    issued = _per_worker(tmp_path, "issued certificate")
    sent = _per_worker(tmp_path, "sent (attempt")
    issued_events = AuditEvent.objects.filter(action="certificate.issued").count()
    sent_events = Counter(
        AuditEvent.objects.filter(action="delivery.sent").values_list("object_id", flat=True)
    )
    with capsys.disabled():
        print(
            figures.report("two workers"),
            f"certificates issued by worker={issued} e-mails sent by worker={sent} "
            f"issued events={issued_events} "
            f"max sent events per e-mail={max(sent_events.values())}",
        )
    assert_batch_complete(figures)
    assert sum(issued.values()) == BATCH
    assert sum(sent.values()) == figures.emails_expected
    assert Certificate.objects.count() == BATCH
    assert issued_events == BATCH, "each request issued once, whoever took it"
    assert set(sent_events.values()) == {1}, "each e-mail recorded as sent once"
