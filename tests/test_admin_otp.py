"""The helpdesk's second factor at /admin/ (django-otp TOTP) and ``add_totp_device``."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from mycert.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "helpdesk-test-password-2026"


@pytest.fixture
def otp_required(settings: Any) -> None:
    settings.MYCERT_ADMIN_REQUIRE_OTP = True


@pytest.fixture
def agent() -> User:
    user = User.objects.create_user("agent", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Helpdesk"))
    return user


def _token(device: TOTPDevice) -> str:
    value = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    return f"{value:0{device.digits}d}"


def _login(client: Client, headers: dict[str, str] | None = None, **data: str) -> Any:
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "agent", "password": PASSWORD, **data},
        headers=headers,
    )


def test_staff_without_a_device_cannot_reach_the_admin(
    client: Client, agent: User, otp_required: None
) -> None:
    response = _login(client)
    assert response.status_code == 200  # the login page again, with an error
    assert response.context["form"].errors
    assert client.get("/admin/").status_code == 302
    # Even a password-authenticated session is not enough.
    client.force_login(agent)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_with_a_totp_device_and_the_right_code_gets_in(
    client: Client, agent: User, otp_required: None
) -> None:
    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    # The login page offers the agent's devices, then takes the code of the chosen one.
    response = _login(client, otp_device=device.persistent_id, otp_token=_token(device))
    assert response.status_code == 302, response.context["form"].errors
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/mycert/certificate/").status_code == 200


def test_a_wrong_code_is_refused(client: Client, agent: User, otp_required: None) -> None:
    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    wrong = f"{(int(_token(device)) + 1) % 10**device.digits:0{device.digits}d}"
    response = _login(client, otp_device=device.persistent_id, otp_token=wrong)
    assert response.status_code == 200
    assert client.get("/admin/").status_code == 302


def test_login_page_asks_for_the_code_when_required(client: Client, otp_required: None) -> None:
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b'name="otp_token"' in response.content


def test_without_the_switch_a_password_is_enough(
    client: Client, agent: User, settings: Any
) -> None:
    settings.MYCERT_ADMIN_REQUIRE_OTP = False
    assert b'name="otp_token"' not in client.get("/admin/login/").content
    assert _login(client).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_admin_password_posts_are_rate_limited(client: Client, agent: User, settings: Any) -> None:
    settings.MYCERT_RATELIMIT_LOGIN = "2/300"
    settings.MYCERT_ADMIN_REQUIRE_OTP = False
    for _ in range(2):
        assert _login(client, password="wrong").status_code == 200
    assert _login(client).status_code == 429


def test_add_totp_device_prints_an_otpauth_uri(agent: User) -> None:
    out = StringIO()
    call_command("add_totp_device", "agent", "--no-qr", stdout=out)
    uri = out.getvalue().strip()
    assert uri.startswith("otpauth://totp/")
    assert "secret=" in uri
    device = TOTPDevice.objects.get(user=agent)
    assert device.confirmed
    assert AuditEvent.objects.filter(action="admin.totp_device_created").exists()
    with pytest.raises(CommandError, match="already has"):
        call_command("add_totp_device", "agent", stdout=StringIO())
    call_command("add_totp_device", "agent", "--replace", "--no-qr", stdout=StringIO())
    assert TOTPDevice.objects.filter(user=agent).count() == 1
    assert TOTPDevice.objects.get(user=agent).pk != device.pk


def test_add_totp_device_refuses_unknown_and_non_staff_users() -> None:
    User.objects.create_user("professional", password=PASSWORD)
    with pytest.raises(CommandError, match="No user"):
        call_command("add_totp_device", "nobody", stdout=StringIO())
    with pytest.raises(CommandError, match="not staff"):
        call_command("add_totp_device", "professional", stdout=StringIO())


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("fr", "Veuillez choisir un appareil."),
        ("de", "Bitte wählen Sie ein Gerät aus."),
        ("en", "Please select a device."),
    ],
)
def test_a_device_that_is_not_the_agents_is_refused_in_the_agents_language(
    client: Client, agent: User, otp_required: None, language: str, message: str
) -> None:
    """django-otp leaves this message untranslated; MyCert's catalogs fill the gap."""
    other = User.objects.create_user("other", password=PASSWORD, is_staff=True)
    theirs = TOTPDevice.objects.create(user=other, name="their phone", confirmed=True)
    TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "agent",
            "password": PASSWORD,
            "otp_device": theirs.persistent_id,
            "otp_token": _token(theirs),
        },
        headers={"accept-language": language},
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert client.get("/admin/").status_code == 302


