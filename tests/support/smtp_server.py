"""A real SMTP server for tests (aiosmtpd), in the test process or as its own process.

Fixtures (register with ``pytest_plugins = ["tests.support.smtp_server"]``):

- ``smtp_server`` — a :class:`mycert.mail.sink.MailSink` on a free loopback port in this
  process: ``.messages``, ``.by_message_id()``, ``.fail_next(n, code=451)``,
  ``.refuse_recipient(addr, code=550)``, ``.stop()`` / ``.start()`` (the relay down);
- ``smtp_settings`` — Django's ``EMAIL_*`` pointed at it;
- ``smtp_process`` — the same sink as a separate process writing a Maildir, for tests
  with real workers: ``.port``, ``.messages()``, ``.stop()`` / ``.start()``.

``python -m tests.support.smtp_server --port P --maildir DIR`` runs the sink by hand.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from mycert.mail.sink import MailSink, ReceivedMessage, free_port, main

__all__ = ["SmtpProcess", "TestSmtpServer", "smtp_process", "smtp_server", "smtp_settings"]


class TestSmtpServer(MailSink):
    """The in-process sink with the shortcuts tests use."""

    __test__ = False  # not a test class, whatever its name

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    def fail_next(self, count: int = 1, *, code: int = 451) -> None:
        self.handler.fail_next(count, code=code)

    def refuse_recipient(self, address: str, *, code: int = 550) -> None:
        self.handler.refuse_recipient(address, code=code)

    def clear_faults(self) -> None:
        self.handler.clear_faults()

    def by_message_id(self) -> Counter[str]:
        """How many times each Message-ID arrived (exactly-once checks)."""
        return Counter(m.message_id for m in self.messages)

    def to(self, address: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if address in m.rcpt_tos]


@pytest.fixture
def smtp_server() -> Iterator[TestSmtpServer]:
    """An SMTP server on a free 127.0.0.1 port, storing what it receives."""
    server = TestSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_settings(settings: Any, smtp_server: TestSmtpServer) -> TestSmtpServer:
    """Point Django's e-mail settings at ``smtp_server``."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = smtp_server.host
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    return smtp_server


def _wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the SMTP sink did not listen on {host}:{port} within {timeout} s")


def _delivery_order(key: str) -> tuple[int, ...]:
    # Maildir names start "<seconds>.M<microseconds>P<pid>Q<counter>".
    found = re.match(r"(\d+)\.M(\d+)P\d+Q(\d+)", key)
    return tuple(int(g) for g in found.groups()) if found else (sys.maxsize,)


class SmtpProcess:
    """``python -m mycert.mail.sink`` as a child process writing a Maildir."""

    def __init__(self, maildir: Path, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.maildir = maildir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, fail_next: int = 0, fail_code: int = 451) -> None:
        if self._process is not None:
            return
        command = [
            sys.executable,
            "-m",
            "mycert.mail.sink",
            "--port",
            str(self.port),
            "--maildir",
            str(self.maildir),
            "--quiet",
        ]
        if fail_next:
            command += ["--fail-next", str(fail_next), "--fail-code", str(fail_code)]
        self._process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
        _wait_for_port(self.host, self.port)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def messages(self) -> list[Message]:
        """Every message in the Maildir, oldest first."""
        if not self.maildir.exists():
            return []
        box = mailbox.Maildir(self.maildir, create=False)
        keyed = sorted(box.iterkeys(), key=_delivery_order)
        return [
            email.message_from_bytes(box.get_bytes(key), policy=email.policy.compat32)
            for key in keyed
        ]

    def outbox_messages(self) -> list[Message]:
        """The outbox's e-mails: every message but the staff alerts (a new vendor raises
        one to the security officer; tests/test_alerts.py checks those)."""
        return [m for m in self.messages() if not _is_staff_alert(m)]

    def by_message_id(self) -> Counter[str]:
        """The outbox's e-mails by Message-ID (copies counted)."""
        return Counter(str(m.get("Message-ID", "")).strip() for m in self.outbox_messages())

    def environ(self) -> dict[str, str]:
        """Environment for a worker process that should send here."""
        return {**os.environ, "EMAIL_URL": f"smtp://{self.host}:{self.port}"}


@pytest.fixture
def smtp_process(tmp_path: Path) -> Iterator[SmtpProcess]:
    """An SMTP sink in its own process, storing messages in ``tmp_path/maildir``."""
    process = SmtpProcess(tmp_path / "maildir")
    process.start()
    try:
        yield process
    finally:
        process.stop()


if __name__ == "__main__":
    sys.exit(main())


def _is_staff_alert(message: Message) -> bool:
    from django.conf import settings

    staff = {settings.MYCERT_SECURITY_EMAIL, settings.MYCERT_HELPDESK_EMAIL}
    return str(message.get("To", "")).strip() in staff
