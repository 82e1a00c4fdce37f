"""Hand one e-mail to the SMTP relay and classify what went wrong.

Django's SMTP backend reports success when the relay refuses only some recipients
(``smtplib.SMTP.sendmail`` returns them instead of raising; DESIGN.md §7), so the
message is sent here on the backend's connection and the refusals are checked.
Reply codes follow RFC 5321 §4.2.1: 4yz is a transient failure (try again later), 5yz
a permanent one.
"""

from __future__ import annotations

import contextlib
import re
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address

from mycert.mail.messages import as_wire_bytes

__all__ = ["SendError", "classify_smtp_error", "send_message"]

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")
_MAX_ERROR = 300


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


def send_message(message: EmailMessage, *, timeout: float | None = None) -> None:
    """Send ``message`` to all its recipients or raise ``SendError``.

    Connection settings (host, port, TLS, credentials) are Django's ``EMAIL_*``;
    ``timeout`` defaults to ``EMAIL_TIMEOUT`` because Django's own default is none.
    """
    backend = EmailBackend(
        timeout=timeout if timeout is not None else settings.EMAIL_TIMEOUT, fail_silently=False
    )
    encoding = message.encoding or settings.DEFAULT_CHARSET
    sender = sanitize_address(message.from_email, encoding)
    recipients = [sanitize_address(address, encoding) for address in message.recipients()]
    if not recipients:
        raise SendError(False, "the message has no recipient")
    data = as_wire_bytes(message.message())
    try:
        backend.open()
        if backend.connection is None:
            raise SendError(True, "relay unavailable: no connection")
        refused = backend.connection.sendmail(sender, recipients, data)
    except (smtplib.SMTPException, OSError) as exc:
        raise classify_smtp_error(exc) from exc
    finally:
        # The message is already decided; a failing QUIT changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            backend.close()
    if refused:
        # Accepted for some recipients only (RFC 5321 §3.3): a failure for MyCert, since
        # a keystore must reach everyone it is meant for. One recipient per message in
        # practice, so this is a safety net.
        raise classify_smtp_error(smtplib.SMTPRecipientsRefused(refused))
