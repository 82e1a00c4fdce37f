"""Build MyCert's e-mails as Django ``EmailMessage`` objects.

Each kind of mail is one small builder that renders ``templates/emails/<lang>/<kind>*``
(subject, text, HTML) and hands the result to :func:`_finish`, which adds the common
headers and, when the recipient's OpenPGP key is pinned, wraps everything in PGP/MIME.
A revocation notice or an expiry reminder is one more builder of the same shape.

Bodies are whole templates per language (fr, de, en) rather than gettext fragments:
installation steps read better translated as one text, and they stay reviewable by the
agency's translators as plain files.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.encoders import encode_7or8bit
from email.generator import BytesGenerator
from email.message import Message
from email.mime.application import MIMEApplication
from email.policy import Compat32
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.message import SafeMIMEMultipart
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

__all__ = [
    "LANGUAGES",
    "CertificateFacts",
    "Encryptor",
    "Envelope",
    "PgpMimeMessage",
    "as_wire_bytes",
    "expiry_message",
    "french_de",
    "keystore_filename",
    "keystore_message",
    "mail_language",
    "password_message",
    "renew_url",
    "revocation_message",
    "revoke_without_login_url",
]

#: Languages with e-mail templates; anything else falls back to the first.
LANGUAGES = ("fr", "de", "en")

#: ``encrypt(data, fingerprint) -> ASCII-armored OpenPGP message``.
Encryptor = Callable[[bytes, str], bytes]

PKCS12_MIMETYPE = "application/x-pkcs12"


@dataclass(frozen=True)
class Envelope:
    """Who receives one e-mail, in which language, under which Message-ID."""

    to: str
    #: RFC 5322 §3.6.4 ``<id-left@id-right>``; stable across retries so that a resend
    #: after a crash can be recognised as the same message.
    message_id: str
    language: str = "fr"
    #: Pinned OpenPGP fingerprint; empty means the mail leaves unencrypted.
    pgp_fingerprint: str = ""


@dataclass(frozen=True)
class CertificateFacts:
    """What an e-mail says about a certificate and whose it is."""

    serial: str
    professional_name: str
    professional_id: str
    not_after: datetime
    #: Set for a vendor's copy: the mail then says whose certificate it carries.
    vendor_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def for_vendor(self) -> bool:
        return bool(self.vendor_name)

    @property
    def serial_prefix(self) -> str:
        return self.serial[:16].lower()


@dataclass(frozen=True)
class _Rendered:
    subject: str
    text: str
    html: str


def mail_language(language: str) -> str:
    """The template language for a request's language code (``de-LU`` → ``de``)."""
    code = (language or "").replace("_", "-").split("-")[0].lower()
    return code if code in LANGUAGES else LANGUAGES[0]


# French elides « de » before a vowel sound (« d'Anne », « d'Yves ») and before a mute h.
# Whether an h is mute is a property of each word, not of the letter: these are the given
# names commonly written with « d' »; others (Hans, Hugues, Heinz) keep « de ».
_FRENCH_VOWELS = frozenset("aeiouàâäéèêëîïôöùûüœæ")
_FRENCH_MUTE_H_NAMES = frozenset(
    {"hélène", "héloïse", "henri", "henriette", "hervé", "honoré", "hortense", "hugo", "hubert"}
)


def french_de(name: str) -> str:
    """« de ``name`` », elided to « d'``name`` » before a vowel or a mute h (« d'Anne »)."""
    stripped = name.strip()
    lowered = stripped.lower()
    first_word = lowered.split(" ", 1)[0].split("-", 1)[0]
    # A y sounds as a vowel before a consonant (« d'Yves »), as a consonant before a
    # vowel (« de Yasmine »).
    y_vowel = lowered[:1] == "y" and lowered[1:2] not in _FRENCH_VOWELS
    if lowered[:1] in _FRENCH_VOWELS or y_vowel or first_word in _FRENCH_MUTE_H_NAMES:
        return f"d'{stripped}"
    return f"de {stripped}"


