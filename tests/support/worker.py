"""A real Celery worker process for integration tests, on the test database and Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


def integration_environment_ready() -> str | None:
    """Why integration tests cannot run here (None when they can)."""
    if connection.vendor != "postgresql":
        return "integration tests need PostgreSQL (DATABASE_URL=postgres://…)"
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        return "integration tests need Redis (CELERY_BROKER_URL=redis://…)"
    return None


def database_url_for_test_database() -> str:
    """The URL of the database pytest-django created, for other processes to share."""
    params = connection.settings_dict
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str = "w1", concurrency: int = 1) -> subprocess.Popen[bytes]:
        # No -Q, as deployed: the worker reads every queue (CELERY_TASK_QUEUES).
        command = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "--loglevel", "INFO", "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--pool", "prefork",
        ]  # fmt: skip
        log_file = self.log_path.with_name(f"{self.log_path.stem}-{name}.log")
        # The child keeps its own descriptor; the parent closes its copy at once.
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Kill a worker and its pool children, as a crash would."""
        # The prefork children first, so that none finishes the task after the parent died.
        subprocess.run(["pkill", f"-{sig}", "-P", str(process.pid)], check=False)
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                subprocess.run(["pkill", "-KILL", "-P", str(process.pid)], check=False)
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.log_path.parent.glob(f"{self.log_path.stem}-*.log"))
        )


def wait_until(
    predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def worker_env(settings, ca, tmp_path) -> dict[str, str]:
    """The environment a worker needs to share this test's database, CA, broker and mail."""
    reason = integration_environment_ready()
    if reason:
        pytest.skip(reason)
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url_for_test_database(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "MYCERT_CA_DIR": str(settings.MYCERT_CA_DIR),
            "MYCERT_CA_KEY_PASSPHRASE": settings.MYCERT_CA_KEY_PASSPHRASE,
            "MYCERT_GNUPG_HOME": str(settings.MYCERT_GNUPG_HOME),
            "MYCERT_BASE_URL": settings.MYCERT_BASE_URL,
            "MYCERT_PKI_BASE_URL": settings.MYCERT_PKI_BASE_URL,
            "MYCERT_CERT_KEY_TYPE": settings.MYCERT_CERT_KEY_TYPE,
            # The provider whose keys the worker reads to verify requests' proofs.
            "OIDC_ISSUER": settings.OIDC_ISSUER,
            "OIDC_CLIENT_ID": settings.OIDC_CLIENT_ID,
            "MYCERT_OIDC_ACCEPTED_ACR": ",".join(settings.MYCERT_OIDC_ACCEPTED_ACR),
            "MYCERT_OIDC_PROFESSIONAL_ID_CLAIM": settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM,
            "EMAIL_URL": f"smtp://{settings.EMAIL_HOST}:{settings.EMAIL_PORT}",
            "MYCERT_VAR_DIR": str(tmp_path / "var"),
            "PYTHONPATH": str(BASE_DIR),
        }
    )
    return env


@pytest.fixture
def celery_worker_process(worker_env, tmp_path) -> Iterator[WorkerProcess]:
    """Start one real worker; stop every worker the test started."""
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        yield workers
    finally:
        workers.stop_all()


# --- Batches for fault, concurrency and hygiene tests ----------------------------------------
#
# A batch is many professionals submitting at once through the real service
# (``request_submit``: committed, enqueued on commit), half of them with a vendor copy.
# The figures count e-mails by Message-ID at the SMTP server: the outbox promises each
# e-mail at least once under a stable Message-ID, so a duplicate is visible there.


def fast_fault_env(env: dict[str, str], *, email_url: str) -> dict[str, str]:
    """Settings for a worker in a bounded fault test: quick back-off, quick request sweep."""
    env.update(
        {
            "EMAIL_URL": email_url,
            # The key type does not matter to these tests; EC P-256 keys are instant.
            "MYCERT_CERT_KEY_TYPE": "ec-p256",
            # Outbox back-off 1 s, 2 s, 4 s… instead of 30 s, 1 min, 2 min…
            "MYCERT_DELIVERY_BACKOFF_SECONDS": "1",
            # A request without certificate after 5 s may be queued again by the sweep.
            "MYCERT_REQUEST_SWEEP_AFTER_SECONDS": "5",
            # The outbox lease is max(4 × EMAIL_TIMEOUT, 60 s): keep it at its 60 s floor.
            "EMAIL_TIMEOUT": "5",
        }
    )
    return env


def submit_batch(count: int, *, vendor: Any | None, with_vendor_every: int = 2) -> list[int]:
    """``count`` new professionals each submit one request; every other one names ``vendor``."""
    from django.utils import timezone

    from mycert.services.requests import request_submit
    from tests.factories import ProfessionalFactory
    from tests.support.id_tokens import id_token_for

    ids = []
    for index in range(count):
        professional = ProfessionalFactory.create()
        chosen = vendor if vendor is not None and index % with_vendor_every == 0 else None
        # request_submit commits its own transaction; its on_commit enqueues the task.
        request = request_submit(
            professional=professional,
            vendor=chosen,
            terms_accepted=True,
            language="fr",
            now=timezone.now(),
            id_token=id_token_for(professional),
        )
        ids.append(request.pk)
    return ids


