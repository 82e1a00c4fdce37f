"""The audit trail: append-only, chained (keyed with MYCERT_AUDIT_KEY), anchored outside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from mycert.models import AuditEvent, OperatorAlert
from mycert.services.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditPin,
    ChainBreak,
    audit_check_pin,
    audit_export_head,
    audit_record,
    audit_record_many,
    audit_verify_chain,
    event_hash,
    key_fingerprint,
)
from mycert.tasks.audit import export_audit_head
from tests.factories import VendorFactory

pytestmark = pytest.mark.django_db


def _three_events() -> list[AuditEvent]:
    vendor = VendorFactory.create()
    return [
        audit_record(
            actor="system", action=AuditEvent.Action.VENDOR_CREATED, target=vendor, details={"n": 1}
        ),
        audit_record(
            actor="user:7", action=AuditEvent.Action.REQUEST_SUBMITTED, details={"é": "ü"}
        ),
        audit_record(
            actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED, details={"serial": "ab"}
        ),
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

    new = audit_record(
        actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED, details={"serial": "ef"}
    )

    switch = AuditEvent.objects.get(action="audit.chain_keyed")
    assert switch.previous_hash == old[-1].hash
    assert switch.details == {"last_unkeyed_event": old[-1].pk}
    assert switch.hash_scheme == new.hash_scheme == AuditEvent.HashScheme.HMAC_SHA256
    assert new.previous_hash == switch.hash
    assert audit_verify_chain() == (5, None)
    assert (
        audit_record(actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED).previous_hash
        == new.hash
    )  # one switch only
    assert AuditEvent.objects.filter(action="audit.chain_keyed").count() == 1


def test_many_events_chain_in_order_with_one_insert_after_the_switch_over(
    settings: Any,
) -> None:
    """A batch (the outbox's sent e-mails) is the chain a loop of audit_record writes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    old = _three_events()
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY
    vendor = VendorFactory.create()

    with CaptureQueriesContext(connection) as queries:
        events = audit_record_many(
            [
                AuditEntry("system", AuditEvent.Action.DELIVERY_SENT, vendor, {"n": n, "é": "ü"})
                for n in range(3)
            ]
        )

    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # The switch-over (its own event, first), then the batch in one statement.
    assert len(inserts) == 2, inserts
    switch = AuditEvent.objects.get(action="audit.chain_keyed")
    assert switch.previous_hash == old[-1].hash
    stored = list(AuditEvent.objects.filter(pk__gt=switch.pk).order_by("pk"))
    assert [e.pk for e in stored] == [e.pk for e in events]
    assert [e.details["n"] for e in stored] == [0, 1, 2]
    assert stored[0].previous_hash == switch.hash
    assert {e.hash_scheme for e in stored} == {AuditEvent.HashScheme.HMAC_SHA256}
    assert (stored[0].object_type, stored[0].object_id) == ("mycert.vendor", str(vendor.pk))
    assert audit_verify_chain() == (7, None)
    assert audit_record_many([]) == []


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
    fourth = audit_record(actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED)
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


# --- Downgrade: the whole keyed chain rewritten as plain SHA-256 links (issue 20 §4) ---------


def _rewrite_all_unkeyed(**details: Any) -> None:
    """Rewrite every event as a plain SHA-256 link with altered content, from genesis on,
    as a database writer without the key would: the result is a valid unkeyed chain."""
    previous_hash = GENESIS_HASH
    for event in AuditEvent.objects.order_by("pk"):
        fields: dict[str, Any] = {
            "created_at": event.created_at,
            "actor": event.actor,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "details": {**event.details, **details},
        }
        forged = event_hash(previous_hash=previous_hash, **fields)
        AuditEvent.objects.filter(pk=event.pk).update(
            **fields,
            previous_hash=previous_hash,
            hash=forged,
            hash_scheme=AuditEvent.HashScheme.SHA256,
        )
        previous_hash = forged


@pytest.mark.usefixtures("keyed")
def test_the_exported_head_pins_the_first_keyed_event_and_the_keys_fingerprint(
    settings: Any, tmp_path: Path
) -> None:
    head_file = tmp_path / "audit-head.jsonl"
    settings.MYCERT_AUDIT_HEAD_FILE = str(head_file)
    first, _, third = _three_events()

    audit_export_head(now=timezone.now())
    audit_record(actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED)
    audit_export_head(now=timezone.now())

    lines = [json.loads(line) for line in head_file.read_text().splitlines()]
    assert [line["first_keyed_event"] for line in lines] == [first.pk, first.pk]
    assert {line["first_keyed_hash"] for line in lines} == {first.hash}
    assert {line["key_fingerprint"] for line in lines} == {key_fingerprint(AUDIT_KEY.encode())}
    assert AUDIT_KEY not in head_file.read_text()
    assert lines[0]["event_id"] == third.pk


@pytest.mark.usefixtures("keyed")
def test_a_full_unkeyed_rewrite_fails_verify_audit_and_is_never_laundered(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack 4 of issue 20: the keyed chain rewritten as plain SHA-256 with altered content.

    Before the pin: the walk found no keyed link (so no downgrade), the next write
    recorded a second ``audit.chain_keyed`` switch-over, the next export appended the
    forged head, and ``verify_audit`` then said "intact".
    """
    head_file = tmp_path / "audit-head.jsonl"
    settings.MYCERT_AUDIT_HEAD_FILE = str(head_file)
    first, _, third = _three_events()
    audit_export_head(now=timezone.now())
    exported = head_file.read_text()

    _rewrite_all_unkeyed(forged=True)
    assert audit_verify_chain() == (3, None)  # a valid chain, only plain links

    # The next write (a worker: the pin is readable here) is not a switch-over.
    audit_record(
        actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED, details={"serial": "ef"}
    )
    assert not AuditEvent.objects.filter(action="audit.chain_keyed").exists()
    detected = AuditEvent.objects.get(action="audit.downgrade_detected")
    assert detected.details == {
        "last_unkeyed_event": third.pk,
        "pinned_first_keyed_event": first.pk,
    }

    # The next export does not launder the rewrite: nothing appended, security alerted.
    caplog.set_level("ERROR", logger="mycert.services.audit")
    assert export_audit_head.apply().get() is None
    assert head_file.read_text() == exported
    alerts = OperatorAlert.objects.filter(
        kind="audit_tampered", recipient=OperatorAlert.Recipient.SECURITY
    )
    assert alerts.count() == 2  # the write's, and the export's
    assert "rewritten" in caplog.text
    export_audit_head.apply().get()
    assert alerts.count() == 2, "the same problem is reported once a day, not every export"

    with pytest.raises(CommandError, match=f"rewritten: event #{third.pk}"):
        call_command("verify_audit")


@pytest.mark.usefixtures("keyed")
def test_the_pin_reports_a_downgraded_or_rewritten_first_keyed_event(settings: Any) -> None:
    first, *_ = _three_events()
    pin = AuditPin(
        event_id=first.pk, hash=first.hash, key_fingerprint=key_fingerprint(AUDIT_KEY.encode())
    )
    assert audit_check_pin(pin) is None

    _rewrite_all_unkeyed()
    assert audit_check_pin(pin) == (
        f"downgraded: event #{first.pk}, the first keyed event, is no longer keyed "
        "(the chain was rewritten as plain SHA-256 links)"
    )
    settings.MYCERT_AUDIT_KEY = "another-key-0123456789abcdef-0123456789"
    problem = audit_check_pin(pin)
    assert problem is not None
    assert problem.startswith("keyed with another key")
    AuditEvent.objects.all().delete()
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY
    assert audit_check_pin(pin) == f"truncated: the first keyed event #{first.pk} is gone"


def test_a_process_that_saw_the_keyed_chain_never_re_keys_it(settings: Any) -> None:
    """A web host cannot read the head file: its own memory of a keyed link is the pin."""
    settings.MYCERT_AUDIT_KEY = AUDIT_KEY
    _three_events()
    audit_record(
        actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED
    )  # this process sees the keyed end
    _rewrite_all_unkeyed()

    audit_record(actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED)

    assert not AuditEvent.objects.filter(action="audit.chain_keyed").exists()
    assert AuditEvent.objects.filter(action="audit.downgrade_detected").count() == 1
    assert OperatorAlert.objects.filter(kind="audit_tampered").count() == 1


@pytest.mark.usefixtures("keyed")
def test_verify_audit_checks_the_pin_of_the_head_file(
    settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head_file = tmp_path / "audit-head.jsonl"
    settings.MYCERT_AUDIT_HEAD_FILE = str(head_file)
    first, _, third = _three_events()
    audit_export_head(now=timezone.now())
    call_command("verify_audit")
    assert f"event #{third.pk}, keyed from event #{first.pk} on" in capsys.readouterr().out

    line = json.loads(head_file.read_text())
    line["key_fingerprint"] = "0" * 32
    head_file.write_text(json.dumps(line) + "\n")
    with pytest.raises(CommandError, match="keyed with another key"):
        call_command("verify_audit")


def test_an_event_builds_no_query_to_find_the_chain_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three events per certificate: the ORM built and compiled the same parameterless
    # SELECT for each; it is compiled once per process now.
    from django.db.models.sql.compiler import SQLCompiler

    audit_record(actor="system", action=AuditEvent.Action.REQUEST_SUBMITTED)
    compiled: list[str] = []
    original = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        compiled.append(self.query.model.__name__ if self.query.model else "")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    second = audit_record(actor="system", action=AuditEvent.Action.REQUEST_SUBMITTED)
    assert compiled == []
    assert second.previous_hash == AuditEvent.objects.order_by("-pk")[1].hash


def test_the_chain_end_is_read_by_the_orms_own_statement() -> None:
    from mycert.services.audit import _chain_end_sql

    events = _three_events()
    orm = AuditEvent.objects.order_by("-pk").values_list("pk", "hash", "hash_scheme")[:1]
    assert _chain_end_sql() == str(orm.query)
    with connection.cursor() as cursor:
        cursor.execute(_chain_end_sql())
        assert cursor.fetchone() == (events[-1].pk, events[-1].hash, events[-1].hash_scheme)
