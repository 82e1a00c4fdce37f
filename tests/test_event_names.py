"""Every event named once (issue 25 §4): ``AuditEvent.Action`` and ``OperatorAlert.Kind``.

The audit codes and alert kinds are data (stable, searchable, the codes hashed into the
chain). Each is declared once, on its model, with a label in French, German and English;
every writer in ``mycert/`` uses the enum member, never a string; the admin shows the
label; every alert kind has its two templates. The source is read as Python (``ast``),
so a code written in a new place is found wherever it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from django.utils import translation

from mycert.models import AuditEvent, OperatorAlert
from mycert.services.audit import audit_record
from mycert.services.staff import AUDITED_ADMIN_APPS, admin_change_action

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mycert"
ALERT_TEMPLATES = ROOT / "templates" / "emails" / "alerts"

#: The one literal allowed to equal a code, and why: it is another namespace's word.
OTHER_NAMESPACES = {"hsm_pin_refused": "/healthz's problem code, named like the alert it follows"}
#: argparse's ``action=`` is not an audit action.
ARGPARSE_CALLS = {"add_argument"}
#: Calls whose first positional argument is an alert kind.
KIND_FIRST = {"revocation_alert"}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(), filename=str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
    ]


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _members_used(enum: str) -> set[str]:
    """``X`` of every ``<Model>.<enum>.X`` written in ``mycert/``."""
    used: set[str] = set()
    for _, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == enum
            ):
                used.add(node.attr)
    return used


def test_every_writer_names_the_event_with_the_enum_never_a_string() -> None:
    codes = set(AuditEvent.Action.values) | set(OperatorAlert.Kind.values)
    written_as_text: list[str] = []
    for path, tree in _sources():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) not in ARGPARSE_CALLS:
                written_as_text += [
                    f"{where}:{node.lineno} {keyword.arg}={ast.unparse(keyword.value)}"
                    for keyword in node.keywords
                    if keyword.arg in ("action", "kind") and _is_text(keyword.value)
                ]
                if _called_name(node) in KIND_FIRST and node.args and _is_text(node.args[0]):
                    written_as_text.append(f"{where}:{node.lineno} {ast.unparse(node.args[0])}")
            if (
                path.name != "models.py"
                and isinstance(node, ast.Constant)
                and node.value in codes
                and node.value not in OTHER_NAMESPACES
            ):
                written_as_text.append(f"{where}:{node.lineno} {node.value!r}")
    assert not written_as_text


def test_every_member_is_written_somewhere() -> None:
    """No stale name: each member is used by a writer (the admin's are made, see below)."""
    dynamic = {m.name for m in AuditEvent.Action if m.value.startswith("admin.")}
    dynamic.discard("ADMIN_TOTP_DEVICE_CREATED")  # written by add_totp_device
    assert set(AuditEvent.Action.names) - dynamic - _members_used("Action") == set()
    assert set(OperatorAlert.Kind.names) - _members_used("Kind") == set()


def test_every_admin_change_the_trail_records_has_a_name() -> None:
    """``admin.<model>_<verb>`` for every model the admin shows of the audited apps."""
    registered = [
        model._meta.model_name
        for model in admin.site._registry
        if model._meta.app_label in AUDITED_ADMIN_APPS
    ]
    assert {"user", "group", "totpdevice"} <= set(registered)
    for model in registered:
        for verb in ("added", "changed", "deleted"):
            assert f"admin.{model}_{verb}" in AuditEvent.Action.values
            assert isinstance(admin_change_action(str(model), verb), AuditEvent.Action)


@pytest.mark.parametrize("language", ["fr", "de"])
def test_every_name_has_a_label_in_the_agencys_languages(language: str) -> None:
    members = [*AuditEvent.Action, *OperatorAlert.Kind]
    with translation.override("en"):
        english = {member: str(member.label) for member in members}
    with translation.override(language):
        untranslated = [member.value for member in members if str(member.label) == english[member]]
    assert all(english[member] != member.value for member in members)
    assert not untranslated
    assert language in dict(settings.LANGUAGES)


def test_every_alert_kind_has_its_two_templates_and_no_template_is_orphaned() -> None:
    kinds = set(OperatorAlert.Kind.values)
    for kind in kinds:
        assert (ALERT_TEMPLATES / f"{kind}_subject.txt").is_file(), kind
        assert (ALERT_TEMPLATES / f"{kind}.txt").is_file(), kind
    stems = {
        path.name.removesuffix("_subject.txt").removesuffix(".txt")
        for path in ALERT_TEMPLATES.glob("*.txt")
    }
    assert stems == kinds


@pytest.mark.django_db
def test_the_admin_shows_every_action_by_its_label(client: Client) -> None:
    """Four codes showed raw before (request.failed, delivery.cancelled, …)."""
    root = User.objects.create_superuser("root", password=None)
    client.force_login(root)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "de"
    for action in (
        AuditEvent.Action.REQUEST_FAILED,
        AuditEvent.Action.DELIVERY_CANCELLED,
        AuditEvent.Action.DELIVERY_PAYLOAD_WIPED,
        AuditEvent.Action.SELFCHECK_CHECKED,
    ):
        audit_record(actor="system", action=action)

    page = client.get(reverse("admin:mycert_auditevent_changelist")).content.decode()

    with translation.override("de"):
        for action in AuditEvent.Action:
            model_admin = admin.site._registry[AuditEvent]
            shown = model_admin.description(AuditEvent(action=action.value))  # type: ignore[attr-defined]
            assert shown == str(action.label) != action.value
    assert "Zertifikatsantrag fehlgeschlagen" in page
    assert "E-Mail vor dem Versand storniert" in page
    for raw in ("request.failed", "delivery.cancelled", "selfcheck.checked"):
        assert f">{raw}<" not in page


@pytest.mark.django_db
def test_an_admin_change_is_recorded_under_its_name(client: Client) -> None:
    root = User.objects.create_superuser("root", password=None)
    for flag, action in (
        (ADDITION, AuditEvent.Action.ADMIN_GROUP_ADDED),
        (CHANGE, AuditEvent.Action.ADMIN_GROUP_CHANGED),
        (DELETION, AuditEvent.Action.ADMIN_GROUP_DELETED),
    ):
        LogEntry.objects.create(
            user=root,
            content_type=ContentType.objects.get(app_label="auth", model="group"),
            object_id="1",
            object_repr="Helpdesk",
            action_flag=flag,
        )
        assert AuditEvent.objects.filter(action=action.value).count() == 1


def test_an_admin_change_without_a_name_is_still_recorded_under_its_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model registered later without its names: audited all the same, and said so."""
    action = admin_change_action("permission", "changed")

    assert action == "admin.permission_changed"
    assert "admin.permission_changed has no name" in caplog.text
