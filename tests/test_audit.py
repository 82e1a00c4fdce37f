"""The audit trail: append-only, chained (keyed with MYCERT_AUDIT_KEY), anchored outside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from mycert.models import AuditEvent
from mycert.services.audit import (
    GENESIS_HASH,
    ChainBreak,
    audit_export_head,
    audit_record,
    audit_verify_chain,
    event_hash,
)
from mycert.tasks.audit import export_audit_head
from tests.factories import VendorFactory

pytestmark = pytest.mark.django_db


def _three_events() -> list[AuditEvent]:
    vendor = VendorFactory.create()
    return [
        audit_record(actor="system", action="vendor.created", target=vendor, details={"n": 1}),
        audit_record(actor="user:7", action="request.submitted", details={"é": "ü"}),
        audit_record(actor="system", action="certificate.issued", details={"serial": "ab"}),
    ]


def test_events_chain_to_each_other() -> None:
    first, second, third = _three_events()
    assert first.previous_hash == GENESIS_HASH
    assert second.previous_hash == first.hash
    assert third.previous_hash == second.hash
    assert audit_verify_chain() == (3, None)


def test_events_cannot_be_changed_or_deleted_through_the_orm() -> None:
    event = _three_events()[0]
    event.action = "something.else"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()


def test_verify_audit_command_reports_the_first_tampered_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, second, _ = _three_events()
    call_command("verify_audit")
    assert "3 events verified" in capsys.readouterr().out
    # Tamper behind the ORM's back, as someone with database access would.
    AuditEvent.objects.filter(pk=second.pk).update(details={"é": "changed"})
    with pytest.raises(CommandError, match=f"#{second.pk}: its content does not match"):
        call_command("verify_audit")


def test_a_removed_row_breaks_the_chain() -> None:
    _first, second, third = _three_events()
    AuditEvent.objects.filter(pk=second.pk).delete()  # queryset delete bypasses the model guard
    checked, broken = audit_verify_chain()
    assert checked == 1
    assert broken is not None
    assert broken.event_id == third.pk


# --- The keyed chain (MYCERT_AUDIT_KEY) ------------------------------------------------------

AUDIT_KEY = "audit-key-for-tests-0123456789abcdef"


@pytest.fixture
def keyed(settings: Any) -> None:
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY


def _forge(event: AuditEvent, **changes: Any) -> None:
    """Rewrite an event and recompute its plain SHA-256, as a database user could."""
    fields = {
        "created_at": event.created_at,
        "actor": event.actor,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "details": event.details,
        **changes,
    }
    forged = event_hash(previous_hash=event.previous_hash, **fields)
    AuditEvent.objects.filter(pk=event.pk).update(
        **fields, hash=forged, hash_scheme=AuditEvent.HashScheme.SHA256
    )


def test_without_a_key_a_database_user_can_rewrite_an_unkeyed_tail() -> None:
    """Why the key: the last plain link can be rewritten and still verifies."""
    *_, third = _three_events()
    _forge(third, details={"serial": "cd"})
    assert audit_verify_chain() == (3, None)


@pytest.mark.usefixtures("keyed")
def test_keyed_events_are_hmac_links_that_a_forger_cannot_recompute() -> None:
    *_, third = _three_events()
    assert third.hash_scheme == AuditEvent.HashScheme.HMAC_SHA256
    assert third.hash != event_hash(
        previous_hash=third.previous_hash,
        created_at=third.created_at,
        actor=third.actor,
        action=third.action,
        object_type=third.object_type,
        object_id=third.object_id,
        details=third.details,
    )
    assert audit_verify_chain() == (3, None)

    _forge(third, details={"serial": "cd"})  # rewritten as a plain link: a downgrade

    checked, broken = audit_verify_chain()
    assert checked == 2
    assert broken == ChainBreak(third.pk, "an unkeyed link follows a keyed one")


@pytest.mark.usefixtures("keyed")
def test_a_keyed_link_rewritten_with_another_key_is_found() -> None:
    *_, third = _three_events()
    fields: dict[str, Any] = {
        "previous_hash": third.previous_hash,
        "created_at": third.created_at,
        "actor": third.actor,
        "action": third.action,
        "object_type": third.object_type,
        "object_id": third.object_id,
        "details": {"serial": "cd"},
    }
    forged = event_hash(**fields, scheme=AuditEvent.HashScheme.HMAC_SHA256, key=b"guessed")
    AuditEvent.objects.filter(pk=third.pk).update(details={"serial": "cd"}, hash=forged)

    assert audit_verify_chain() == (2, ChainBreak(third.pk, "its content does not match its hash"))


def test_the_key_arrives_on_an_existing_chain_with_a_recorded_switch_over(settings: Any) -> None:
    old = _three_events()
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY

    new = audit_record(actor="system", action="certificate.issued", details={"serial": "ef"})

    switch = AuditEvent.objects.get(action="audit.chain_keyed")
    assert switch.previous_hash == old[-1].hash
    assert switch.details == {"last_unkeyed_event": old[-1].pk}
    assert switch.hash_scheme == new.hash_scheme == AuditEvent.HashScheme.HMAC_SHA256
    assert new.previous_hash == switch.hash
    assert audit_verify_chain() == (5, None)
    assert audit_record(actor="system", action="x.y").previous_hash == new.hash  # one switch only
    assert AuditEvent.objects.filter(action="audit.chain_keyed").count() == 1


def test_keyed_links_cannot_be_verified_without_the_key(settings: Any) -> None:
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY
    first = _three_events()[0]
    settings.MYCERT_AUDIT_KEY = ""

    checked, broken = audit_verify_chain()
    assert (checked, broken) == (
        0,
        ChainBreak(first.pk, "it is keyed and MYCERT_AUDIT_KEY is not set here"),
    )


# --- The head, exported outside the database -------------------------------------------------


@pytest.mark.usefixtures("keyed")
def test_beat_exports_the_head_to_the_log_and_an_append_only_file(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head_file = tmp_path / "audit-head.jsonl"
    settings.MYCERT_AUDIT_HEAD_FILE = str(head_file)
    *_, third = _three_events()
    caplog.set_level("INFO", logger="mycert.services.audit")

    assert export_audit_head.apply().get() == third.pk
    fourth = audit_record(actor="system", action="certificate.issued")
    export_audit_head.apply().get()

    assert f"audit head: event={third.pk} hash={third.hash}" in caplog.text
    lines = [json.loads(line) for line in head_file.read_text().splitlines()]
    assert [(line["event_id"], line["hash"]) for line in lines] == [
        (third.pk, third.hash),
        (fourth.pk, fourth.hash),
    ]


@pytest.mark.usefixtures("keyed")
def test_verify_audit_reports_a_cut_tail(
    settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.MYCERT_AUDIT_HEAD_FILE = str(tmp_path / "audit-head.jsonl")
    first, second, third = _three_events()
    audit_export_head(now=timezone.now())
    call_command("verify_audit")
    assert f"reaches the exported head, event #{third.pk}" in capsys.readouterr().out

    # The tail cut behind the ORM's back: what is left is still a valid chain.
    AuditEvent.objects.filter(pk__gte=second.pk).delete()
    assert audit_verify_chain() == (1, None)

    with pytest.raises(CommandError, match=f"truncated.*#{third.pk}.*ends at #{first.pk}"):
        call_command("verify_audit")


@pytest.mark.usefixtures("keyed")
def test_verify_audit_takes_a_head_from_the_log_line() -> None:
    *_, third = _three_events()
    call_command("verify_audit", "--head", f"{third.pk}:{third.hash}")
    with pytest.raises(CommandError, match=f"rewritten: event #{third.pk}"):
        call_command("verify_audit", "--head", f"{third.pk}:{'0' * 64}")
    AuditEvent.objects.filter(pk=third.pk).delete()
    with pytest.raises(CommandError, match="truncated"):
        call_command("verify_audit", "--head", f"event={third.pk} hash={third.hash}")
