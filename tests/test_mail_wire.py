"""The bytes a message goes out as (``as_wire_bytes``) are compat32's, only made faster.

``as_wire_bytes`` writes the one-line ASCII headers that fit their line without
compat32's folding machinery (``email.header.Header``). These tests hold it to the
standard library's own serialisation: every message kind MyCert sends, in every
language, PGP/MIME included, byte for byte; and random header values of every length
around the line's limit.
"""

from __future__ import annotations

import random
import re
import string
from datetime import datetime
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest

from mycert.mail.messages import (
    LANGUAGES,
    CertificateFacts,
    Envelope,
    _WirePolicy,
    as_wire_bytes,
    expiry_message,
    keystore_message,
    password_message,
    revocation_message,
)

LUX = ZoneInfo("Europe/Luxembourg")


def _compat32_bytes(message: Message) -> bytes:
    """What ``as_wire_bytes`` wrote before: the message's own policy, CRLF."""
    buffer = BytesIO()
    BytesGenerator(buffer, mangle_from_=False).flatten(message, linesep="\r\n")
    return buffer.getvalue()


def _facts(name: str, vendor: str = "") -> CertificateFacts:
    return CertificateFacts(
        serial="a1b2c3d4e5f60718293a4b5c6d7e8f90",
        professional_name=name,
        professional_id="LU-MED-100234",
        not_after=datetime(2029, 12, 4, 14, 25, tzinfo=LUX),
        vendor_name=vendor,
        extra={
            "revoked_at": datetime(2026, 12, 4, 14, 25, tzinfo=LUX),
            "reason_label": "keyCompromise",
            "days_left": 12,
        },
    )


def _armor(data: bytes, fingerprint: str) -> bytes:
    # The encryptor's output is opaque to the serialisation: any ASCII armour will do.
    return b"-----BEGIN PGP MESSAGE-----\r\n\r\n" + data[:60].hex().encode() + b"\r\n-----END"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize(
    "name", ["Anne Muller", "Éléonore Dupont-Ægidius de la Montagne-Saint-Geneviève"]
)
def test_every_message_kind_serialises_as_compat32_would(
    language: str, encrypted: bool, name: str
) -> None:
    envelope = Envelope(
        to="support@vendor.example.lu",
        message_id="<a1b2c3d4e5f6.keystore.vendor@mycert.esante.lu>",
        language=language,
        pgp_fingerprint="0123456789ABCDEF0123456789ABCDEF01234567" if encrypted else "",
    )
    facts = _facts(name, vendor="Logiciel Médical SA" if encrypted else "")
    encrypt = _armor if encrypted else None
    messages = [
        keystore_message(envelope=envelope, facts=facts, keystore=b"0\x82" * 900, encrypt=encrypt),
        password_message(
            envelope=envelope,
            facts=facts,
            password="Xy7-abcdefghijkl",
            revocation_code="ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23",
            encrypt=encrypt,
        ),
        revocation_message(envelope=envelope, facts=facts, encrypt=encrypt),
        expiry_message(envelope=envelope, facts=facts, encrypt=encrypt),
    ]
    for django_message in messages:
        message = django_message.message()
        assert as_wire_bytes(message) == _compat32_bytes(message)


def test_random_header_values_fold_as_compat32_would() -> None:
    """Lengths on both sides of the line's limit, runs of spaces and tabs, separators."""
    chooser = random.Random(20261207)
    alphabet = string.ascii_letters + string.digits + ' \t;,="<>@.-()'
    fast = _WirePolicy(linesep="\r\n")
    standard = compat32.clone(linesep="\r\n")
    for _ in range(5000):
        name = chooser.choice(["Subject", "Content-Type", "X", "Content-Disposition"])
        value = "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 90)))
        assert fast.fold_binary(name, value) == standard.fold_binary(name, value), (name, value)
    for value in ("multi\n line", "caf\u00e9", "a" * 200, "x " * 60):
        assert fast.fold_binary("Subject", value) == standard.fold_binary("Subject", value)


def _keystore_mail() -> Message:
    envelope = Envelope(
        to="anne.muller@cabinet.lu",
        message_id="<a1b2c3d4e5f6.keystore@mycert.esante.lu>",
        language="fr",
        pgp_fingerprint="",
    )
    return keystore_message(
        envelope=envelope, facts=_facts("Anne Muller"), keystore=b"0\x82" * 900, encrypt=None
    ).message()


def test_serialising_compiles_no_regular_expression_per_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The standard library's boundary check compiles a pattern made for each random
    # boundary (never in re's cache): five or so per certificate.
    compiled: list[object] = []
    original = BytesGenerator._compile_re.__func__  # type: ignore[attr-defined]

    def counting(cls: type, pattern: str, flags: int) -> object:
        compiled.append(pattern)
        return original(cls, pattern, flags)

    monkeypatch.setattr(BytesGenerator, "_compile_re", classmethod(counting))
    message = _keystore_mail()
    wire = as_wire_bytes(message)
    assert compiled == []
    # Each multipart got a boundary of the standard library's shape, used as delimiters.
    boundaries = [part.get_boundary() for part in message.walk() if part.is_multipart()]
    assert len(boundaries) == 2
    for boundary in boundaries:
        assert boundary is not None
        assert re.fullmatch(r"={15}\d{19}==", boundary)
        assert wire.count(b"\r\n--" + boundary.encode() + b"--\r\n") == 1
    assert len(set(boundaries)) == 2


def test_a_boundary_found_in_the_parts_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 2046 §5.1.1: the delimiter must not occur in an encapsulated part.
    import secrets

    from mycert.mail import messages

    draws = iter([7, 7, 8])
    monkeypatch.setattr(secrets, "randbelow", lambda _: next(draws))
    taken = "=" * 15 + f"{7:019d}" + "=="
    text = b"some text\r\n--" + taken.encode() + b"\r\nmore"
    assert messages._WireGenerator._make_boundary(None) == taken
    assert messages._WireGenerator._make_boundary(text) == "=" * 15 + f"{8:019d}" + "=="
