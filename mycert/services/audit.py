"""The append-only, hash-chained audit trail (DESIGN.md §6)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection, models, transaction
from django.utils import timezone

from mycert.models import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant: serialises writers of the chain on PostgreSQL (SQLite writers are
# serialised by the database itself).
_CHAIN_LOCK_ID = 0x6D79_6365_7274


def actor_label(user: AbstractBaseUser | AnonymousUser | None) -> str:
    """Name a user by primary key (never by e-mail), or ``system``."""
    if user is None or not user.is_authenticated:
        return "system"
    return f"user:{user.pk}"


def event_hash(
    *,
    previous_hash: str,
    created_at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
) -> str:
    """Hash an event's content together with the hash of the event before it."""
    canonical = json.dumps(
        {
            "previous_hash": previous_hash,
            "created_at": created_at.isoformat(),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def audit_record(
    *,
    actor: str,
    action: str,
    target: models.Model | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    details = json.loads(json.dumps(details or {}, default=str))
    object_type = target._meta.label_lower if target is not None else ""
    object_id = str(target.pk) if target is not None else ""
    # No savepoint when nested: nothing here is caught and retried, and each savepoint
    # is two more round trips on every audited action.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
        last = AuditEvent.objects.order_by("-pk").values_list("hash", flat=True).first()
        previous_hash = last or GENESIS_HASH
        # Microseconds are dropped so that the stored value hashes the same after a
        # round trip through any database.
        created_at = timezone.now().replace(microsecond=0)
        event = AuditEvent(
            created_at=created_at,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=details,
            previous_hash=previous_hash,
            hash=event_hash(
                previous_hash=previous_hash,
                created_at=created_at,
                actor=actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                details=details,
            ),
        )
        event.save()
    return event


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    problem: str


def audit_verify_chain() -> tuple[int, ChainBreak | None]:
    """Walk the chain from the start; return the count checked and the first break."""
    previous_hash = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("pk").iterator(chunk_size=2000):
        if event.previous_hash != previous_hash:
            return checked, ChainBreak(
                event.pk, "its previous hash does not match the event before it"
            )
        expected = event_hash(
            previous_hash=event.previous_hash,
            created_at=event.created_at,
            actor=event.actor,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            details=event.details,
        )
        if expected != event.hash:
            return checked, ChainBreak(event.pk, "its content does not match its hash")
        previous_hash = event.hash
        checked += 1
    return checked, None