def keystore_filename(serial: str) -> str:
    """The attachment's name, ``mycert-<first 16 hex digits of the serial>.p12``."""
    return f"mycert-{serial[:16].lower()}.p12"


def renew_url() -> str:
    """Where a professional asks for a new certificate: ``{MYCERT_BASE_URL}/request/``."""
    return f"{settings.MYCERT_BASE_URL}{reverse('request-certificate')}"


def revoke_without_login_url() -> str:
    """« Révoquer sans connexion »: ``{MYCERT_BASE_URL}/revoke/``."""
    return f"{settings.MYCERT_BASE_URL}{reverse('revoke-without-login')}"


def _context(facts: CertificateFacts, language: str, **extra: Any) -> dict[str, Any]:
    return {
        "language": language,
        "professional_name": facts.professional_name,
        # French « de Pierre Muller » / « d'Anne Muller » (the other languages do not elide).
        "de_professional_name": french_de(facts.professional_name),
        "professional_id": facts.professional_id,
        "serial": facts.serial.lower(),
        "serial_prefix": facts.serial_prefix,
        "not_after": facts.not_after,
        "for_vendor": facts.for_vendor,
        "vendor_name": facts.vendor_name,
        "filename": keystore_filename(facts.serial),
        "helpdesk_email": settings.MYCERT_HELPDESK_EMAIL,
        "helpdesk_phone": settings.MYCERT_HELPDESK_PHONE,
        "base_url": settings.MYCERT_BASE_URL,
        "renew_url": renew_url(),
        "revoke_url": revoke_without_login_url(),
        "check_url": f"{settings.MYCERT_CHECK_BASE_URL}/" if settings.MYCERT_CHECK_BASE_URL else "",
        **facts.extra,
        **extra,
    }


def _one_line(text: str) -> str:
    # A subject is one header line: template newlines must not become header folding.
    return re.sub(r"\s+", " ", text).strip()


#: UTF-8 bytes per RFC 2047 encoded-word: base64 makes 60 characters of them, 72 with
#: ``=?utf-8?b?`` and ``?=``, under the 75 that RFC 2047 §2 allows.
_ENCODED_WORD_BYTES = 45


def _encoded_subject(subject: str) -> str:
    """``subject`` as RFC 2047 encoded-words (B encoding) when it is not ASCII.

    Django hands a non-ASCII header to ``email.header.Header``, whose encoder re-encodes
    the growing line at every character to find where to fold (quadratic: about 1 ms for
    a subject, four subjects per certificate). One pass here gives the same decoded text;
    readers ignore the space between adjacent encoded-words (RFC 2047 §6.2).
    """
    if subject.isascii():
        return subject
    words: list[bytes] = []
    word = b""
    for character in subject:
        encoded = character.encode()
        if len(word) + len(encoded) > _ENCODED_WORD_BYTES:
            words.append(word)
            word = b""
        word += encoded
    words.append(word)
    return " ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _render(kind: str, language: str, context: dict[str, Any]) -> _Rendered:
    """Render ``emails/<language>/<kind>.subject.txt``, ``.txt`` and ``.html``."""
    # The override localises dates and numbers ({{ not_after|date }}) to the mail's
    # language, whatever the worker's active language.
    with translation.override(language):
        return _Rendered(
            subject=_one_line(render_to_string(f"emails/{language}/{kind}.subject.txt", context)),
            text=render_to_string(f"emails/{language}/{kind}.txt", context),
            html=render_to_string(f"emails/{language}/{kind}.html", context),
        )


def _neutral_subject(language: str, part: str) -> str:
    # The outer subject travels in clear: a counter tells the keystore (1/2) from its
    # password (2/2) before decryption, and names no one.
    with translation.override(language):
        return _one_line(
            render_to_string(f"emails/{language}/encrypted.subject.txt", {"part": part})
        )