def test_one_device_password_and_code_get_in_at_the_first_submission(
    client: Client, agent: User, otp_required: None
) -> None:
    """What the login page shows (username, password, code) is all it needs."""
    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)

    response = _login(client, otp_token=_token(device))

    assert response.status_code == 302, response.context["form"].errors
    assert client.get("/admin/").status_code == 200
    device.refresh_from_db()
    assert device.last_t > -1  # verified through the device (django-otp's replay guard)


def test_several_devices_the_code_designates_its_device(
    client: Client, agent: User, otp_required: None
) -> None:
    phone = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    spare = TOTPDevice.objects.create(user=agent, name="spare token", confirmed=True)

    response = _login(client, otp_token=_token(spare))

    assert response.status_code == 302, response.context["form"].errors
    assert client.get("/admin/").status_code == 200
    phone.refresh_from_db()
    spare.refresh_from_db()
    assert phone.throttling_failure_count == 0  # the other device is not throttled
    assert spare.last_t > -1


def test_several_devices_a_wrong_code_counts_against_each_and_offers_the_choice(
    client: Client, agent: User, otp_required: None
) -> None:
    phone = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    spare = TOTPDevice.objects.create(user=agent, name="spare token", confirmed=True)
    wrong = next(
        f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in (_token(phone), _token(spare))
    )

    response = _login(client, otp_token=wrong)

    assert response.status_code == 200
    assert client.get("/admin/").status_code == 302
    page = response.content.decode()
    assert 'name="otp_device"' in page
    assert "spare token" in page
    for device in (phone, spare):
        device.refresh_from_db()
        assert device.throttling_failure_count == 1


def test_after_a_wrong_code_the_page_offers_no_challenge_keeps_no_code_and_takes_the_right_one(
    client: Client, agent: User, otp_required: None
) -> None:
    """Issue 23, point 6: « Obtenir le défi OTP » means nothing for TOTP; the wrong code
    is not to be retyped; and the right code typed at once is not refused by django-otp's
    one-second throttle after the first failure."""
    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    right = _token(device)
    wrong = f"{(int(right) + 1) % 10**device.digits:0{device.digits}d}"

    refused = _login(client, otp_token=wrong, headers={"accept-language": "fr"})

    assert refused.status_code == 200
    page = refused.content.decode()
    assert 'name="otp_challenge"' not in page
    assert "défi" not in page.lower()
    assert wrong not in page
    assert 'name="otp_device"' not in page  # one device: nothing to choose
    assert 'name="otp_token"' in page

    accepted = _login(client, otp_token=right)  # well within the second

    assert accepted.status_code == 302, accepted.context["form"].errors
    assert client.get("/admin/").status_code == 200


def test_the_demo_helpdesk_logs_in_with_the_code_make_totp_prints(
    client: Client, otp_required: None, settings: Any
) -> None:
    """Issue 23, point 6: the demo shows the second factor; ``make totp`` (``demo_totp``)
    prints the code, so no authenticator app is needed to try it."""
    from mycert.management.commands.demo import Command as Demo

    Demo()._demo_admin()
    settings.DEBUG = True  # demo_totp is the demo's only
    out = StringIO()
    call_command("demo_totp", stdout=out)
    code, how = out.getvalue().splitlines()[:2]
    assert "otpauth://totp/" in how

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "helpdesk", "password": "helpdesk-demo-2026", "otp_token": code},
    )

    assert response.status_code == 302, response.context["form"].errors
    assert client.get("/admin/").status_code == 200


def test_demo_totp_refuses_outside_debug(settings: Any) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=true"):
        call_command("demo_totp", stdout=StringIO())
