"""What an outbox e-mail says: the facts read under the claim's lock, and its builder."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage

from mycert.mail.anchor import vendor_anchor
from mycert.mail.gpg import OpenPgpError, openpgp
from mycert.mail.messages import (
    CertificateFacts,
    Encryptor,
    Envelope,
    expiry_message,
    keystore_message,
    password_message,
    revocation_message,
)
from mycert.mail.transport import SendError
from mycert.models import Certificate, Delivery
from mycert.sealing import SealError, unseal

__all__ = [
    "Claim",
    "RecipientRefused",
    "build",
    "claim_of",
    "password_payload_open",
    "password_payload_with_code",
]


class RecipientRefused(SendError):
    """A vendor copy whose address or key is not the one confirmed on this worker host.

    Permanent, and not an operational failure: someone changed where the copy goes
    without a security officer's confirmation (``mycert.mail.anchor``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(False, f"refused: {reason}")


@dataclass(frozen=True)
class Claim:
    """What the send step needs, read while the row was locked."""

    delivery_id: int
    certificate_id: int
    recipient: str
    content: str
    vendor_id: int | None
    #: The row this one is sent after (its keystore e-mail), if any.
    after_id: int | None
    envelope: Envelope
    facts: CertificateFacts
    sealed_payload: bytes | None
    attempts: int


def claim_of(delivery: Delivery, now: datetime) -> Claim:
    """Copy what sending ``delivery`` needs out of its locked row (and its joins)."""
    certificate = delivery.certificate
    professional = certificate.professional
    return Claim(
        delivery_id=delivery.pk,
        certificate_id=delivery.certificate_id,
        recipient=delivery.recipient,
        content=delivery.content,
        vendor_id=delivery.vendor_id,
        after_id=delivery.after_id,
        envelope=Envelope(
            to=delivery.to_email,
            message_id=delivery.message_id,
            language=delivery.language,
            pgp_fingerprint=delivery.pgp_fingerprint,
        ),
        facts=CertificateFacts(
            serial=certificate.serial,
            professional_name=professional.full_name,
            professional_id=professional.professional_id,
            not_after=certificate.not_after,
            vendor_name=delivery.vendor.name if delivery.vendor is not None else "",
            extra=_notice_facts(delivery, certificate, now),
        ),
        sealed_payload=(
            bytes(delivery.sealed_payload) if delivery.sealed_payload is not None else None
        ),
        attempts=delivery.attempts,
    )


def _notice_facts(delivery: Delivery, certificate: Certificate, now: datetime) -> dict[str, object]:
    """What a notice says beyond the certificate itself, read when it is sent."""
    content = delivery.content
    if content == Delivery.Content.REVOCATION_NOTICE:
        superseded = certificate.revocation_reason == Certificate.RevocationReason.SUPERSEDED
        replacement = (
            Certificate.objects.filter(
                professional_id=certificate.professional_id, issued_at__gt=certificate.issued_at
            )
            .not_revoked()
            .order_by("-issued_at")
            .first()
            if superseded
            else None
        )
        return {
            "revoked_at": certificate.revoked_at,
            "reason": certificate.revocation_reason,
            # Lazy: rendered in the mail's language by the builder's translation override.
            "reason_label": Certificate.RevocationReason(certificate.revocation_reason).label
            if certificate.revocation_reason
            else "",
            "via": certificate.revoked_via,
            "superseded": superseded,
            "replacement_serial_prefix": replacement.serial[:16].lower() if replacement else "",
            "replacement_not_after": replacement.not_after if replacement else None,
        }
    if (
        content == Delivery.Content.PASSWORD
        and delivery.recipient == Delivery.Recipient.PROFESSIONAL
    ):
        # The last e-mail of a new certificate says when the older one stops working
        # (``certificates_supersede``, MYCERT_SUPERSEDE_AFTER_DAYS after delivery).
        previous_serial = (
            Certificate.objects.filter(
                professional_id=certificate.professional_id, issued_at__lt=certificate.issued_at
            )
            .valid(now)
            .order_by("-issued_at")
            .values_list("serial", flat=True)  # all it says of it: one column, not the row
            .first()
        )
        if previous_serial is None:
            return {}
        days = settings.MYCERT_SUPERSEDE_AFTER_DAYS
        return {
            "previous_serial_prefix": previous_serial[:16].lower(),
            "previous_revoked_at_once": days == 0,
            "previous_revoked_on": now + timedelta(days=days),
        }
    if content == Delivery.Content.EXPIRY_REMINDER:
        # Counted when the mail leaves, not when the row was written: a mail delayed by
        # retries still tells the truth.
        return {"days_left": max(math.ceil((certificate.not_after - now) / timedelta(days=1)), 0)}
    return {}


