"""Steps shared by the browser tests."""

from __future__ import annotations

from django.utils import timezone
from playwright.sync_api import Page, expect

from mycert.mail.gpg import openpgp
from mycert.models import Vendor
from mycert.services.vendors import vendor_add_confirmed

__all__ = ["log_in", "log_in_at_provider", "make_vendor", "switch_language"]


def log_in_at_provider(page: Page, sub: str) -> None:
    """On the OpenID provider's page (oidc-provider-mock 0.3), log in as ``sub``."""
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()


def log_in(page: Page, url: str, sub: str) -> None:
    """From the home page, « Se connecter avec LuxTrust » as ``sub`` (claims set before)."""
    page.goto(url + "/")
    page.locator("main a.button.primary[href='/oidc/login/']").click()
    log_in_at_provider(page, sub)


def switch_language(page: Page, code: str) -> None:
    """Use the header's language switch."""
    page.locator("#language-select").select_option(code)
    page.locator("form.lang-switch button[type=submit]").click()
    expect(page.locator("html")).to_have_attribute("lang", code)


def make_vendor(*, pgp_key: str, name: str = "Logiciel Médical SA") -> Vendor:
    """A vendor with its OpenPGP key (the form offers no other, by default), added and
    confirmed on the worker host as ``add_vendor`` does; its address is the key's."""
    address = openpgp().inspect_public_key(pgp_key, now=timezone.now()).addresses[0]
    return vendor_add_confirmed(
        name=name, email=address, pgp_key=pgp_key, actor="system", now=timezone.now()
    )
