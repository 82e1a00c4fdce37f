"""The e-mails' words: French elision, the vendor's own wording, what a vendor is told."""

from __future__ import annotations

from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message
from zoneinfo import ZoneInfo

import pytest

from mycert.mail.messages import (
    CertificateFacts,
    Envelope,
    french_de,
    keystore_message,
    password_message,
    revocation_message,
)

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
def test_the_vendor_is_told_its_copy_is_revoked_not_that_a_new_certificate_exists(
    language: str,
) -> None:
    """A vendor needs to know its copy no longer works; what replaced it is not its business."""
    facts = _facts(
        vendor="Logiciel Médical SA",
        revoked_at=datetime(2026, 12, 4, 14, 25, tzinfo=LUX),
        reason_label={"fr": "remplacé", "de": "ersetzt", "en": "superseded"}[language],
        superseded=True,
        replacement_serial_prefix="ffeeddccbbaa9988",
        via="system",
    )
    message = revocation_message(envelope=_envelope(language), facts=facts).message()
    words = {
        "fr": ("nouveau", "remplac"),
        "de": ("neue", "ersetzt"),
        "en": ("new", "replace", "superseded"),
    }[language]
    for text in (_subject(message), _text(message), _html(message)):
        lowered = text.lower()
        for word in words:
            assert word not in lowered, (word, text)
        assert "ffeeddccbbaa9988" not in text
    # What it needs: which certificate, that it is revoked, to delete the copy.
    assert "0a1b2c3d4e5f6071" in _subject(message)
    assert {
        "fr": "Supprimez votre copie",
        "de": "Löschen Sie Ihre Kopie",
        "en": "Delete your copy",
    }[language] in _text(message)