def _keystore(claim: Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return keystore_message(
        envelope=claim.envelope, facts=claim.facts, keystore=payload, encrypt=encrypt
    )


def password_payload_with_code(password: str, revocation_code: str) -> bytes:
    """What the professional's password row seals: the password and the revocation code.

    A JSON object; a payload that is not one is a bare password (a vendor's copy, and
    rows sealed before revocation codes existed). No password starts with ``{``.
    """
    return json.dumps({"password": password, "revocation_code": revocation_code}).encode()


def password_payload_open(payload: bytes) -> tuple[str, str]:
    """``(password, revocation code or "")`` from an unsealed password payload."""
    if payload.startswith(b"{"):
        opened = json.loads(payload)
        return str(opened["password"]), str(opened.get("revocation_code") or "")
    return payload.decode(), ""


def _password(claim: Claim, payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    password, revocation_code = password_payload_open(payload)
    if claim.recipient != Delivery.Recipient.PROFESSIONAL:
        revocation_code = ""  # the holder's alone: never in a vendor's copy
    return password_message(
        envelope=claim.envelope,
        facts=claim.facts,
        password=password,
        revocation_code=revocation_code,
        encrypt=encrypt,
    )


def _revocation(claim: Claim, _payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return revocation_message(envelope=claim.envelope, facts=claim.facts, encrypt=encrypt)


def _expiry(claim: Claim, _payload: bytes, encrypt: Encryptor | None) -> EmailMessage:
    return expiry_message(envelope=claim.envelope, facts=claim.facts, encrypt=encrypt)


#: One builder per ``Delivery.Content``. Notices carry no payload (``b""``).
_BUILDERS: dict[str, Callable[[Claim, bytes, Encryptor | None], EmailMessage]] = {
    Delivery.Content.KEYSTORE: _keystore,
    Delivery.Content.PASSWORD: _password,
    Delivery.Content.REVOCATION_NOTICE: _revocation,
    Delivery.Content.EXPIRY_REMINDER: _expiry,
}


def _refuse_unconfirmed_vendor(claim: Claim, now: datetime) -> None:
    """Raise ``RecipientRefused`` unless this vendor's row agrees with the worker's anchor.

    The row's address and fingerprint were written by whoever can write to the
    database; only what a security officer confirmed on this host counts.
    """
    if claim.recipient != Delivery.Recipient.VENDOR and claim.vendor_id is None:
        return
    refusal = vendor_anchor().refusal(
        vendor_id=claim.vendor_id,
        email=claim.envelope.to,
        fingerprint=claim.envelope.pgp_fingerprint,
        now=now,
    )
    if refusal:
        raise RecipientRefused(refusal)


def build(claim: Claim, now: datetime) -> EmailMessage:
    """Open the payload and build the e-mail; ``SendError`` (permanent) if impossible.

    A vendor copy is checked against the worker's anchor first: ``RecipientRefused``.
    """
    builder = _BUILDERS.get(claim.content)
    if builder is None:
        raise SendError(False, f"no e-mail is defined for content {claim.content!r}")
    _refuse_unconfirmed_vendor(claim, now)
    encrypt: Encryptor | None = None
    if claim.envelope.pgp_fingerprint:
        # The keyring directly, not the vendor service: the outbox calls no workflow.
        keyring = openpgp()

        def encrypt(data: bytes, fingerprint: str) -> bytes:
            return keyring.encrypt(data, fingerprint, now=now)

    try:
        payload = (
            unseal(claim.sealed_payload, recipient=claim.envelope.to)
            if claim.sealed_payload is not None
            else b""
        )
        return builder(claim, payload, encrypt)
    except SealError as exc:
        raise SendError(False, f"sealed payload unreadable: {exc}") from exc
    except OpenPgpError as exc:
        # The pinned key expired, was revoked or replaced: only a person can fix that.
        raise SendError(False, f"OpenPGP: {exc}") from exc
