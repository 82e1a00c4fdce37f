"""Vendors ("éditeurs") and their OpenPGP keys (DESIGN.md §2, §4).

A key is checked when it is entered (one public key, not expired or revoked, able to
encrypt) and its fingerprint pinned; the vendor's deliveries are encrypted to that
fingerprint only. The admin form and ``manage.py add_vendor`` both come here.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from mycert.mail.gpg import KeyInfo, OpenPgp
from mycert.models import Vendor
from mycert.services.audit import audit_record

__all__ = ["clean_pgp_key", "openpgp", "vendor_create", "vendor_set_pgp_key"]


@cache
def _openpgp(home: str, binary: str) -> OpenPgp:
    return OpenPgp(home, binary=binary)


def openpgp() -> OpenPgp:
    """MyCert's GnuPG home (``MYCERT_GNUPG_HOME``), one wrapper per process."""
    return _openpgp(str(settings.MYCERT_GNUPG_HOME), settings.MYCERT_GPG_BINARY)


def clean_pgp_key(armored: str, *, now: datetime) -> KeyInfo:
    """Validate a pasted or uploaded key for a Django form (``ValidationError`` if unusable)."""
    try:
        return openpgp().inspect_public_key(armored, now=now)
    except (TypeError, ValueError) as exc:
        raise ValidationError(str(exc), code="invalid_pgp_key") from exc


def _key_details(info: KeyInfo | None) -> dict[str, object]:
    if info is None:
        return {"pgp_fingerprint": ""}
    return {
        "pgp_fingerprint": info.fingerprint,
        "pgp_expires_at": info.expires_at.isoformat() if info.expires_at else None,
    }


@transaction.atomic
def vendor_create(
    *,
    name: str,
    email: str,
    pgp_key: str = "",
    legacy_keystore: bool = False,
    actor: str,
    now: datetime,
) -> Vendor:
    """Register a vendor; ``ValueError`` (nothing written) if a value is refused."""
    name = name.strip()
    email = email.strip()
    if not name:
        raise ValueError("The vendor's name is empty.")
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValueError(f"{email!r} is not a valid e-mail address.") from exc
    # Checked before any database access: a refused key changes nothing.
    info = openpgp().inspect_public_key(pgp_key, now=now) if pgp_key.strip() else None
    # Case-insensitive beyond ASCII ("Éditeur" = "éditeur"), which SQLite's iexact is
    # not; the agency's list is short.
    taken = {existing.casefold() for existing in Vendor.objects.values_list("name", flat=True)}
    if name.casefold() in taken:
        raise ValueError(f"A vendor named {name!r} already exists.")
    vendor = Vendor.objects.create(
        name=name,
        email=email,
        pgp_public_key=pgp_key.strip() if info else "",
        pgp_fingerprint=info.fingerprint if info else "",
        pgp_expires_at=info.expires_at if info else None,
        legacy_keystore=legacy_keystore,
    )
    audit_record(
        actor=actor,
        action="vendor.created",
        target=vendor,
        details={"name": vendor.name, "legacy_keystore": legacy_keystore, **_key_details(info)},
    )
    return vendor


@transaction.atomic
def vendor_set_pgp_key(*, vendor_id: int, pgp_key: str, actor: str, now: datetime) -> Vendor:
    """Replace (or, with an empty key, remove) a vendor's OpenPGP key.

    Deliveries already created stay pinned to the old fingerprint; a failed one picks
    up the new key when the helpdesk retries it (``delivery_retry``).
    """
    vendor = Vendor.objects.select_for_update().get(pk=vendor_id)
    info = openpgp().inspect_public_key(pgp_key, now=now) if pgp_key.strip() else None
    previous = vendor.pgp_fingerprint
    vendor.pgp_public_key = pgp_key.strip() if info else ""
    vendor.pgp_fingerprint = info.fingerprint if info else ""
    vendor.pgp_expires_at = info.expires_at if info else None
    vendor.save(update_fields=["pgp_public_key", "pgp_fingerprint", "pgp_expires_at"])
    audit_record(
        actor=actor,
        action="vendor.pgp_key_set" if info else "vendor.pgp_key_removed",
        target=vendor,
        details={"previous_fingerprint": previous, **_key_details(info)},
    )
    return vendor
