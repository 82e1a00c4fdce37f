"""« Mes certificats » on a phone, 375 px wide (issue 23, point 7): nothing scrolls
sideways; the serial and « Révoquer… » are on screen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.browser.conftest import AxeReport, Site
from tests.browser.helpers import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE: ViewportSize = {"width": 375, "height": 812}


def test_my_certificates_fits_a_phone_without_scrolling_sideways(
    site: Site,
    a11y_page: Page,
    shot: Callable[[Page, str], Path],
    axe: Callable[[Page], AxeReport],
) -> None:
    page = a11y_page
    page.set_viewport_size(PHONE)
    log_in(page, site.url, site.professional("phone-width"))
    page.get_by_label("Choisissez votre éditeur").select_option("none")
    page.get_by_label("Je confirme avoir pris connaissance des informations d'utilisation.").check()
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande envoyée.")
    site.tasks.release()
    page.goto(site.url + "/certificates/")
    expect(page.locator(".state")).to_have_text("envoyée")
    revoke = page.get_by_role("link", name="Révoquer…")
    expect(revoke).to_be_visible()

    overflow = page.evaluate(
        """() => [document.documentElement.scrollWidth - document.documentElement.clientWidth,
                 ...Array.from(document.querySelectorAll('.table-wrap'),
                               (e) => e.scrollWidth - e.clientWidth)]"""
    )
    assert overflow
    assert max(overflow) <= 0, overflow
    # Each value beside its column's name, nothing spilling onto the next line's.
    spilling = page.evaluate(
        """() => Array.from(document.querySelectorAll('table.certificates td'))
                 .filter((td) => td.scrollHeight > td.clientHeight + 1)
                 .map((td) => td.dataset.label)"""
    )
    assert spilling == [], spilling
    for element in (page.locator("code.serial"), revoke):
        box = element.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"], box
    shot(page, "14-my-certificates-375px-fr")
    report = axe(page)
    assert not report.serious, report.describe()
