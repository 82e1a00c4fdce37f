"""The e-mails' words: French elision, the vendor's own wording, what a vendor is told."""

from __future__ import annotations

import email
import html
import subprocess
from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mycert.mail.gpg import OpenPgp
from mycert.mail.messages import (
    CertificateFacts,
    Envelope,
    french_de,
    keystore_message,
    password_message,
    revocation_message,
)
from tests.support.gpg import GpgKey

LUX = ZoneInfo("Europe/Luxembourg")
SERIAL = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Anne Muller", "d'Anne Muller"),
        ("Émile Weber", "d'Émile Weber"),
        ("Ursula Hoffmann", "d'Ursula Hoffmann"),
        ("Yves Schmit", "d'Yves Schmit"),
        ("Hélène Klein", "d'Hélène Klein"),
        ("Hubert Wagner", "d'Hubert Wagner"),
        ("Jean Schmit", "de Jean Schmit"),
        ("Hans Becker", "de Hans Becker"),  # aspirated h: no elision
        ("Yasmine Reding", "de Yasmine Reding"),  # y before a vowel is a consonant
        ("  anne muller ", "d'anne muller"),
    ],
)
def test_french_de_elides_before_a_vowel_or_a_mute_h(name: str, expected: str) -> None:
    assert french_de(name) == expected


def _facts(*, vendor: str = "", **extra: object) -> CertificateFacts:
    return CertificateFacts(
        serial=SERIAL,
        professional_name="Anne Muller",
        professional_id="LU-MED-100234",
        not_after=datetime(2029, 12, 4, 14, 25, tzinfo=LUX),
        vendor_name=vendor,
        extra=dict(extra),
    )


def _subject(message: Message) -> str:
    return str(make_header(decode_header(str(message["Subject"]))))


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text part")


