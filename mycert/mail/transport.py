"""Hand one e-mail to the SMTP relay and classify what went wrong.

Django's SMTP backend reports success when the relay refuses only some recipients
(``smtplib.SMTP.sendmail`` returns them instead of raising; docs/architecture.md « Known pitfalls
»), so the
message is sent here on the backend's connection and the refusals are checked.
Reply codes follow RFC 5321 §4.2.1: 4yz is a transient failure (try again later), 5yz
a permanent one.

A worker keeps its relay connection between messages (RFC 5321 §3.3: a client may send
several mail transactions in one session), for up to ``KEEP_OPEN_SECONDS`` of idleness:
a burst of e-mails then costs one TCP handshake, greeting and EHLO instead of one each.
A kept connection is not probed with a ``NOOP`` (§4.1.1.9) first, one more round trip
per message: the message's own ``MAIL FROM`` is the probe. A relay that closed the
session in between (it answers nothing, or 421, RFC 5321 §3.8) has taken nothing of the
message yet, so a new session carries it: a reconnect, never a failed or doubled message.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address

from mycert.mail.messages import as_wire_bytes

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "KEEP_OPEN_SECONDS",
    "SendError",
    "backoff_delay",
    "classify_smtp_error",
    "close_relay",
    "send_message",
]

#: Idle time after which a kept relay connection is closed instead of reused: well
#: under the 5 minutes a relay may wait for the next command (RFC 5321 §4.5.3.2.7), and
#: short enough that a silently dropped connection (a NAT or firewall forgetting it) is
#: rarely the one probed.
KEEP_OPEN_SECONDS = 15.0

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")
_MAX_ERROR = 300


#: Exponential back-off after a temporary failure (RFC 5321 §4.5.4.1: retry, and wait
#: longer each time): 30 s, 1 min, 2 min … capped at 30 min, far below Redis's 1 h
#: visibility timeout (docs/architecture.md « Known pitfalls »), so a retry task is never
#: redelivered by the broker while it waits. The base is the setting
#: ``MYCERT_DELIVERY_BACKOFF_SECONDS`` (30; fault tests shorten it); this is its default.
#: The outbox's deliveries and the staff alerts both wait this way.
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)


def backoff_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1-based)."""
    exponent = max(attempts - 1, 0)
    if exponent >= 16:  # 30 s · 2^16 is far past the cap; avoid huge numbers
        return BACKOFF_CAP
    base = timedelta(seconds=settings.MYCERT_DELIVERY_BACKOFF_SECONDS)
    return min(base * (1 << exponent), BACKOFF_CAP)


class SendError(Exception):
    """The relay did not take the message; ``temporary`` says whether to try again."""

    def __init__(self, temporary: bool, reason: str) -> None:
        super().__init__(reason)
        self.temporary = temporary
        self.reason = reason


def _redact(text: str) -> str:
    # Relays echo addresses in their replies; the error is logged and shown in the admin.
    return _ADDRESS.sub("<address>", text)[:_MAX_ERROR]


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return _redact(f"{code} {' '.join(text.split())}")


def classify_smtp_error(exc: BaseException) -> SendError:
    """Map an ``smtplib``/socket error to a temporary or permanent ``SendError``."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        # Only when every refusal is transient is the whole message worth retrying.
        temporary = all(400 <= code < 500 for code, _ in replies)
        detail = "; ".join(_reply(code, message) for code, message in replies)
        return SendError(temporary, f"recipient refused: {detail}")
    if isinstance(
        exc,
        smtplib.SMTPConnectError
        | smtplib.SMTPHeloError
        | smtplib.SMTPAuthenticationError
        | smtplib.SMTPNotSupportedError,
    ):
        # The relay is unreachable or misconfigured for us, not the message: an operator
        # fixes it and the next attempt goes through.
        return SendError(True, f"relay unavailable: {type(exc).__name__} {_redact(str(exc))}")
    if isinstance(exc, smtplib.SMTPResponseException):
        kind = "sender refused" if isinstance(exc, smtplib.SMTPSenderRefused) else "refused"
        return SendError(
            not 500 <= exc.smtp_code < 600, f"{kind}: {_reply(exc.smtp_code, exc.smtp_error)}"
        )
    if isinstance(exc, smtplib.SMTPException | OSError):
        # Disconnects, timeouts, refused connections, TLS failures: all transient.
        return SendError(True, f"connection failed: {type(exc).__name__} {_redact(str(exc))}")
    raise exc


@dataclass
class _KeptConnection:
    """An open relay session, the settings it was opened with, and its last use."""

    backend: EmailBackend
    smtp: smtplib.SMTP
    settings_key: tuple[object, ...]
    pid: int
    last_used: float
    #: Messages it carried: a session that carried none was opened for this one.
    carried: int = 0


# One per thread: an SMTP session carries one mail transaction at a time. The pid guards
# against a connection inherited through fork (a prefork pool started after a send).
_kept = threading.local()


def _settings_key(timeout: float) -> tuple[object, ...]:
    return (
        settings.EMAIL_HOST,
        settings.EMAIL_PORT,
        settings.EMAIL_HOST_USER,
        settings.EMAIL_HOST_PASSWORD,
        settings.EMAIL_USE_TLS,
        settings.EMAIL_USE_SSL,
        timeout,
    )


def close_relay() -> None:
    """Close this thread's kept relay connection, if any (QUIT, errors ignored)."""
    kept: _KeptConnection | None = getattr(_kept, "connection", None)
    _kept.connection = None
    if kept is not None and kept.pid == os.getpid():
        # The message is already decided; a failing QUIT changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            kept.backend.close()


