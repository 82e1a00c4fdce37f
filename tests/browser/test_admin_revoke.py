"""The helpdesk revokes a certificate in the admin, in the browser.

A staff user in the ``Helpdesk`` group signs in with a password and, as in production
(``MYCERT_ADMIN_REQUIRE_OTP``), a TOTP code; ticks the certificate, chooses « Révoquer les
certificats sélectionnés », gives the reason on the confirmation page and confirms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from playwright._impl._api_structures import SetCookieParam

from mycert.models import Certificate, CertificateRequest
from mycert.services.issuance import request_issue
from tests.browser.conftest import AxeReport, Site
from tests.factories import CertificateRequestFactory, ProfessionalFactory
from tests.support.id_tokens import trusting_signing_provider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "helpdesk-browser-2026"  # a test account


def _issued_certificate() -> Certificate:
    professional = ProfessionalFactory(given_name="Paul", family_name="Weber")
    # The site trusts the mock provider; this request is proven by the tests' signer.
    with trusting_signing_provider():
        request: CertificateRequest = CertificateRequestFactory(professional=professional)  # type: ignore[assignment]
        outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _helpdesk_agent() -> User:
    agent = User.objects.create_user("agent.browser", password=PASSWORD, is_staff=True)
    agent.groups.add(Group.objects.get(name="Helpdesk"))
    return agent


def _totp_token(agent: User) -> str:
    """A confirmed TOTP device for ``agent`` and its current code."""
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=agent, name="phone", confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


@pytest.mark.usefixtures("helpdesk_group")
def test_helpdesk_revokes_in_two_steps(
    site: Site,
    settings: object,
    a11y_page: Page,
    shot: Callable[[Page, str], Path],
    axe: Callable[[Page], AxeReport],
) -> None:
    settings.MYCERT_ADMIN_REQUIRE_OTP = True  # type: ignore[attr-defined]
    page = a11y_page
    certificate = _issued_certificate()
    agent = _helpdesk_agent()
    code = _totp_token(agent)

    page.goto(site.url + "/admin/")
    expect(page.locator("#id_username")).to_be_visible()
    report = axe(page)
    assert not report.serious, report.describe()
    # Password and code, submitted once: with one device there is nothing to choose.
    page.locator("#id_username").fill(agent.username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("#id_otp_token").fill(code)
    shot(page, "40-admin-login")
    page.locator("#login-form [type=submit]").first.click()
    expect(page.locator("#user-tools")).to_contain_text(agent.username)

    # The serial as `openssl x509 -serial` prints it: upper case, whole bytes.
    number = int(certificate.serial, 16)
    printed = f"{number:0{len(certificate.serial) + len(certificate.serial) % 2}X}"
    page.goto(site.url + "/admin/mycert/certificate/")
    page.locator("#searchbar").fill(printed)
    page.locator("#changelist-search [type=submit]").click()
    row = page.locator("#result_list tbody tr", has_text=certificate.serial[:16])
    expect(row).to_have_count(1)
    row.locator("input[name=_selected_action]").check()
    page.locator("select[name=action]").select_option("revoke_selected")
    page.locator("#changelist-form button[name=index]").click()

    # Step two: the confirmation names the certificate and asks for the reason.
    expect(page.locator("#to-revoke")).to_contain_text(certificate.serial)
    # No reason is chosen for the agent, and the comment is required.
    expect(page.locator("#id_reason")).to_have_value("")
    expect(page.locator("#id_comment")).to_have_attribute("required", "")
    page.locator("#id_reason").select_option("keyCompromise")
    page.locator("#id_comment").fill("Ordinateur du cabinet volé, appel du Dr Weber.")
    shot(page, "42-admin-revoke-confirmation")
    page.locator("#revocation-form [type=submit]").click()

    expect(page.locator(".messagelist .success")).to_have_count(1)
    shot(page, "43-admin-revoked")
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == "keyCompromise"
    assert certificate.revoked_by == agent


@pytest.mark.parametrize("width", [1280, 1600])
@pytest.mark.usefixtures("helpdesk_group")
def test_certificate_list_shows_state_revoked_and_reason(
    site: Site, page: Page, shot: Callable[[Page, str], Path], width: int
) -> None:
    """None of the list's columns hides under the filter panel or off the screen."""
    certificate = _issued_certificate()
    agent = _helpdesk_agent()
    page.set_viewport_size({"width": width, "height": 800})
    page.context.add_cookies(_session_cookie(site, agent))

    page.goto(site.url + "/admin/mycert/certificate/")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    shot(page, "41-admin-certificates" if width == 1280 else "44-admin-certificates-1600")
    columns = ("serial_prefix", "professional", "state", "revoked", "revocation_reason")
    for column in (*columns, "valid_until", "pem_link"):
        header = page.locator(f"#result_list thead th.column-{column}")
        expect(header).to_be_visible()
        visible = page.evaluate(
            """(selector) => {
                const th = document.querySelector(selector);
                const box = th.getBoundingClientRect();
                const x = box.left + box.width / 2, y = box.top + box.height / 2;
                const top = document.elementFromPoint(x, y);
                return box.right <= window.innerWidth && top !== null && th.contains(top);
            }""",
            f"#result_list thead th.column-{column}",
        )
        assert visible, f"the {column} column is hidden at {width} px"
    expect(page.locator("#result_list tbody tr")).to_contain_text(certificate.serial[:16])


def _session_cookie(site: Site, user: User) -> list[SetCookieParam]:
    """A logged-in admin session for ``user`` (the login itself is tested above)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return [
        {
            "name": settings.SESSION_COOKIE_NAME,
            "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": site.url,
        }
    ]
