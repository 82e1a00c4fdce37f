"""Vendors ("éditeurs") and their OpenPGP keys (docs/architecture.md « Roles », « Delivery: the
outbox »).

A key is checked when it is entered (one public key, not expired or revoked, able to
encrypt) and its fingerprint pinned; the vendor's deliveries are encrypted to that
fingerprint only. The admin form and ``manage.py add_vendor`` both come here.

Vendors decide where copies of keystores and passwords go: only superusers add or
change them (the helpdesk only views them, docs/architecture.md « Roles »), every change is
audited, and
the agency's security officer gets an e-mail (``MYCERT_SECURITY_EMAIL``).

A row is only a proposal to the workers (issue 20 §3): they send a vendor's copies only
where a security officer confirmed them on the worker host (``mycert.mail.anchor``).
``vendor_add_confirmed`` (``manage.py add_vendor``) adds and confirms at once;
``vendor_confirm`` (``manage.py confirm_vendor``) confirms a change made in the admin,
after ``vendor_confirmation_preview`` showed the address and the fingerprint.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from mycert.mail.anchor import AnchoredVendor, vendor_anchor
from mycert.mail.gpg import KeyInfo, openpgp
from mycert.models import AuditEvent, OperatorAlert, Vendor
from mycert.services.alerts import operator_alert_create
from mycert.services.audit import actor_display, audit_record

__all__ = [
    "UNCHANGED",
    "VendorConfirmation",
    "clean_pgp_key",
    "vendor_add_confirmed",
    "vendor_confirm",
    "vendor_confirmation_preview",
    "vendor_create",
    "vendor_key_is_usable",
    "vendor_key_misses_address",
    "vendor_set_pgp_key",
    "vendor_update",
]


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
    is_active: bool = True,
    actor: str,
    now: datetime,
) -> Vendor:
    """Register a vendor; ``ValueError`` (nothing written) if a value is refused.

    Audited, and reported to the security officer (``MYCERT_SECURITY_EMAIL``): a new
    vendor is a new place where keystores may go.
    """
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
        is_active=is_active,
    )
    audit_record(
        actor=actor,
        action=AuditEvent.Action.VENDOR_CREATED,
        target=vendor,
        details={
            "name": vendor.name,
            "email": vendor.email,
            "legacy_keystore": legacy_keystore,
            **_key_details(info),
        },
    )
    _alert_security(
        vendor=vendor,
        actor=actor,
        change="created",
        changed={
            field: {"old": None, "new": getattr(vendor, field)} for field in _SENSITIVE_FIELDS
        },
    )
    return vendor


class _Unchanged:
    """Marks an argument of ``vendor_update`` left out (``None`` is no valid value here)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()

# What decides where a vendor's copies of keystores and passwords go, and how protected
# they are: any change to these reaches the security officer, not only the audit trail.
_SENSITIVE_FIELDS = ("email", "pgp_fingerprint", "legacy_keystore", "is_active")


@transaction.atomic
def vendor_update(
    *,
    vendor_id: int,
    actor: str,
    now: datetime,
    name: str = UNCHANGED,
    email: str = UNCHANGED,
    pgp_key: str = UNCHANGED,
    legacy_keystore: bool = UNCHANGED,
    is_active: bool = UNCHANGED,
) -> Vendor:
    """Change a vendor (superusers only, in the admin); audit it and alert security.

    Arguments left out stay as they are; an empty ``pgp_key`` removes the key. Raises
    ``ValueError`` (nothing written) if a value is refused. The audit event lists each
    changed field with its old and new value and, when the e-mail or the key changes,
    the old and new fingerprint: whoever reads the trail sees where copies went before
    and where they go now. Deliveries already created stay pinned to the old
    fingerprint; a failed one picks up the new key when the helpdesk retries it.
    """
    vendor = Vendor.objects.select_for_update().get(pk=vendor_id)
    old = {field: getattr(vendor, field) for field in (*_SENSITIVE_FIELDS, "name")}
    if name is not UNCHANGED:
        name = name.strip()
        if not name:
            raise ValueError("The vendor's name is empty.")
        taken = {
            existing.casefold()
            for existing in Vendor.objects.exclude(pk=vendor.pk).values_list("name", flat=True)
        }
        if name.casefold() in taken:
            raise ValueError(f"A vendor named {name!r} already exists.")
        vendor.name = name
    if email is not UNCHANGED:
        email = email.strip()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise ValueError(f"{email!r} is not a valid e-mail address.") from exc
        vendor.email = email
    key_info: KeyInfo | None = None
    if pgp_key is not UNCHANGED:
        key_info = openpgp().inspect_public_key(pgp_key, now=now) if pgp_key.strip() else None
        vendor.pgp_public_key = pgp_key.strip() if key_info else ""
        vendor.pgp_fingerprint = key_info.fingerprint if key_info else ""
        vendor.pgp_expires_at = key_info.expires_at if key_info else None
    if legacy_keystore is not UNCHANGED:
        vendor.legacy_keystore = bool(legacy_keystore)
    if is_active is not UNCHANGED:
        vendor.is_active = bool(is_active)
    changed = {
        field: {"old": value, "new": getattr(vendor, field)}
        for field, value in old.items()
        if getattr(vendor, field) != value
    }
    if not changed:
        return vendor
    vendor.save()
    details: dict[str, object] = {"changed": changed}
    if "email" in changed or "pgp_fingerprint" in changed:
        details["fingerprint"] = {
            "old": old["pgp_fingerprint"],
            "new": vendor.pgp_fingerprint,
        }
    if key_info is not None:
        details.update(_key_details(key_info))
    audit_record(
        actor=actor, action=AuditEvent.Action.VENDOR_CHANGED, target=vendor, details=details
    )
    if any(field in changed for field in _SENSITIVE_FIELDS):
        _alert_security(vendor=vendor, actor=actor, change="changed", changed=changed)
    return vendor


