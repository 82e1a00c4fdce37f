"""``manage.py demo_mail``: the README's way to read the demo's mailbox and save the .p12."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mycert.mail.messages import CertificateFacts, Envelope, keystore_message, password_message

FACTS = CertificateFacts(
    serial="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
    professional_name="Anne Muller",
    professional_id="LU-MED-100234",
    not_after=datetime(2029, 12, 4, tzinfo=UTC),
)
KEYSTORE = b"0\x82\x01\x00 not a real keystore"
PASSWORD = "Abcd-Efgh-Jkmn-Pqrs-Tuvw-Xyz2"


def _maildir(path: Path) -> Path:
    box = mailbox.Maildir(path, create=True)
    envelope = Envelope(to="anne.muller@cabinet-muller.lu", message_id="<k@esante.lu>")
    box.add(
        keystore_message(envelope=envelope, facts=FACTS, keystore=KEYSTORE).message().as_bytes()
    )
    box.add(
        password_message(envelope=envelope, facts=FACTS, password=PASSWORD).message().as_bytes()
    )
    return path


def test_saves_the_keystore_and_shows_the_password(tmp_path: Path) -> None:
    maildir = _maildir(tmp_path / "mail")
    out = StringIO()

    call_command(
        "demo_mail",
        "--maildir",
        str(maildir),
        "--body",
        "--save-keystore",
        str(tmp_path / "keystores"),
        stdout=out,
    )

    saved = tmp_path / "keystores" / "mycert-0a1b2c3d4e5f6071.p12"
    assert saved.read_bytes() == KEYSTORE
    assert saved.stat().st_mode & 0o777 == 0o600
    assert PASSWORD in out.getvalue()
    assert f"saved {saved}" in out.getvalue()


def test_no_mailbox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No Maildir"):
        call_command("demo_mail", "--maildir", str(tmp_path / "none"), stdout=StringIO())