def _reusable(kept: _KeptConnection, settings_key: tuple[object, ...], now: float) -> bool:
    if kept.pid != os.getpid() or kept.settings_key != settings_key:
        return False
    # Whether the relay still holds the session, the next MAIL FROM tells (module docstring).
    return now - kept.last_used <= KEEP_OPEN_SECONDS


def _connection(timeout: float) -> _KeptConnection:
    """This thread's relay session: the kept one if still fit for use, else a new one."""
    settings_key = _settings_key(timeout)
    kept: _KeptConnection | None = getattr(_kept, "connection", None)
    if kept is not None:
        if _reusable(kept, settings_key, time.monotonic()):
            return kept
        close_relay()
    backend = EmailBackend(timeout=timeout, fail_silently=False)
    backend.open()
    if backend.connection is None:
        raise SendError(True, "relay unavailable: no connection")
    kept = _KeptConnection(backend, backend.connection, settings_key, os.getpid(), time.monotonic())
    # A thread that ends (a web server's request thread sending in eager mode) drops its
    # kept session with it: close the socket then, without a QUIT that could wait.
    weakref.finalize(kept, backend.connection.close)
    _kept.connection = kept
    return kept


def send_message(message: EmailMessage, *, timeout: float | None = None) -> None:
    """Send ``message`` to all its recipients or raise ``SendError``.

    Connection settings (host, port, TLS, credentials) are Django's ``EMAIL_*``;
    ``timeout`` defaults to ``EMAIL_TIMEOUT`` because Django's own default is none. The
    connection stays open for the next message (module docstring) unless anything went
    wrong, in which case it is closed: the next message starts a clean session.
    """
    encoding = message.encoding or settings.DEFAULT_CHARSET
    sender = sanitize_address(message.from_email, encoding)
    recipients = [sanitize_address(address, encoding) for address in message.recipients()]
    if not recipients:
        raise SendError(False, "the message has no recipient")
    data = as_wire_bytes(message.message())
    timeout = timeout if timeout is not None else settings.EMAIL_TIMEOUT
    try:
        kept = _connection(timeout)
        try:
            refused = _mail_transaction(kept, sender, recipients, data)
        except _SessionClosed:
            # Closed by the relay while kept: nothing of this message was taken.
            close_relay()
            kept = _connection(timeout)
            refused = _mail_transaction(kept, sender, recipients, data)
    except (smtplib.SMTPException, OSError) as exc:
        close_relay()
        raise classify_smtp_error(exc) from exc
    except BaseException:
        close_relay()
        raise
    kept.last_used = time.monotonic()
    kept.carried += 1
    if refused:
        # Accepted for some recipients only (RFC 5321 §3.3): a failure for MyCert, since
        # a keystore must reach everyone it is meant for. One recipient per message in
        # practice, so this is a safety net.
        raise classify_smtp_error(smtplib.SMTPRecipientsRefused(refused))


class _SessionClosed(Exception):
    """A kept session the relay had closed: MAIL FROM got no answer, or 421."""


def _mail_transaction(
    kept: _KeptConnection, sender: str, recipients: list[str], data: bytes
) -> dict[str, tuple[int, bytes]]:
    """One mail transaction (RFC 5321 §3.3) on ``kept``; the refused recipients.

    ``smtplib.SMTP.sendmail``'s steps and exceptions, with its MAIL FROM watched: on a
    session that already carried a message, no answer or a 421 there means the relay
    closed it while idle, before taking anything of this one (``_SessionClosed``).
    """
    smtp = kept.smtp
    smtp.ehlo_or_helo_if_needed()
    options = [f"size={len(data)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
    try:
        code, reply = smtp.mail(sender, options)
    except smtplib.SMTPServerDisconnected as exc:
        if kept.carried:
            raise _SessionClosed from exc
        raise
    if code != 250:
        if code == 421:
            smtp.close()
            if kept.carried:
                raise _SessionClosed
        else:
            _reset(smtp)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in recipients:
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            refused[recipient] = (code, reply)
        if code == 421:
            smtp.close()
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _reset(smtp)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.data(data)
    if code != 250:
        if code == 421:
            smtp.close()
        else:
            _reset(smtp)
        raise smtplib.SMTPDataError(code, reply)
    return refused


def _reset(smtp: smtplib.SMTP) -> None:
    # As smtplib's own _rset: the transaction is abandoned; a relay gone by now is
    # found by the next message.
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()
