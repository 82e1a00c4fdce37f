"""The audit trail: append-only, hash-chained, and a tampered row is found."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from mycert.models import AuditEvent
from mycert.services.audit import GENESIS_HASH, audit_record, audit_verify_chain
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
