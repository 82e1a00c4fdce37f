"""A local SMTP sink for development and tests: ``python -m mycert.mail.sink``.

It accepts every message on a loopback port, keeps it in memory and, with
``--maildir``, writes it to a Maildir that mutt (``mutt -f var/mail``) or any mail
client reads. For fault tests it can answer like a troubled relay: a temporary
``451`` or permanent ``550`` for the next messages (RFC 5321 §4.2.1), or a refusal of
one recipient at ``RCPT TO``.

Not for production: the agency's secure mail gateway is the relay there. Loopback
only, no TLS, no authentication.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import functools
import mailbox
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["MailSink", "ReceivedMessage", "SinkHandler", "free_port", "main"]

_REPLIES = {
    421: "421 4.3.2 Service not available, closing transmission channel",
    450: "450 4.2.1 Mailbox unavailable, try again later",
    451: "451 4.3.0 Local error in processing, try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.7.1 Message rejected by policy",
    552: "552 5.3.4 Message too big",
    553: "553 5.1.3 Mailbox name not allowed",
    554: "554 5.6.0 Transaction failed",
}


def _reply(code: int) -> str:
    return _REPLIES.get(
        code, f"{code} {'4.0.0' if code < 500 else '5.0.0'} Refused by the test sink"
    )


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink accepted it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @functools.cached_property
    def message(self) -> Message:
        """The parsed message, on first use: a relay stores bytes, it need not parse them."""
        return email.message_from_bytes(self.data, policy=email.policy.compat32)

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", "")).strip()

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))


class SinkHandler:
    """The aiosmtpd handler: stores messages, answers with the configured faults."""

    def __init__(self, maildir: Path | None = None, *, verbose: bool = False) -> None:
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._fail_next: list[int] = []
        self._refused: dict[str, int] = {}
        self._maildir = mailbox.Maildir(maildir, create=True) if maildir is not None else None
        self._verbose = verbose

    # --- Controls (thread-safe: tests call them from the main thread) ----------------

    def fail_next(self, count: int = 1, *, code: int = 451) -> None:
        """Answer the next ``count`` messages' DATA with ``code``."""
        with self._lock:
            self._fail_next.extend([code] * count)

    def refuse_recipient(self, address: str, *, code: int = 550) -> None:
        """Answer ``RCPT TO`` for ``address`` with ``code`` until ``clear_faults``."""
        with self._lock:
            self._refused[address.lower()] = code

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_next.clear()
            self._refused.clear()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    # --- aiosmtpd hooks ---------------------------------------------------------------

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self._lock:
            code = self._refused.get(address.lower())
        if code is not None:
            return _reply(code)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            code = self._fail_next.pop(0) if self._fail_next else None
        if code is not None:
            return _reply(code)
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from or ""), rcpt_tos=tuple(envelope.rcpt_tos), data=data
        )
        with self._lock:
            self._messages.append(received)
            if self._maildir is not None:
                header = (
                    f"Return-Path: <{received.mail_from}>\r\n"
                    f"Delivered-To: {', '.join(received.rcpt_tos)}\r\n"
                ).encode()
                self._maildir.add(header + data)
        if self._verbose:
            print(  # noqa: T201 (a command-line tool)
                f"received {received.message_id or '(no Message-ID)'} "
                f"for {', '.join(received.rcpt_tos)}: {received.subject}",
                flush=True,
            )
        return "250 2.0.0 OK: queued"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class MailSink:
    """An aiosmtpd server on a loopback port that can be stopped and started again."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        maildir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.handler = SinkHandler(maildir, verbose=verbose)
        self._controller: Controller | None = None

    def start(self) -> None:
        if self._controller is not None:
            return
        # A fresh controller each time: aiosmtpd's is not meant to be restarted.
        controller = Controller(
            self.handler,
            hostname=self.host,
            port=self.port,
            # The 8BITMIME/SMTPUTF8 extensions, as a real relay offers them.
            enable_SMTPUTF8=True,
            data_size_limit=50 * 1024 * 1024,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m mycert.mail.sink", description="A local SMTP sink (development only)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only)")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--maildir", type=Path, help="store each message in this Maildir")
    parser.add_argument(
        "--fail-next", type=int, default=0, metavar="N", help="refuse the first N messages"
    )
    parser.add_argument(
        "--fail-code", type=int, default=451, help="reply code for --fail-next (4xx or 5xx)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print each message")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the sink listens on loopback only")

    sink = MailSink(host=args.host, port=args.port, maildir=args.maildir, verbose=not args.quiet)
    if args.fail_next:
        sink.handler.fail_next(args.fail_next, code=args.fail_code)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sink.start()
    where = f", Maildir {args.maildir}" if args.maildir else ""
    print(f"mail sink listening on {args.host}:{sink.port}{where}", flush=True)  # noqa: T201
    try:
        stop.wait()
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