def sweep_now() -> None:
    """Run both sweeps on the worker, as beat would (ignored while the broker is down)."""
    from mycert.tasks.delivery import sweep_outbox
    from mycert.tasks.issuance import sweep_requests

    with contextlib.suppress(Exception):
        sweep_outbox.delay()
        sweep_requests.delay()


@dataclass
class BatchFigures:
    """What a batch produced, counted at the database and at the SMTP server."""

    requests: int
    completed: int
    emails_expected: int
    emails_delivered: int
    emails_duplicated: int
    emails_missing: list[str]
    emails_unexpected: list[str]
    certificates_per_request: dict[int, int]
    valid_certificates_per_professional: dict[int, int]
    seconds: float

    def report(self, title: str) -> str:
        per_request = Counter(self.certificates_per_request.values())
        return (
            f"\n[{title}] requests={self.requests} completed={self.completed} "
            f"e-mails expected={self.emails_expected} delivered={self.emails_delivered} "
            f"duplicated={self.emails_duplicated} missing={len(self.emails_missing)} "
            f"unexpected={len(self.emails_unexpected)} "
            f"certificates per request={dict(sorted(per_request.items()))} "
            f"duration={self.seconds:.1f}s"
        )


def batch_figures(
    request_ids: list[int], received: Counter[str], *, started: float
) -> BatchFigures:
    """Count the batch's requests, certificates and e-mails (``received``: Message-ID → copies)."""
    from django.utils import timezone

    from mycert.models import Certificate, CertificateRequest, Delivery

    requests = CertificateRequest.objects.filter(pk__in=request_ids)
    expected = sum(4 if r.vendor_id else 2 for r in requests)
    certificates = Certificate.objects.filter(request_id__in=request_ids)
    per_request = dict.fromkeys(request_ids, 0)
    for certificate in certificates:
        per_request[certificate.request_id] += 1
    valid = Counter(certificates.valid(timezone.now()).values_list("professional_id", flat=True))
    message_ids = set(
        Delivery.objects.filter(certificate__request_id__in=request_ids).values_list(
            "message_id", flat=True
        )
    )
    batch_received = {m: n for m, n in received.items() if m in message_ids}
    return BatchFigures(
        requests=len(request_ids),
        completed=requests.filter(status=CertificateRequest.Status.SENT).count(),
        emails_expected=expected,
        emails_delivered=len(batch_received),
        emails_duplicated=sum(n - 1 for n in batch_received.values()),
        emails_missing=sorted(message_ids - set(received)),
        emails_unexpected=sorted(m for m in received if m not in message_ids),
        certificates_per_request=per_request,
        valid_certificates_per_professional=dict(valid),
        seconds=time.monotonic() - started,
    )


def batch_done(request_ids: list[int], received: Callable[[], Counter[str]]) -> bool:
    """Every request sent, and every one of its e-mails seen at the SMTP server."""
    from mycert.models import CertificateRequest, Delivery

    if CertificateRequest.objects.filter(pk__in=request_ids).exclude(status="sent").exists():
        return False
    expected = set(
        Delivery.objects.filter(certificate__request_id__in=request_ids).values_list(
            "message_id", flat=True
        )
    )
    return expected <= set(received())


def wait_for_batch(
    request_ids: list[int],
    received: Callable[[], Counter[str]],
    *,
    timeout: float,
    sweep_every: float = 3.0,
) -> None:
    """Wait until the batch is done, running the sweeps every few seconds as beat would."""
    last_sweep = time.monotonic()

    def done() -> bool:
        nonlocal last_sweep
        if time.monotonic() - last_sweep >= sweep_every:
            sweep_now()
            last_sweep = time.monotonic()
        return batch_done(request_ids, received)

    wait_until(done, timeout=timeout, interval=0.5, what=f"{len(request_ids)} requests delivered")


def assert_batch_complete(figures: BatchFigures, *, allow_duplicates: bool = False) -> None:
    """No lost work, one certificate per request, each e-mail at least (or exactly) once."""
    assert figures.completed == figures.requests, "every request completes"
    assert set(figures.certificates_per_request.values()) == {1}, "one certificate per request"
    assert set(figures.valid_certificates_per_professional.values()) == {1}, (
        "no professional holds two valid certificates from the batch"
    )
    assert figures.emails_missing == [], "every e-mail reaches the SMTP server"
    assert figures.emails_unexpected == [], "no e-mail the outbox does not know"
    assert figures.emails_delivered == figures.emails_expected
    if not allow_duplicates:
        assert figures.emails_duplicated == 0, "each e-mail exactly once"
