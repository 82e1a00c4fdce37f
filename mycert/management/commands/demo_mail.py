"""Read the demo's mailbox (``var/mail``, written by the SMTP sink of ``manage.py demo``).

``manage.py demo_mail`` lists the e-mails; ``--body`` adds their plain text (the password
e-mail shows the password); ``--save-keystore DIR`` writes the ``.p12`` attachments of the
unencrypted e-mails to DIR, the newest also as ``DIR/latest.p12`` (a glob such as
``mycert-*.p12`` stops working in ``openssl -in`` once there are two). The vendor's copies are OpenPGP-encrypted and stay so:
``gpg --homedir var/demo-vendor-gpg --decrypt``.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

KEYSTORE_TYPE = "application/x-pkcs12"
LATEST = "latest.p12"
# Python's Maildir names a message "<seconds>.M<microseconds>P<pid>Q<count>.<host>".
_MAILDIR_KEY = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)")


def _delivery_time(key: str) -> tuple[int, int, int]:
    """The order the sink stored messages in (microseconds are not zero-padded)."""
    found = _MAILDIR_KEY.match(key)
    if found is None:
        return (0, 0, 0)
    seconds, microseconds, count = found.groups()
    return (int(seconds), int(microseconds), int(count))


class Command(BaseCommand):
    help = "List the demo's e-mails (var/mail), show their text, save the .p12 attachments."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--maildir",
            type=Path,
            default=None,
            help="The Maildir to read (default: var/mail under MYCERT_VAR_DIR).",
        )
        parser.add_argument("--body", action="store_true", help="Print each e-mail's text.")
        parser.add_argument(
            "--save-keystore",
            type=Path,
            metavar="DIR",
            help="Write the .p12 attachments of the unencrypted e-mails to DIR "
            f"(the newest also as DIR/{LATEST}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        maildir = options["maildir"] or Path(settings.VAR_DIR) / "mail"
        if not (maildir / "new").is_dir() and not (maildir / "cur").is_dir():
            raise CommandError(f"No Maildir at {maildir}: start `make run` and ask first.")
        box = mailbox.Maildir(maildir, create=False)
        messages: list[EmailMessage] = [
            email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            for key in sorted(box.keys(), key=_delivery_time)
        ]
        target: Path | None = options["save_keystore"]
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
        newest: Path | None = None
        for number, message in enumerate(messages, 1):
            subject = str(message["Subject"] or "").strip()
            self.stdout.write(f"{number}. To: {message['To']}  Subject: {subject}")
            if message.get_content_type() == "multipart/encrypted":
                self.stdout.write("   (OpenPGP-encrypted: the vendor's copy)")
            if options["body"]:
                part = message.get_body(preferencelist=("plain",))
                if part is not None:
                    text = cast(EmailMessage, part).get_content()
                    self.stdout.write("   " + str(text).strip().replace("\n", "\n   "))
            for attachment in message.iter_attachments():
                if attachment.get_content_type() != KEYSTORE_TYPE or target is None:
                    continue
                name = Path(attachment.get_filename() or f"keystore-{number}.p12").name
                path = target / name
                path.write_bytes(cast(bytes, attachment.get_content()))
                path.chmod(0o600)  # a private key, even if password-protected
                self.stdout.write(f"   saved {path}")
                newest = path  # messages are in the order the sink stored them
        if target is not None and newest is not None:
            latest = target / LATEST
            latest.unlink(missing_ok=True)
            latest.symlink_to(newest.name)  # relative: the folder can be moved
            self.stdout.write(f"The newest keystore is also {latest}.")
