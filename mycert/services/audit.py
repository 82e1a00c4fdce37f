"""The append-only, chained audit trail (docs/architecture.md « The audit trail »).

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

Nor can the scheme column alone stop a downgrade: someone who rewrites *every* event,
keyed ones included, as plain SHA-256 links leaves a chain with no keyed link, which
looks like one written before the key existed. So the exported head also pins the
first keyed event (its id, its hash, and a fingerprint of the key): from the first
export on, that pin is carried forward unchanged, ``verify_audit`` fails when the pinned
event is gone, rewritten or no longer keyed, and a writer that knows the chain was
keyed (the pin is readable here, or this process saw a keyed link) records a plain
link after it as ``audit.downgrade_detected`` and alerts security, never as the
switch-over.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    "AuditEntry",
    "AuditHead",
    "AuditPin",
    "ChainBreak",
    "actor_display",
    "actor_label",
    "audit_check_head",
    "audit_check_pin",
    "audit_export_head",
    "audit_record",
    "audit_record_many",
    "audit_verify_chain",
    "event_hash",
    "key_fingerprint",
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


def key_fingerprint(key: bytes) -> str:
    """A name for the audit key that reveals nothing of it (an HMAC of a fixed label).

    Pinned in the exported head: ``verify_audit`` then tells "this is not the key the
    chain was keyed with" apart from "the chain was rewritten".
    """
    return hmac.new(key, b"mycert audit key fingerprint", hashlib.sha256).hexdigest()[:32]


# Set once this process has seen a keyed link at the chain's end: from then on a plain
# link there is a downgrade, whatever the database says (see ``_chain_was_keyed``).
_seen_keyed = False


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


def _event(
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
    """The next link of the chain, hashed, not yet saved."""
    # Microseconds are dropped so that the stored value hashes the same after a
    # round trip through any database.
    created_at = timezone.now().replace(microsecond=0)
    return AuditEvent(
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
    event = _event(
        previous_hash=previous_hash,
        scheme=scheme,
        key=key,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        details=details,
    )
    event.save()
    return event


@dataclass(frozen=True)
class AuditEntry:
    """One event for ``audit_record_many``: what ``audit_record`` takes as arguments."""

    actor: str
    action: AuditEvent.Action
    target: models.Model | None = None
    details: dict[str, Any] | None = None


def audit_record(
    *,
    actor: str,
    action: AuditEvent.Action,
    target: models.Model | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    (event,) = audit_record_many(
        [AuditEntry(actor=actor, action=action, target=target, details=details)]
    )
    return event


def audit_record_many(entries: Sequence[AuditEntry]) -> list[AuditEvent]:
    """Append these events to the chain in this order, inside the caller's transaction.

    One lock of the chain, one read of its end and one INSERT for them all (a batch of
    e-mails recorded at once): each event still carries the hash of the one before it,
    so the chain is the one ``audit_record`` called in a loop would write.
    """
    if not entries:
        return []
    key = _audit_key()
    scheme = SCHEME_HMAC if key else SCHEME_SHA256
    # No savepoint when nested: nothing here is caught and retried, and each savepoint
    # is two more round trips on every audited action.
    with transaction.atomic(savepoint=False):
        previous_hash = _chain_end(key, scheme)
        events: list[AuditEvent] = []
        for entry in entries:
            event = _event(
                previous_hash=previous_hash,
                scheme=scheme,
                key=key,
                actor=entry.actor,
                action=entry.action,
                object_type=entry.target._meta.label_lower if entry.target is not None else "",
                object_id=str(entry.target.pk) if entry.target is not None else "",
                # As stored and read back (JSON): the hash is computed over the same thing.
                details=json.loads(json.dumps(entry.details or {}, default=str)),
            )
            events.append(event)
            previous_hash = event.hash
        if len(events) == 1:
            events[0].save()
        else:
            # One INSERT; the database numbers the rows in this order (the chain's).
            AuditEvent.objects.bulk_create(events)
    return events


@functools.cache
def _chain_end_sql() -> str:
    """The query for the chain's last link, compiled once per process.

    It takes no parameter, and runs at every audit event (three per certificate):
    building and compiling it through the ORM each time cost more than PostgreSQL's
    answer. Statements of both databases are the ORM's own (``tests/test_audit.py``).
    """
    query = AuditEvent.objects.order_by("-pk").values_list("pk", "hash", "hash_scheme")[:1]
    sql, params = query.query.sql_with_params()
    if params:
        raise AssertionError("the audit chain's last link is read without parameters")
    return str(sql)


def _chain_end(key: bytes | None, scheme: str) -> str:
    """Lock the chain for this transaction; the hash the next event must carry.

    The first keyed write after unkeyed ones records the switch-over first; a plain
    link after a keyed chain is recorded as a downgrade (``_chain_was_keyed``).
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
        cursor.execute(_chain_end_sql())
        last: tuple[int, str, str] | None = cursor.fetchone()
    previous_hash: str = last[1] if last else GENESIS_HASH
    if key and last is not None and last[2] == SCHEME_SHA256:
        pin = _chain_was_keyed()
        if pin is None:
            # The switch-over: from here on every link is keyed. Recorded as an event
            # of its own so that the trail says where the unkeyed part ends.
            return _append(
                previous_hash=previous_hash,
                scheme=scheme,
                key=key,
                actor="system",
                action=AuditEvent.Action.AUDIT_CHAIN_KEYED,
                object_type="",
                object_id="",
                details={"last_unkeyed_event": last[0]},
            ).hash
        # The chain was keyed before: a plain link at its end was written by
        # someone without the key. Never a second switch-over, which would make
        # the rewrite look like the normal start of the keyed chain.
        return _downgrade_detected(
            last_unkeyed_event=last[0], pin=pin, previous_hash=previous_hash, key=key
        )
    if key and last is not None:
        global _seen_keyed
        _seen_keyed = True
    return previous_hash


