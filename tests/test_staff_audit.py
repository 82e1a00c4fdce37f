"""The helpdesk's accounts in the audit trail: sign-ins, failed sign-ins, admin changes.

Through the real admin pages and django-otp's login form; nothing mocked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from mycert.models import AuditEvent
from mycert.services.audit import audit_verify_chain

pytestmark = pytest.mark.django_db

PASSWORD = "helpdesk-test-password-2026"
WRONG_PASSWORD = "not-the-password-0001"


@pytest.fixture
def agent() -> User:
    user = User.objects.create_user(
        "agent", password=PASSWORD, is_staff=True, first_name="Anne", last_name="Agent"
    )
    user.groups.add(Group.objects.get(name="Helpdesk"))
    return user


@pytest.fixture
def root() -> Client:
    superuser = User.objects.create_superuser("root", password=None)
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(superuser)
    client.user = superuser  # type: ignore[attr-defined]
    return client


def _login(client: Client, password: str, **data: str) -> Any:
    return client.post(
        "/admin/login/?next=/admin/", {"username": "agent", "password": password, **data}
    )


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def _everything_audited() -> str:
    return json.dumps([e.details for e in AuditEvent.objects.all()])


def test_a_staff_sign_in_is_audited(client: Client, agent: User) -> None:
    assert _login(client, PASSWORD).status_code == 302

    [event] = _events("staff.login")
    assert event.actor == f"user:{agent.pk}"
    assert event.object_id == str(agent.pk)


def test_a_failed_sign_in_is_audited_without_the_password(client: Client, agent: User) -> None:
    assert _login(client, WRONG_PASSWORD).status_code == 200

    [event] = _events("staff.login_failed")
    assert event.actor == "anonymous"
    assert event.details == {"username": "agent", "reason": "password"}
    assert WRONG_PASSWORD not in _everything_audited()
    assert not _events("staff.login")


def test_a_wrong_second_factor_is_audited(client: Client, agent: User, settings: Any) -> None:
    settings.MYCERT_ADMIN_REQUIRE_OTP = True
    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    right = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    wrong = f"{(right + 1) % 10**device.digits:0{device.digits}d}"

    _login(client, PASSWORD, otp_device=device.persistent_id, otp_token=wrong)

    [event] = _events("staff.login_failed")
    assert event.details == {"username": "agent", "reason": "otp"}
    assert wrong not in _everything_audited()


def test_a_professional_login_is_not_counted_as_a_staff_sign_in(client: Client) -> None:
    professional = User.objects.create_user("oidc:someone", password=None)
    client.force_login(professional)
    assert not _events("staff.login")


def test_making_someone_superuser_in_the_admin_is_audited(root: Client, agent: User) -> None:
    url = reverse("admin:auth_user_change", args=[agent.pk])
    form = root.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and name not in ("password", "user_permissions", "groups")
    }
    data |= {
        "is_superuser": "on",
        "is_staff": "on",
        "is_active": "on",
        "groups": [str(g.pk) for g in agent.groups.all()],
        "date_joined_0": agent.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": agent.date_joined.strftime("%H:%M:%S"),
    }
    data.pop("date_joined", None)
    data.pop("last_login", None)

    response = root.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    [event] = _events("admin.user_changed")
    assert event.actor == f"user:{root.user.pk}"  # type: ignore[attr-defined]
    assert event.details["object_id"] == str(agent.pk)
    assert event.details["state"]["is_superuser"] is True
    assert event.details["state"]["groups"] == ["Helpdesk"]
    assert "Superuser status" in json.dumps(event.details["change"])
    assert audit_verify_chain()[1] is None


def test_a_password_set_in_the_admin_is_audited_without_the_password(
    root: Client, agent: User
) -> None:
    new_password = "a-new-password-for-anne-2026"
    response = root.post(
        reverse("admin:auth_user_password_change", args=[agent.pk]),
        {"password1": new_password, "password2": new_password, "usable_password": "true"},
    )

    assert response.status_code == 302
    [event] = _events("admin.user_changed")
    assert "password" in json.dumps(event.details["change"]).lower()
    audited = _everything_audited()
    assert new_password not in audited
    assert User.objects.get(pk=agent.pk).password.split("$")[-1] not in audited


def test_group_permissions_changed_in_the_admin_are_audited(root: Client) -> None:
    group = Group.objects.get(name="Helpdesk")
    permissions = [str(pk) for pk in group.permissions.values_list("pk", flat=True)]
    permissions.append(str(Permission.objects.get(codename="change_vendor").pk))

    response = root.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "Helpdesk", "permissions": permissions},
    )

    assert response.status_code == 302
    [event] = _events("admin.group_changed")
    assert event.details["object"] == "Helpdesk"
    assert "Permissions" in json.dumps(event.details["change"])
    assert "mycert.change_vendor" in event.details["state"]["permissions"]


def test_a_totp_device_added_in_the_admin_is_audited_without_its_key(
    root: Client, agent: User
) -> None:
    key = "3132333435363738393031323334353637383930"
    response = root.post(
        reverse("admin:otp_totp_totpdevice_add"),
        {
            "user": str(agent.pk),
            "name": "phone",
            "confirmed": "on",
            "key": key,
            "step": "30",
            "t0": "0",
            "digits": "6",
            "tolerance": "1",
            "drift": "0",
            "throttling_failure_count": "0",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [event] = _events("admin.totpdevice_added")
    assert event.actor == f"user:{root.user.pk}"  # type: ignore[attr-defined]
    assert key not in _everything_audited()


def test_the_audit_list_names_the_staff_member_and_says_what_happened_in_french(
    client: Client, agent: User
) -> None:
    """The codes stay in the data; the page shows a name and a translated description."""
    client.force_login(agent)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "fr"

    page = client.get(reverse("admin:mycert_auditevent_changelist")).content.decode()

    assert "Anne Agent (agent)" in page
    assert f"user:{agent.pk}" not in page
    assert "Connexion du personnel" in page
    assert AuditEvent.objects.filter(action="staff.login", actor=f"user:{agent.pk}").exists()