def vendor_set_pgp_key(*, vendor_id: int, pgp_key: str, actor: str, now: datetime) -> Vendor:
    """Replace (or, with an empty key, remove) a vendor's OpenPGP key."""
    return vendor_update(vendor_id=vendor_id, pgp_key=pgp_key, actor=actor, now=now)


def vendor_key_is_usable(vendor: Vendor, *, now: datetime) -> bool:
    """Whether copies to ``vendor`` can be encrypted: a pinned key, not expired."""
    return bool(vendor.pgp_fingerprint) and (
        vendor.pgp_expires_at is None or vendor.pgp_expires_at > now
    )


def vendor_key_misses_address(vendor: Vendor, *, now: datetime) -> bool:
    """Whether the vendor's key on file lacks its address as a user ID: the workers will
    refuse to confirm it (copies go only to an address of the key they are encrypted to)."""
    if not vendor.pgp_public_key.strip():
        return False
    try:
        key = openpgp().inspect_public_key(vendor.pgp_public_key, now=now)
    except (TypeError, ValueError):
        return False  # judged on entry already; an unusable key is another message
    return not key.carries(vendor.email)


def _alert_security(
    *, vendor: Vendor, actor: str, change: str, changed: dict[str, dict[str, object]]
) -> None:
    operator_alert_create(
        recipient=OperatorAlert.Recipient.SECURITY,
        kind=OperatorAlert.Kind.VENDOR_CHANGED,
        context={
            "vendor_id": vendor.pk,
            "vendor_name": vendor.name,
            "change": change,
            "actor": actor_display(actor),
            "changed": [
                {
                    "field": field,
                    # Lazy: rendered in the agency's language by operator_alert_create.
                    "label": getattr(Vendor._meta.get_field(field), "verbose_name", field),
                    "old": values["old"],
                    "new": values["new"],
                }
                for field, values in changed.items()
            ],
            "email": vendor.email,
            "fingerprint": vendor.pgp_fingerprint,
            "legacy_keystore": vendor.legacy_keystore,
            "is_active": vendor.is_active,
        },
    )


# --- Confirming a vendor on a worker host (issue 20 §3) ------------------------------------


@dataclass(frozen=True)
class VendorConfirmation:
    """What ``confirm_vendor`` shows before a security officer confirms a vendor."""

    vendor_id: int
    name: str
    email: str
    is_active: bool
    #: The key on file in the database, checked now; ``None`` for a vendor without one.
    key: KeyInfo | None
    #: What this worker host confirmed last time, if ever.
    anchored: AnchoredVendor | None
    #: Why it cannot be confirmed as it is (empty: it can).
    problem: str

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint if self.key is not None else ""

    @property
    def up_to_date(self) -> bool:
        """The worker host already sends to exactly this address and key."""
        return (
            self.anchored is not None
            and self.anchored.email == self.email.strip().lower()
            and self.anchored.fingerprint == self.fingerprint
        )


