"""The form works with the keyboard alone, and the focus is always visible."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from mycert.models import CertificateRequest
from tests.browser.conftest import Site
from tests.browser.helpers import log_in, make_vendor

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FOCUSED_ID = "() => document.activeElement && document.activeElement.id"
FOCUSED_OUTLINE = (
    "() => { const s = getComputedStyle(document.activeElement);"
    " return [s.outlineStyle, s.outlineWidth]; }"
)


def tab_to(page: Page, element_id: str, *, limit: int = 40) -> int:
    """Press Tab until the element ``element_id`` has the focus; return how many presses."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        assert page.evaluate(FOCUSED_OUTLINE)[0] != "none", "focus must be visible"
        if page.evaluate(FOCUSED_ID) == element_id:
            return presses
    raise AssertionError(f"#{element_id} cannot be reached with Tab")


def test_keyboard_only_request(site: Site, page: Page, shot: Callable[[Page, str], Path]) -> None:
    vendor = make_vendor(pgp_key=site.vendor_key)
    sub = site.professional("keyboard-user")
    log_in(page, site.url, sub)
    expect(page).to_have_url(site.url + "/request/")

    # The first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    expect(page.locator(".skip-link")).to_be_in_viewport()

    tab_to(page, "id_vendor")
    # Arrow keys on the closed list: « Je n'ai pas d'éditeur », then the (only) vendor.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#id_vendor")).to_have_value(str(vendor.pk))

    assert tab_to(page, "id_terms_accepted", limit=1) == 1, "the checkbox follows the list"
    page.keyboard.press("Space")
    expect(page.locator("#id_terms_accepted")).to_be_checked()

    page.keyboard.press("Tab")
    send = page.get_by_role("button", name="Envoyer")
    expect(send).to_be_focused()
    shot(page, "07-form-keyboard-focus-fr")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_have_text("Demande envoyée.")
    request = CertificateRequest.objects.get(professional__oidc_subject=sub)
    assert request.vendor_id == vendor.pk
    assert request.terms_accepted_at is not None
