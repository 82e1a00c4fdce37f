"""A real Celery worker process for integration tests, on the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def worker_env(settings, ca, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
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
            "EMAIL_URL": f"smtp://{settings.EMAIL_HOST}:{settings.EMAIL_PORT}",
            "MYCERT_VAR_DIR": str(tmp_path / "var"),
            "PYTHONPATH": str(BASE_DIR),
        }
    )
    return env


@pytest.fixture
def celery_worker_process(worker_env, tmp_path) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    """Start one real worker; stop every worker the test started."""
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        yield workers
    finally:
        workers.stop_all()