class PgpMimeMessage(EmailMessage):
    """An e-mail whose whole MIME body is OpenPGP-encrypted (RFC 3156 §4).

    The clear headers (From, To, Date, Message-ID and a neutral Subject) are the only
    readable part; the real subject travels inside as a protected header.
    """

    def __init__(self, *, armored: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.armored = armored

    def _create_message(self, msg: Any) -> SafeMIMEMultipart:  # noqa: ARG002 - Django's hook
        # RFC 3156 §4: multipart/encrypted with protocol="application/pgp-encrypted";
        # first part application/pgp-encrypted carrying "Version: 1", second part
        # application/octet-stream carrying the ASCII-armored OpenPGP message.
        version = MIMEApplication(b"Version: 1\r\n", "pgp-encrypted", _encoder=encode_7or8bit)
        version["Content-Description"] = "PGP/MIME version identification"
        data = MIMEApplication(self.armored, "octet-stream", _encoder=encode_7or8bit)
        data["Content-Description"] = "OpenPGP encrypted message"
        data.add_header("Content-Disposition", "inline", filename="encrypted.asc")
        return SafeMIMEMultipart(
            "encrypted",
            _subparts=[version, data],
            encoding=self.encoding,
            protocol="application/pgp-encrypted",
        )


class _WirePolicy(Compat32):
    """Django's messages' policy (compat32), with a short cut for the headers that need
    no folding.

    compat32 hands every header to ``email.header.Header``, whose folding machinery
    costs about as much as the rest of the serialisation (some sixty headers per
    certificate). A one-line ASCII header that fits the line already is written as it
    would come out of it (RFC 5322 §2.2.3: folding is only for long lines);
    ``tests/test_mail_wire.py`` compares the two on real messages and random values.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        limit = self.max_line_length
        if (
            isinstance(value, str)
            and value.isascii()
            and "\n" not in value
            and "\r" not in value
            and limit is not None
            and len(name) + 2 + len(value) <= limit
        ):
            return f"{name}: {value}{self.linesep}"
        folded: str = super()._fold(name, value, sanitize)  # type: ignore[misc]
        return folded


_WIRE_POLICY = _WirePolicy(linesep="\r\n")


class _WireGenerator(BytesGenerator):
    """The standard library's generator, with a boundary check that compiles nothing.

    For each multipart without a boundary the standard library draws one and checks it
    against the parts' text with a regular expression made for that boundary: a random
    pattern, never in ``re``'s cache, so compiled anew for every multipart (five or so
    per certificate, a third of the serialisation's time). Here the check is a plain
    search for the delimiter anywhere in the parts, stricter than the line the standard
    library looks for (RFC 2046 §5.1.1: the delimiter must not occur in any
    encapsulated part); the boundary has the standard library's shape.
    """

    @classmethod
    def _make_boundary(cls, text: bytes | None = None) -> str:
        while True:
            boundary = "=" * 15 + f"{secrets.randbelow(10**19):019d}" + "=="
            if text is None or b"--" + boundary.encode("ascii") not in text:
                return boundary


def as_wire_bytes(message: Message) -> bytes:
    """Serialise a MIME message with CRLF line ends, as SMTP and RFC 3156 §3 want it."""
    buffer = BytesIO()
    _WireGenerator(buffer, mangle_from_=False, policy=_WIRE_POLICY).flatten(message)
    return buffer.getvalue()


def _finish(
    *,
    envelope: Envelope,
    rendered: _Rendered,
    language: str,
    attachments: list[tuple[str, bytes, str]],
    encrypt: Encryptor | None,
    part: str = "",
) -> EmailMessage:
    """Assemble text, HTML and attachments; encrypt the whole entity when a key is pinned.

    ``part`` (« 1/2 », « 2/2 ») is the only hint the encrypted mail's outer subject gives.
    """
    headers = {
        "Message-ID": envelope.message_id,
        "Content-Language": language,  # RFC 3282
        "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation auto-replies
    }
    plain = EmailMultiAlternatives(
        subject=_encoded_subject(rendered.subject),
        body=rendered.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[envelope.to],
        headers=headers,
    )
    plain.attach_alternative(rendered.html, "text/html")
    for filename, content, mimetype in attachments:
        plain.attach(filename, content, mimetype)
    if not envelope.pgp_fingerprint:
        return plain
    if encrypt is None:
        raise ValueError(
            "This mail must be encrypted (a key is pinned) but no encryptor was given."
        )
    inner = plain.message()
    # Protected headers (the "Memory Hole" convention Thunderbird and others read): the
    # real subject is shown after decryption; the outer one says nothing.
    inner.set_param("protected-headers", "v1")
    # RFC 3156 §4 encrypts a complete MIME entity; CRLF is its canonical form (§3).
    armored = encrypt(as_wire_bytes(inner), envelope.pgp_fingerprint)
    return PgpMimeMessage(
        armored=armored,
        subject=_encoded_subject(_neutral_subject(language, part)),
        body="",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[envelope.to],
        headers=headers,
    )


def keystore_message(
    *,
    envelope: Envelope,
    facts: CertificateFacts,
    keystore: bytes,
    encrypt: Encryptor | None = None,
) -> EmailMessage:
    """The first e-mail: the PKCS#12 keystore, how to install it, what to do on compromise."""
    language = mail_language(envelope.language)
    # A vendor's encrypted copy says how to take the .p12 out without an OpenPGP mail client.
    context = _context(facts, language, encrypted=bool(envelope.pgp_fingerprint))
    rendered = _render("keystore", language, context)
    return _finish(
        envelope=envelope,
        rendered=rendered,
        language=language,
        attachments=[(keystore_filename(facts.serial), keystore, PKCS12_MIMETYPE)],
        encrypt=encrypt,
        part="1/2",
    )


def password_message(
    *,
    envelope: Envelope,
    facts: CertificateFacts,
    password: str,
    revocation_code: str = "",
    encrypt: Encryptor | None = None,
) -> EmailMessage:
    """The second e-mail: the keystore's password and a pointer to the first mail.

    The professional's also carries the certificate's ``revocation_code`` (the vendor's
    copy says how the professional revokes, without the code).
    """
    language = mail_language(envelope.language)
    context = _context(facts, language, password=password, revocation_code=revocation_code)
    with translation.override(language):
        context["keystore_subject"] = _one_line(
            render_to_string(f"emails/{language}/keystore.subject.txt", context)
        )
    rendered = _render("password", language, context)
    return _finish(
        envelope=envelope,
        rendered=rendered,
        language=language,
        attachments=[],
        encrypt=encrypt,
        part="2/2",
    )


def _notice(
    kind: str, *, envelope: Envelope, facts: CertificateFacts, encrypt: Encryptor | None
) -> EmailMessage:
    """A notice without attachment, rendered from ``templates/emails/<lang>/<kind>.*``."""
    language = mail_language(envelope.language)
    rendered = _render(kind, language, _context(facts, language))
    return _finish(
        envelope=envelope, rendered=rendered, language=language, attachments=[], encrypt=encrypt
    )


def revocation_message(
    *,
    envelope: Envelope,
    facts: CertificateFacts,
    encrypt: Encryptor | None = None,
) -> EmailMessage:
    """The certificate was revoked: what it means, what to do (``facts.extra``: reason, via…)."""
    return _notice("revocation", envelope=envelope, facts=facts, encrypt=encrypt)


def expiry_message(
    *,
    envelope: Envelope,
    facts: CertificateFacts,
    encrypt: Encryptor | None = None,
) -> EmailMessage:
    """The certificate ends soon (``facts.extra["days_left"]``): how to ask for a new one."""
    return _notice("expiry", envelope=envelope, facts=facts, encrypt=encrypt)
