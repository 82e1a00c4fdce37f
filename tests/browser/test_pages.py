"""Pages that explain themselves, checked in the browser and by axe-core.

Each page a professional can meet — the home page, the form (with and without errors),
« Demande envoyée. », My certificates, and one page per refusal (a login that is not
LuxTrust, an account that is not a professional's, a request already in progress) —
says in plain words what happened and what to do, and has no serious or critical
accessibility violation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import AxeReport, Site
from tests.browser.helpers import log_in, make_vendor, switch_language
from tests.support.oidc_provider import WEAK_ACR

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Shot = Callable[[Page, str], Path]
Axe = Callable[[Page], AxeReport]


def assert_accessible(axe: Axe, page: Page) -> None:
    report = axe(page)
    assert not report.serious, report.describe()


def test_form_and_its_errors_explain_what_to_do(
    site: Site, a11y_page: Page, shot: Shot, axe: Axe
) -> None:
    page = a11y_page
    make_vendor(pgp_key=site.vendor_key)
    page.goto(site.url + "/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre certificat eSanté")
    assert_accessible(axe, page)

    log_in(page, site.url, site.professional("pages-form"))
    expect(page).to_have_url(site.url + "/request/")
    # The usage information in the agency's words, with the helpdesk's address.
    usage = page.locator(".usage")
    expect(usage).to_contain_text("strictement personnel")
    expect(usage).to_contain_text("helpdesk@esante.lu")
    expect(page.get_by_label("Choisissez votre éditeur")).to_have_attribute(
        "aria-describedby", "vendor-help"
    )
    expect(page.locator("#vendor-help")).to_contain_text("copie du certificat")
    assert_accessible(axe, page)

    # Sent empty: each field says what to do, and is marked invalid for assistive tech.
    page.get_by_role("button", name="Envoyer").click()
    vendor = page.get_by_label("Choisissez votre éditeur")
    expect(vendor).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#vendor-error")).to_contain_text("Je n'ai pas d'éditeur")
    terms = page.get_by_label("Je confirme avoir pris connaissance des informations d'utilisation.")
    expect(terms).to_have_attribute("aria-invalid", "true")
    expect(terms).to_have_attribute("aria-describedby", "terms-error")
    expect(page.locator("#terms-error")).to_contain_text("informations d'utilisation")
    shot(page, "08-form-errors-fr")
    assert_accessible(axe, page)


def test_request_in_progress_and_my_certificates(
    site: Site, a11y_page: Page, shot: Shot, axe: Axe
) -> None:
    page = a11y_page
    log_in(page, site.url, site.professional("pages-progress"))
    page.get_by_label("Choisissez votre éditeur").select_option("none")
    page.get_by_label("Je confirme avoir pris connaissance des informations d'utilisation.").check()
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande envoyée.")
    expect(page.get_by_role("status")).to_have_text("Demande envoyée.")
    assert_accessible(axe, page)

    page.get_by_role("link", name="Suivre ma demande").click()
    expect(page.locator(".state")).to_have_text("soumise")
    assert_accessible(axe, page)

    # A second request while the first is in progress: a page that says so.
    response = page.goto(site.url + "/request/")
    assert response is not None
    assert response.status == 409
    expect(page.get_by_role("heading", level=1)).to_have_text("Une demande est déjà en cours")
    expect(page.locator("main")).to_contain_text("deux e-mails distincts")
    expect(page.locator("main")).to_contain_text("helpdesk@esante.lu")
    expect(page.get_by_role("link", name="Mes certificats").last).to_be_visible()
    shot(page, "09-problem-request-in-progress-fr")
    assert_accessible(axe, page)

    site.tasks.release()
    page.goto(site.url + "/certificates/")
    expect(page.locator(".state")).to_have_text("envoyée")
    assert_accessible(axe, page)


@pytest.mark.parametrize(
    ("sub", "claims", "status", "title", "name", "reason", "title_de"),
    [
        (
            "weak-login",
            {"acr": WEAK_ACR},
            403,
            "Une connexion avec LuxTrust est requise",
            "10-problem-weak-login-fr",
            "weak_acr",
            "Eine Anmeldung mit LuxTrust ist erforderlich",
        ),
        (
            "not-a-professional",
            {"professional_id": None},
            403,
            "Ce service est réservé aux professionnels de santé",
            "11-problem-not-a-professional-fr",
            "not_a_professional",
            "Dieser Dienst ist Gesundheitsfachkräften vorbehalten",
        ),
    ],
)
def test_login_refusals_have_their_own_page(
    site: Site,
    a11y_page: Page,
    shot: Shot,
    axe: Axe,
    sub: str,
    claims: dict[str, object],
    status: int,
    title: str,
    name: str,
    reason: str,
    title_de: str,
) -> None:
    page = a11y_page
    site.professional(sub, **claims)
    with page.expect_response(lambda r: "/login/refused/" in r.url) as refused:
        log_in(page, site.url, sub)
    assert refused.value.status == status
    # A stable address, not the callback's one-time code.
    expect(page).to_have_url(f"{site.url}/login/refused/{reason}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    main = page.locator("main")
    expect(main).to_contain_text("Que faire")
    expect(main).to_contain_text("helpdesk@esante.lu")
    expect(page.get_by_role("link", name="Retour à MyCert")).to_be_visible()
    # Not logged in: no professional menu.
    expect(page.get_by_role("link", name="Mes certificats")).to_have_count(0)
    shot(page, name)
    assert_accessible(axe, page)

    # Reloading shows the same explanation (the callback's code is not spent again)…
    reloaded = page.reload()
    assert reloaded is not None
    assert reloaded.status == status
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    # …and so does the language switch, in the chosen language.
    switch_language(page, "de")
    expect(page).to_have_url(f"{site.url}/login/refused/{reason}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(title_de)
    expect(page.locator("main")).not_to_contain_text("bereits verwendet")
