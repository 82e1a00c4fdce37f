"""The append-only, chained audit trail (DESIGN.md §6).

Each event carries the hash of the one before it. Two schemes coexist in one chain:

- ``sha256``: a plain SHA-256 over the event and its predecessor's hash. Anyone who can
  write to the database can recompute it, so it proves nothing against them. Events
  written before ``MYCERT_AUDIT_KEY`` existed use it, and so does a development
  instance without the key.
- ``hmac-sha256``: an HMAC (RFC 2104) keyed with ``MYCERT_AUDIT_KEY``, which lives in
  the processes' environment, never in the database. Without the key nobody can write
  a link that verifies.

When the key is first configured, the next write records an ``audit.chain_keyed`` event
(the switch-over, keyed itself) and every later event is keyed. ``audit_verify_chain``
verifies both schemes and refuses a plain link after a keyed one (a downgrade).

Keys cannot stop someone with database access from cutting the chain's tail: beat
exports the head (last event id and hash) outside the database, to the log and to an
append-only file (``MYCERT_AUDIT_HEAD_FILE``), and ``verify_audit`` checks that the
chain still reaches the last exported head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection, models, transaction
from django.utils import timezone

from mycert.models import AuditEvent

__all__ = [
    "GENESIS_HASH",
    "SCHEME_HMAC",
    "SCHEME_SHA256",
    "AuditHead",
    "ChainBreak",
    "actor_display",
    "actor_label",
    "audit_check_head",
    "audit_export_head",
    "audit_record",
    "audit_verify_chain",
    "event_hash",
    "read_exported_head",
]

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
SCHEME_SHA256 = AuditEvent.HashScheme.SHA256
SCHEME_HMAC = AuditEvent.HashScheme.HMAC_SHA256
# Any constant: serialises writers of the chain on PostgreSQL (SQLite writers are
# serialised by the database itself).
_CHAIN_LOCK_ID = 0x6D79_6365_7274


def actor_label(user: AbstractBaseUser | AnonymousUser | None) -> str:
    """Name a user by primary key (never by e-mail), or ``system``."""
    if user is None or not user.is_authenticated:
        return "system"
    return f"user:{user.pk}"


def actor_display(actor: str) -> str:
    """A person's name for an actor label (``user:3`` → "Anne Muller (amuller)")."""
    if not actor.startswith("user:") or not actor[5:].isdigit():
        return actor
    user = get_user_model()._default_manager.filter(pk=int(actor[5:])).first()
    if user is None:
        return actor
    full_name = str(user.get_full_name()).strip()
    username = str(user.get_username())
    return f"{full_name} ({username})" if full_name else username


def _audit_key() -> bytes | None:
    key: str = settings.MYCERT_AUDIT_KEY
    return key.encode() if key else None


def event_hash(
    *,
    previous_hash: str,
    created_at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
    scheme: str = SCHEME_SHA256,
    key: bytes | None = None,
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
    ).encode()
    if scheme == SCHEME_SHA256:
        return hashlib.sha256(canonical).hexdigest()
    if scheme == SCHEME_HMAC:
        if not key:
            raise ValueError("a keyed audit link needs MYCERT_AUDIT_KEY")
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()
    raise ValueError(f"unknown audit hash scheme {scheme!r}")


def _append(
    *,
    previous_hash: str,
    scheme: str,
    key: bytes | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
) -> AuditEvent:
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
        hash_scheme=scheme,
        hash=event_hash(
            previous_hash=previous_hash,
            created_at=created_at,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=details,
            scheme=scheme,
            key=key,
        ),
    )
    event.save()
    return event


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
    key = _audit_key()
    scheme = SCHEME_HMAC if key else SCHEME_SHA256
    # No savepoint when nested: nothing here is caught and retried, and each savepoint
    # is two more round trips on every audited action.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
        last = AuditEvent.objects.order_by("-pk").values_list("pk", "hash", "hash_scheme").first()
        previous_hash = last[1] if last else GENESIS_HASH
        if key and last is not None and last[2] == SCHEME_SHA256:
            # The switch-over: from here on every link is keyed. Recorded as an event of
            # its own so that the trail says where the unkeyed part ends.
            previous_hash = _append(
                previous_hash=previous_hash,
                scheme=scheme,
                key=key,
                actor="system",
                action="audit.chain_keyed",
                object_type="",
                object_id="",
                details={"last_unkeyed_event": last[0]},
            ).hash
        return _append(
            previous_hash=previous_hash,
            scheme=scheme,
            key=key,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=details,
        )


