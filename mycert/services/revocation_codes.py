"""Revoke without logging in: each certificate's one-time revocation code (issue 23).

A professional who lost the computer with the keystore may have lost the LuxTrust means
too. The password e-mail (2/2) gives them, beside the password, a code that revokes that
certificate at « Révoquer sans connexion ». The code is made by the issuing worker,
sealed with the password until its e-mail is accepted (``mycert.outbox``), and kept
nowhere else: the certificate row holds a slow hash of it (scrypt, RFC 7914), which
is emptied once the code has been used.

The page says the same thing, in about the same time, whether the serial is unknown,
the certificate revoked or expired, or the code wrong: it always hashes
``CANDIDATES_MAX`` times. The code carries 145 bits; the slow hash and the page's rate
limits are defence in depth, not what keeps it unguessable.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.hashers import ScryptPasswordHasher
from django.db import transaction
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from mycert.models import Certificate
from mycert.pki import canonical_revocation_code, generate_revocation_code
from mycert.services.revocation import certificate_revoke

__all__ = [
    "CANDIDATES_MAX",
    "CodeRevocationRefused",
    "RevocationCodeMatch",
    "certificate_revoke_with_code",
    "revocation_code_candidates",
    "revocation_code_hash",
    "revocation_code_match",
    "revocation_code_new",
]

logger = logging.getLogger(__name__)

#: How many certificates one identifier may designate: a professional identifier has
#: two valid certificates while an older one waits to be superseded. Every attempt
#: hashes this many times, whatever it finds.
CANDIDATES_MAX = 2
#: Below this many hex digits an identifier is not read as a serial (the e-mails give
#: 16, in the keystore's file name; 64 random bits never collide among MyCert's).
SERIAL_PREFIX_MIN_DIGITS = 16
_SERIAL_SEPARATORS = re.compile(r"[\s:\-]+")
_HEX = re.compile(r"[0-9a-f]+")


class CodeRevocationRefused(Exception):
    """The certificate may no longer be revoked with its code (revoked, expired meanwhile)."""


class _CodeHasher(ScryptPasswordHasher):
    """Django's scrypt hasher with one lane: N and r stay in the stored string (RFC 7914)."""

    parallelism = 1

    def __init__(self) -> None:
        # N = 2^14, r = 8: scrypt's parameters for interactive logins (16 MiB, tens of ms).
        self.work_factor = settings.MYCERT_REVOCATION_CODE_SCRYPT_N
        # Room for the N and r a stored hash names (hashlib's default stops at 32 MiB).
        self.maxmem = 256 * self.block_size * max(self.work_factor, 2**14)


# Error reports of a web request (Django's technical 500, AdminEmailHandler) show each
# frame's variables: these names are hidden here and in the frames called from here
# (Django's hashers take the code as ``password``).
@sensitive_variables("code", "password")
def revocation_code_hash(code: str) -> str:
    """The slow, salted hash stored for ``code`` (``scrypt$N$salt$r$p$hash``)."""
    hasher = _CodeHasher()
    return hasher.encode(code, hasher.salt())


@sensitive_variables("code", "password")
def revocation_code_new() -> tuple[str, str]:
    """A fresh code and its hash: the code for the sealed password e-mail, the hash for the row."""
    code = generate_revocation_code()
    return code, revocation_code_hash(code)


def _serial_q(identifier: str) -> Q | None:
    """The stored serials (hex, lower case, no leading zero) ``identifier`` may spell."""
    text = identifier.strip()
    # openssl prints « serial=0D48… »; viewers print « 0d:48:… » or « 0D 48 … ».
    if text[:7].lower() == "serial=":
        text = text[7:]
    digits = _SERIAL_SEPARATORS.sub("", text).lower().removeprefix("0x")
    if len(digits) < SERIAL_PREFIX_MIN_DIGITS or not _HEX.fullmatch(digits):
        return None
    return Q(serial__startswith=digits.lstrip("0") or "0")


def revocation_code_candidates(*, identifier: str, now: datetime) -> list[int]:
    """The valid certificates with a code that ``identifier`` names, newest first.

    ``identifier`` is a serial (whole, or its first 16 hex digits as in the keystore's
    file name, in any usual spelling) or a professional identifier. At most
    ``CANDIDATES_MAX``: an older certificate beyond them is found by its serial.
    """
    if not identifier.strip():
        return []
    named = Q(professional__professional_id__iexact=identifier.strip())
    serial = _serial_q(identifier)
    if serial is not None:
        named |= serial
    return list(
        Certificate.objects.valid(now)
        .filter(named)
        .exclude(revocation_code_hash="")
        .order_by("-issued_at")
        .values_list("pk", flat=True)[:CANDIDATES_MAX]
    )


@dataclass(frozen=True)
class RevocationCodeMatch:
    certificate_id: int


@sensitive_variables("code", "canonical", "password")
def revocation_code_match(*, candidates: list[int], code: str) -> RevocationCodeMatch | None:
    """The candidate ``code`` revokes, or None; always ``CANDIDATES_MAX`` hashes of work.

    A code typed out of shape (``canonical_revocation_code``) is hashed all the same, so
    that its refusal takes as long as any other.
    """
    hasher = _CodeHasher()
    canonical = canonical_revocation_code(code) or code
    stored = dict(
        Certificate.objects.filter(pk__in=candidates[:CANDIDATES_MAX]).values_list(
            "pk", "revocation_code_hash"
        )
    )
    found: int | None = None
    for slot in range(CANDIDATES_MAX):
        certificate_id = candidates[slot] if slot < len(candidates) else None
        encoded = stored.get(certificate_id) if certificate_id is not None else None
        if encoded:
            if hasher.verify(canonical, encoded) and found is None:
                found = certificate_id
        else:
            # Nothing to compare with: the same work, so that timing says nothing.
            hasher.encode(canonical, hasher.salt())
    return RevocationCodeMatch(found) if found is not None else None


def certificate_revoke_with_code(*, certificate_id: int, reason: str, now: datetime) -> Certificate:
    """Revoke a certificate whose code was checked; the code is spent with it.

    Through ``certificate_revoke`` with ``via = code``: its audit event, the notices to
    the professional and the vendor, OCSP and CRL on commit, the helpdesk alerted of a
    key compromise. The stored hash is emptied in the same transaction, so the code
    never works twice. ``CodeRevocationRefused`` if the certificate was revoked, or
    expired, or its code spent, since the code was checked (the page's first step).
    """
    if reason not in (
        Certificate.RevocationReason.KEY_COMPROMISE,
        Certificate.RevocationReason.CESSATION_OF_OPERATION,
    ):
        raise ValueError(
            f"A revocation code revokes for keyCompromise or cessationOfOperation, not {reason!r}."
        )
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate_id)
        if (
            certificate.revoked_at is not None
            or certificate.not_after <= now
            or not certificate.revocation_code_hash
        ):
            raise CodeRevocationRefused(
                f"Certificate {certificate.pk} can no longer be revoked with its code."
            )
        Certificate.objects.filter(pk=certificate.pk).update(revocation_code_hash="")
        revoked = certificate_revoke(
            certificate_id=certificate.pk,
            reason=reason,
            via=Certificate.RevokedVia.CODE,
            actor=None,
            now=now,
        )
    logger.info("certificate %s revoked with its revocation code", certificate_id)
    return revoked