def _chain_was_keyed() -> AuditPin | None:
    """Evidence, from outside the database, that the chain had keyed links already.

    The pin of the exported head where this host can read it (the beat host), or this
    process's own memory of a keyed link. ``None``: this is the first keying as far as
    this process can tell (a web process just started cannot; the next head export,
    which carries the first pin forward, reports the rewrite then).
    """
    path: str = settings.MYCERT_AUDIT_HEAD_FILE
    if path:
        try:
            head = read_exported_head(Path(path))
        except (OSError, ValueError):
            head = None
        if head is not None and head.pin is not None:
            return head.pin
    if _seen_keyed:
        return AuditPin(event_id=0, hash="", key_fingerprint="")
    return None


def _downgrade_detected(
    *, last_unkeyed_event: int, pin: AuditPin, previous_hash: str, key: bytes
) -> str:
    from mycert.models import OperatorAlert
    from mycert.services.alerts import operator_alert_create

    logger.error(
        "audit chain downgraded: event #%s is a plain link after the chain was keyed",
        last_unkeyed_event,
    )
    details: dict[str, Any] = {"last_unkeyed_event": last_unkeyed_event}
    if pin.event_id:
        details["pinned_first_keyed_event"] = pin.event_id
    operator_alert_create(
        recipient=OperatorAlert.Recipient.SECURITY,
        kind=OperatorAlert.Kind.AUDIT_TAMPERED,
        context={
            "problem": f"event #{last_unkeyed_event} is an unkeyed link written after the "
            "chain was keyed: someone without MYCERT_AUDIT_KEY rewrote it",
        },
    )
    return _append(
        previous_hash=previous_hash,
        scheme=SCHEME_HMAC,
        key=key,
        actor="system",
        action=AuditEvent.Action.AUDIT_DOWNGRADE_DETECTED,
        object_type="",
        object_id="",
        details=details,
    ).hash


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
class AuditPin:
    """The chain's first keyed event and the key it was keyed with (by fingerprint)."""

    event_id: int
    hash: str
    key_fingerprint: str


@dataclass(frozen=True)
class AuditHead:
    """The chain's last event as exported at ``exported_at``, and the pin once keyed."""

    event_id: int
    hash: str
    exported_at: str = ""
    pin: AuditPin | None = None

    def line(self) -> str:
        data: dict[str, Any] = {
            "event_id": self.event_id,
            "hash": self.hash,
            "exported_at": self.exported_at,
        }
        if self.pin is not None:
            data["first_keyed_event"] = self.pin.event_id
            data["first_keyed_hash"] = self.pin.hash
            data["key_fingerprint"] = self.pin.key_fingerprint
        return json.dumps(data, sort_keys=True)


