"""progress.js stops polling after its limit: a tab left open does not keep a session alive."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.conftest import Site
from tests.browser.helpers import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_my_certificates_stops_polling_after_its_limit(site: Site, page: Page) -> None:
    log_in(page, site.url, site.professional("progress-limit"))
    page.get_by_label("Choisissez votre éditeur").select_option("none")
    page.get_by_label("Je confirme avoir pris connaissance des informations d'utilisation.").check()
    page.get_by_role("button", name="Envoyer").click()
    page.goto(site.url + "/certificates/")
    expect(page.locator(".state")).to_have_text("soumise")
    polls: list[str] = []

    def count(request: Request) -> None:
        if "status" in request.url:
            polls.append(request.url)

    page.on("request", count)
    # The limit reached: a poll already scheduled may still go, none after it.
    page.locator("table[data-status-url]").evaluate(
        "table => table.setAttribute('data-poll-max-seconds', '0')"
    )
    page.wait_for_timeout(3_000)  # longer than one poll interval (2 s)
    seen = len(polls)
    assert seen <= 1

    site.tasks.release()
    page.wait_for_timeout(6_000)

    assert len(polls) == seen
    expect(page.locator(".state")).to_have_text("soumise")  # reloading shows the news
    page.reload()
    expect(page.locator(".state")).to_have_text("envoyée")