def _html(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no html part")


def _envelope(language: str = "fr") -> Envelope:
    return Envelope(to="support@vendor.example.lu", message_id="<m@esante.lu>", language=language)


def test_french_vendor_mails_elide_the_professionals_name() -> None:
    facts = _facts(
        vendor="Logiciel Médical SA",
        revoked_at=datetime(2026, 12, 4, 14, 25, tzinfo=LUX),
        reason_label="remplacé",
        superseded=True,
        via="system",
    )
    notice = revocation_message(envelope=_envelope(), facts=facts).message()
    password = password_message(envelope=_envelope(), facts=facts, password="x").message()

    assert _subject(notice).startswith("MyCert : certificat d'Anne Muller révoqué")
    for text in (_text(notice), _html(notice), _text(password), _html(password)):
        assert "de Anne" not in text
    assert "le certificat MyCert d'Anne Muller" in _text(notice)
    assert "du keystore mycert-0a1b2c3d4e5f6071.p12 d'Anne Muller" in _text(password)


def test_french_mails_say_trousseau_d_acces() -> None:
    message = keystore_message(envelope=_envelope(), facts=_facts(), keystore=b"p12").message()
    for text in (_text(message), _html(message)):
        assert "Trousseau d'accès" in text.replace("&#x27;", "'")
        assert "Trousseaux" not in text


@pytest.mark.parametrize(
    ("language", "professionals_words", "vendors_words"),
    [
        ("fr", "documentation de votre éditeur", "votre procédure d'installation habituelle"),
        ("de", "Dokumentation Ihres Softwareanbieters", "üblichen Installationsverfahren"),
        ("en", "your vendor's documentation", "your usual installation procedure"),
    ],
)
def test_the_vendor_is_not_sent_to_its_own_documentation(
    language: str, professionals_words: str, vendors_words: str
) -> None:
    own = keystore_message(envelope=_envelope(language), facts=_facts(), keystore=b"p12").message()
    copy = keystore_message(
        envelope=_envelope(language), facts=_facts(vendor="Logiciel Médical SA"), keystore=b"p12"
    ).message()
    assert professionals_words in _text(own).replace("&#x27;", "'")
    for text in (_text(copy), _html(copy).replace("&#x27;", "'")):
        assert professionals_words not in text
        assert vendors_words in text


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_the_vendor_is_told_its_copy_is_revoked_not_which_certificate_replaced_it(
    language: str,
) -> None:
    """A vendor needs to know its copy no longer works, and why (issue 23, point 9: the
    reason and whether a replacement follows); the new certificate's serial is not its
    business."""
    facts = _facts(
        vendor="Logiciel Médical SA",
        revoked_at=datetime(2026, 12, 4, 14, 25, tzinfo=LUX),
        reason_label={"fr": "remplacé", "de": "ersetzt", "en": "superseded"}[language],
        superseded=True,
        replacement_serial_prefix="ffeeddccbbaa9988",
        via="system",
    )
    message = revocation_message(envelope=_envelope(language), facts=facts).message()
    for text in (_subject(message), _text(message), _html(message)):
        assert "ffeeddccbbaa9988" not in text
    # What it needs: which certificate, that it is revoked, to delete the copy.
    assert "0a1b2c3d4e5f6071" in _subject(message)
    assert {
        "fr": "Supprimez votre copie",
        "de": "Löschen Sie Ihre Kopie",
        "en": "Delete your copy",
    }[language] in _text(message)


# --- The vendor's copy, worded for a vendor (issue 23, point 9) -----------------------------


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_the_vendors_copy_takes_the_p12_out_without_a_pgp_mail_client(
    language: str, gpg_home: Path, vendor_key: GpgKey, tmp_path: Path, settings: Any
) -> None:
    """The steps the decrypted copy gives, run as written: gpg on the saved attachment,
    then the command that takes the .p12 out of the decrypted message."""
    settings.MYCERT_CHECK_BASE_URL = "https://check.mycert.esante.lu"
    keyring = OpenPgp(gpg_home)
    keyring.import_public_key(vendor_key.public, now=datetime.now(LUX))
    keystore = b"0\x82 the professional's keystore"
    envelope = Envelope(
        to="support@vendor.example.lu",
        message_id="<m@esante.lu>",
        language=language,
        pgp_fingerprint=vendor_key.fingerprint,
    )
    outer = keystore_message(
        envelope=envelope,
        facts=_facts(vendor="Logiciel Médical SA"),
        keystore=keystore,
        encrypt=lambda data, fingerprint: keyring.encrypt(data, fingerprint, now=datetime.now(LUX)),
    ).message()
    (attachment,) = [p for p in outer.walk() if p.get_filename() == "encrypted.asc"]
    armored = attachment.get_payload(decode=True)
    assert isinstance(armored, bytes)
    (tmp_path / "encrypted.asc").write_bytes(armored)
    inner = email.message_from_bytes(vendor_key.decrypt(armored))
    text = _text(inner)

    commands = [line.strip() for line in text.splitlines() if line.startswith("  gpg ")]
    commands += [line.strip() for line in text.splitlines() if line.startswith("  python3 ")]
    assert len(commands) == 2, text
    for command in commands:
        if command.startswith("gpg "):
            command = command.replace("gpg ", f"gpg --homedir {vendor_key.home} --batch ", 1)
        subprocess.run(command, shell=True, cwd=tmp_path, check=True)  # noqa: S602
    assert (tmp_path / "mycert-0a1b2c3d4e5f6071.p12").read_bytes() == keystore

    # Whose it is, to hand it over, then to delete it; not the professional's own words.
    words = {
        "fr": ("celui d'Anne Muller", "remettez-lui", "supprimez votre copie"),
        "de": ("gehört Anne Muller", "übergeben Sie", "Löschen Sie danach Ihre Kopie"),
        "en": ("belongs to Anne Muller", "hand them the file", "Then delete your copy"),
    }[language]
    own = {
        "fr": ("Vérifiez que votre certificat fonctionne", "double-cliquez"),
        "de": ("Prüfen Sie, ob Ihr Zertifikat funktioniert", "Doppelklicken Sie"),
        "en": ("Check that your certificate works", "double-click"),
    }[language]
    for body in (text, html.unescape(_html(inner))):
        for word in words:
            assert word in body, (word, body)
        for word in own:
            assert word not in body, (word, body)


@pytest.mark.parametrize(
    ("language", "superseded", "reason", "follows"),
    [
        ("fr", True, "remplacé", "Un nouveau certificat le remplace"),
        ("fr", False, "clé compromise", "Aucun certificat ne le remplace d'office"),
        ("de", True, "ersetzt", "Ein neues Zertifikat ersetzt es"),
        ("de", False, "Schlüssel kompromittiert", "Kein Zertifikat ersetzt es von selbst"),
        ("en", True, "superseded", "A new certificate replaces it"),
        ("en", False, "key compromise", "No certificate replaces it by itself"),
    ],
)
def test_the_vendors_revocation_notice_gives_the_reason_and_whether_a_replacement_follows(
    language: str, superseded: bool, reason: str, follows: str
) -> None:
    facts = _facts(
        vendor="Logiciel Médical SA",
        revoked_at=datetime(2026, 12, 4, 14, 25, tzinfo=LUX),
        reason_label=reason,
        superseded=superseded,
        replacement_serial_prefix="ffeeddccbbaa9988" if superseded else "",
        via="system" if superseded else "helpdesk",
    )
    message = revocation_message(envelope=_envelope(language), facts=facts).message()
    for body in (_text(message), html.unescape(_html(message))):
        assert reason in body
        assert follows in body
        assert "ffeeddccbbaa9988" not in body  # the new serial is the professional's business


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_a_subject_is_handed_to_django_already_in_rfc_2047_encoded_words(language: str) -> None:
    """The stdlib's encoder re-encodes the growing line at every character (quadratic,
    about 1 ms a subject); MyCert encodes its subjects itself, one pass, same result."""
    message = keystore_message(
        envelope=_envelope(language), facts=_facts(vendor="Logiciel Médical SA"), keystore=b"p12"
    )

    message.subject.encode("ascii")  # nothing left for Django's Header() to encode
    assert "–" in _subject(message.message())  # the en dash, decoded as it was rendered
    assert _subject(message.message()).endswith("1/2")
    for word in message.subject.split():
        # RFC 2047 §2: an encoded-word is at most 75 characters.
        assert len(word) <= 75
    assert "\n" not in message.subject