def _first_keyed_pin(key: bytes | None) -> AuditPin | None:
    """The pin as the database has it now (used only before the first pin is exported)."""
    if key is None:
        return None
    first = (
        AuditEvent.objects.filter(hash_scheme=SCHEME_HMAC)
        .order_by("pk")
        .values_list("pk", "hash")
        .first()
    )
    if first is None:
        return None
    return AuditPin(event_id=first[0], hash=first[1], key_fingerprint=key_fingerprint(key))


def audit_export_head(*, now: datetime) -> AuditHead | None:
    """Write the chain's head to the log and, if configured, append it to a file.

    The file (``MYCERT_AUDIT_HEAD_FILE``) belongs on storage the database's users cannot
    rewrite (another host, ``chattr +a``, a WORM share); the log line goes wherever the
    logs are shipped. ``None`` while the chain is empty.

    The first keyed event is pinned once and the pin is carried forward from the file's
    last line, never taken from the database again. Before appending, the chain is
    compared with that last line (the previous head, the pin): if it no longer holds,
    nothing is appended (the file keeps the last head that was true, so `verify_audit`
    keeps failing) and security is alerted.
    """
    last = AuditEvent.objects.order_by("-pk").values_list("pk", "hash").first()
    if last is None:
        return None
    path: str = settings.MYCERT_AUDIT_HEAD_FILE
    previous = read_exported_head(Path(path)) if path else None
    if previous is not None:
        problem = audit_check_head(previous) or (
            audit_check_pin(previous.pin) if previous.pin is not None else None
        )
        if problem is not None:
            _report_tampering(problem, now=now)
            return None
    pin = previous.pin if previous is not None and previous.pin is not None else None
    if pin is None:
        pin = _first_keyed_pin(_audit_key())
    head = AuditHead(event_id=last[0], hash=last[1], exported_at=now.isoformat(), pin=pin)
    if pin is not None:
        logger.info(
            "audit head: event=%s hash=%s first_keyed=%s key=%s",
            head.event_id,
            head.hash,
            pin.event_id,
            pin.key_fingerprint,
        )
    else:
        logger.info("audit head: event=%s hash=%s", head.event_id, head.hash)
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
        pin = None
        if "first_keyed_event" in data:
            pin = AuditPin(
                event_id=int(data["first_keyed_event"]),
                hash=str(data["first_keyed_hash"]),
                key_fingerprint=str(data["key_fingerprint"]),
            )
        return AuditHead(
            event_id=int(data["event_id"]),
            hash=str(data["hash"]),
            exported_at=str(data.get("exported_at", "")),
            pin=pin,
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


def audit_check_pin(pin: AuditPin) -> str | None:
    """Compare the chain with the pinned first keyed event; the problem, or None.

    Together with ``audit_verify_chain`` (no plain link after a keyed one) this makes a
    full rewrite as plain SHA-256 links fail: the pinned event itself is then plain.
    """
    key = _audit_key()
    if key is not None and not hmac.compare_digest(key_fingerprint(key), pin.key_fingerprint):
        return (
            f"keyed with another key: MYCERT_AUDIT_KEY here has fingerprint "
            f"{key_fingerprint(key)}, the chain was keyed with {pin.key_fingerprint}"
        )
    stored = AuditEvent.objects.filter(pk=pin.event_id).values_list("hash", "hash_scheme").first()
    if stored is None:
        return f"truncated: the first keyed event #{pin.event_id} is gone"
    if stored[1] != SCHEME_HMAC:
        return (
            f"downgraded: event #{pin.event_id}, the first keyed event, is no longer "
            "keyed (the chain was rewritten as plain SHA-256 links)"
        )
    if not hmac.compare_digest(stored[0], pin.hash):
        return f"rewritten: event #{pin.event_id}, the first keyed event, has another hash"
    return None


def _report_tampering(problem: str, *, now: datetime) -> None:
    """Log and alert security, once a day per problem (beat exports every 15 minutes)."""
    from mycert.models import OperatorAlert
    from mycert.services.alerts import operator_alert_create

    logger.error("audit chain %s; the exported head is left as it was", problem)
    recent = OperatorAlert.objects.filter(
        kind=OperatorAlert.Kind.AUDIT_TAMPERED, created_at__gte=now - timedelta(days=1)
    )
    with transaction.atomic():
        alert = operator_alert_create(
            recipient=OperatorAlert.Recipient.SECURITY,
            kind=OperatorAlert.Kind.AUDIT_TAMPERED,
            context={"problem": problem},
        )
        if recent.filter(body=alert.body).exclude(pk=alert.pk).exists():
            transaction.set_rollback(True)