# --- Verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    problem: str


def audit_verify_chain() -> tuple[int, ChainBreak | None]:
    """Walk the chain from the start; return the count checked and the first break."""
    key = _audit_key()
    previous_hash = GENESIS_HASH
    keyed = False
    checked = 0
    for event in AuditEvent.objects.order_by("pk").iterator(chunk_size=2000):
        if event.previous_hash != previous_hash:
            return checked, ChainBreak(
                event.pk, "its previous hash does not match the event before it"
            )
        if event.hash_scheme == SCHEME_SHA256 and keyed:
            # Someone without the key rewrote a keyed link as a plain one.
            return checked, ChainBreak(event.pk, "an unkeyed link follows a keyed one")
        if event.hash_scheme == SCHEME_HMAC:
            if key is None:
                return checked, ChainBreak(
                    event.pk, "it is keyed and MYCERT_AUDIT_KEY is not set here"
                )
            keyed = True
        try:
            expected = event_hash(
                previous_hash=event.previous_hash,
                created_at=event.created_at,
                actor=event.actor,
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                details=event.details,
                scheme=event.hash_scheme,
                key=key,
            )
        except ValueError:
            return checked, ChainBreak(event.pk, "its hash scheme is unknown")
        # Constant time: the comparison must not tell a forger how much of a guess matched.
        if not hmac.compare_digest(expected, event.hash):
            return checked, ChainBreak(event.pk, "its content does not match its hash")
        previous_hash = event.hash
        checked += 1
    return checked, None


# --- The head, exported outside the database --------------------------------------------------


@dataclass(frozen=True)
class AuditHead:
    """The chain's last event as exported at ``exported_at``."""

    event_id: int
    hash: str
    exported_at: str = ""

    def line(self) -> str:
        return json.dumps(
            {"event_id": self.event_id, "hash": self.hash, "exported_at": self.exported_at},
            sort_keys=True,
        )


def audit_export_head(*, now: datetime) -> AuditHead | None:
    """Write the chain's head to the log and, if configured, append it to a file.

    The file (``MYCERT_AUDIT_HEAD_FILE``) belongs on storage the database's users cannot
    rewrite (another host, ``chattr +a``, a WORM share); the log line goes wherever the
    logs are shipped. ``None`` while the chain is empty.
    """
    last = AuditEvent.objects.order_by("-pk").values_list("pk", "hash").first()
    if last is None:
        return None
    head = AuditHead(event_id=last[0], hash=last[1], exported_at=now.isoformat())
    logger.info("audit head: event=%s hash=%s", head.event_id, head.hash)
    path: str = settings.MYCERT_AUDIT_HEAD_FILE
    if path:
        # O_APPEND: every line lands at the end, whatever another writer does.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(descriptor, (head.line() + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return head


def read_exported_head(path: Path) -> AuditHead | None:
    """The last head in an export file; ``ValueError`` if its last line is unreadable."""
    try:
        lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
        return AuditHead(
            event_id=int(data["event_id"]),
            hash=str(data["hash"]),
            exported_at=str(data.get("exported_at", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the last line of {path} is not an exported audit head") from exc


def audit_check_head(head: AuditHead) -> str | None:
    """Compare the chain with an exported head; return the problem, or None if it holds."""
    stored = AuditEvent.objects.filter(pk=head.event_id).values_list("hash", flat=True).first()
    if stored is None:
        last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        return (
            f"truncated: the head exported {head.exported_at or '(no date)'} is event "
            f"#{head.event_id}, but the chain now ends at #{last or 0}"
        )
    if not hmac.compare_digest(stored, head.hash):
        return (
            f"rewritten: event #{head.event_id} no longer has the hash exported "
            f"{head.exported_at or '(no date)'}"
        )
    return None