def vendor_confirmation_preview(*, vendor_id: int, now: datetime) -> VendorConfirmation:
    """Read a vendor's row and the worker host's anchor; say what confirming would do."""
    vendor = Vendor.objects.get(pk=vendor_id)
    problem = ""
    key: KeyInfo | None = None
    if vendor.pgp_public_key.strip():
        try:
            key = openpgp().inspect_public_key(vendor.pgp_public_key, now=now)
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        else:
            if key.fingerprint != vendor.pgp_fingerprint:
                problem = (
                    f"The key on file has fingerprint {key.fingerprint}, but the row says "
                    f"{vendor.pgp_fingerprint or '(none)'}: re-enter the key in the admin."
                )
            elif not key.carries(vendor.email):
                problem = (
                    f"The key {key.fingerprint} does not carry the vendor's address "
                    f"{vendor.email} as a user ID (it carries: "
                    f"{', '.join(key.addresses) or 'none'})."
                )
    elif vendor.pgp_fingerprint:
        problem = "The row names a fingerprint but holds no key: re-enter the key in the admin."
    return VendorConfirmation(
        vendor_id=vendor.pk,
        name=vendor.name,
        email=vendor.email,
        is_active=vendor.is_active,
        key=key,
        anchored=vendor_anchor().get(vendor.pk),
        problem=problem,
    )


@transaction.atomic
def vendor_confirm(
    *, vendor_id: int, fingerprint: str, email: str, actor: str, now: datetime
) -> AnchoredVendor | None:
    """Anchor the vendor on this worker host as its row says now; audit it.

    ``fingerprint`` and ``email`` are what the security officer was shown and agreed to
    (or typed, from the vendor's own word): if the row says anything else now, nothing
    is confirmed (``ValueError``). A deactivated vendor is withdrawn from the host
    instead (returns ``None``). Runs on each worker host: the anchor is per host.
    """
    vendor = Vendor.objects.select_for_update().get(pk=vendor_id)
    expected = fingerprint.replace(" ", "").upper()
    if vendor.email.strip().lower() != email.strip().lower() or vendor.pgp_fingerprint != expected:
        raise ValueError(
            f"Vendor {vendor.pk} is not what was confirmed: its row says "
            f"{vendor.email} / {vendor.pgp_fingerprint or 'no key'}. Nothing was confirmed."
        )
    anchor = vendor_anchor()
    host = socket.gethostname()
    if not vendor.is_active:
        withdrawn = anchor.forget(vendor_id=vendor.pk)
        audit_record(
            actor=actor,
            action=AuditEvent.Action.VENDOR_WITHDRAWN,
            target=vendor,
            details={
                "host": host,
                "fingerprint": withdrawn.fingerprint if withdrawn is not None else "",
            },
        )
        return None
    if vendor.pgp_fingerprint:
        key = openpgp().inspect_public_key(vendor.pgp_public_key, now=now)
        if key.fingerprint != vendor.pgp_fingerprint:
            raise ValueError(
                f"The key on file has fingerprint {key.fingerprint}, not "
                f"{vendor.pgp_fingerprint}. Nothing was confirmed."
            )
    # The audit event first: if the anchor refuses, the transaction takes it back.
    audit_record(
        actor=actor,
        action=AuditEvent.Action.VENDOR_CONFIRMED,
        target=vendor,
        details={
            "host": host,
            "email": vendor.email.strip().lower(),
            "fingerprint": vendor.pgp_fingerprint,
        },
    )
    return anchor.confirm(
        vendor_id=vendor.pk,
        name=vendor.name,
        email=vendor.email,
        armored_key=vendor.pgp_public_key if vendor.pgp_fingerprint else "",
        actor=actor,
        now=now,
    )


@transaction.atomic
def vendor_add_confirmed(
    *,
    name: str,
    email: str,
    pgp_key: str = "",
    legacy_keystore: bool = False,
    actor: str,
    now: datetime,
) -> Vendor:
    """Register a vendor and confirm it on this worker host at once (``add_vendor``).

    The person running it brought the key and the address themselves, so they are the
    security officer's confirmation. ``ValueError`` (nothing written) if the key is
    unusable or does not carry the address as a user ID.
    """
    if pgp_key.strip():
        key = openpgp().inspect_public_key(pgp_key, now=now)
        if not key.carries(email):
            raise ValueError(
                f"The key {key.fingerprint} does not carry {email.strip()} as a user ID "
                f"(it carries: {', '.join(key.addresses) or 'none'}): copies go only to an "
                "address of the key they are encrypted to."
            )
    vendor = vendor_create(
        name=name,
        email=email,
        pgp_key=pgp_key,
        legacy_keystore=legacy_keystore,
        actor=actor,
        now=now,
    )
    vendor_confirm(
        vendor_id=vendor.pk,
        fingerprint=vendor.pgp_fingerprint,
        email=vendor.email,
        actor=actor,
        now=now,
    )
    return vendor
