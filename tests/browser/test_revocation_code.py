"""« Révoquer sans connexion » in a real browser, in French, German and English (issue 23).

The certificate is issued by the real task and its e-mails reach the test's SMTP server;
the code is read from the password e-mail, as its holder would. From the home page's
link: a wrong code first (refused, the field emptied), then the right one, the holder
and validity, a reason and the tick box, « Certificat révoqué ». axe-core on each step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from mycert.models import Certificate
from mycert.pki import generate_revocation_code
from tests.browser.conftest import AxeReport, Site
from tests.browser.helpers import switch_language
from tests.factories import CertificateRequestFactory, ProfessionalFactory
from tests.support.id_tokens import trusting_signing_provider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Shot = Callable[[Page, str], Path]
Axe = Callable[[Page], AxeReport]

CODE_PATTERN = re.compile(r"\b(?:[A-Za-z0-9]{5}-){4}[A-Za-z0-9]{5}\b")

TEXT = {
    "fr": {
        "title": "Révoquer sans connexion",
        "continue": "Continuer",
        "refused": "ne correspondent à aucun certificat révocable",
        "confirm_title": "Révoquer ce certificat ?",
        "holder": "Titulaire",
        "reason": "Le keystore ou son mot de passe a pu être compromis",
        "revoke": "Révoquer ce certificat",
        "done": "Certificat révoqué",
    },
    "de": {
        "title": "Ohne Anmeldung widerrufen",
        "continue": "Weiter",
        "refused": "passen zu keinem widerrufbaren Zertifikat",
        "confirm_title": "Dieses Zertifikat widerrufen?",
        "holder": "Inhaber",
        "reason": "Jemand anderes",
        "revoke": "Dieses Zertifikat widerrufen",
        "done": "Zertifikat widerrufen",
    },
    "en": {
        "title": "Revoke without logging in",
        "continue": "Continue",
        "refused": "do not match a certificate that can be revoked",
        "confirm_title": "Revoke this certificate?",
        "holder": "Holder",
        "reason": "Someone else",
        "revoke": "Revoke this certificate",
        "done": "Certificate revoked",
    },
}


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text/plain part")


def _issued_with_code(site: Site, language: str) -> tuple[Certificate, str]:
    """Issue and send as a worker does; read the code from the password e-mail."""
    professional = ProfessionalFactory.create(language=language, given_name="Anne")
    # The site trusts the mock provider; this request is proven by the tests' signer.
    with trusting_signing_provider():
        request = CertificateRequestFactory.create(professional=professional, language=language)
        site.tasks.task.apply(args=(request.pk,), throw=True)
    certificate = Certificate.objects.get(request=request)
    mails = [m.message for m in site.smtp.to(professional.email)]
    codes = [code for mail in mails for code in CODE_PATTERN.findall(_text(mail))]
    assert len(codes) == 1, "one code, in the password e-mail"
    return certificate, codes[0]


def _assert_accessible(axe: Axe, page: Page) -> None:
    report = axe(page)
    assert not report.serious, report.describe()


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_revoke_without_logging_in(
    site: Site, a11y_page: Page, shot: Shot, axe: Axe, language: str
) -> None:
    page = a11y_page
    text = TEXT[language]
    certificate, code = _issued_with_code(site, language)

    page.goto(site.url + "/")
    if language != "fr":
        switch_language(page, language)
    # Linked from the login page, and from every page's footer.
    expect(page.locator("footer").get_by_role("link", name=text["title"])).to_be_visible()
    page.locator("main").get_by_role("link", name=text["title"]).click()
    expect(page).to_have_url(site.url + "/revoke/")
    expect(page.get_by_role("heading", level=1)).to_have_text(text["title"])
    expect(page).to_have_title(re.compile(f"^{re.escape(text['title'])}"))
    _assert_accessible(axe, page)

    # A wrong code: the one answer for every refusal; the code is not kept in the page.
    identifier = page.locator("input[name=identifier]")
    code_field = page.locator("input[name=code]")
    identifier.fill(certificate.serial[:16].upper())
    code_field.fill(generate_revocation_code())
    page.get_by_role("button", name=text["continue"]).click()
    expect(page.get_by_role("alert")).to_contain_text(text["refused"])
    expect(code_field).to_have_value("")
    expect(identifier).to_have_value(certificate.serial[:16].upper())
    _assert_accessible(axe, page)
    if language == "fr":
        shot(page, "14-revoke-without-login-refused-fr")

    # The right code, pasted with spaces where the e-mail has hyphens.
    code_field.fill(code.replace("-", " "))
    page.get_by_role("button", name=text["continue"]).click()
    expect(page).to_have_url(site.url + "/revoke/confirm/")
    expect(page.get_by_role("heading", level=1)).to_have_text(text["confirm_title"])
    facts = page.locator("table.facts")
    expect(facts).to_contain_text(text["holder"])
    expect(facts).to_contain_text(certificate.professional.full_name)
    expect(facts).to_contain_text(certificate.professional.professional_id)
    expect(facts).to_contain_text(certificate.serial)
    _assert_accessible(axe, page)
    if language == "fr":
        shot(page, "15-revoke-without-login-confirm-fr")

    page.get_by_label(re.compile(f"^{re.escape(text['reason'])}")).check()
    page.locator("input[name=confirm]").check()
    page.get_by_role("button", name=text["revoke"]).click()
    expect(page).to_have_url(site.url + "/revoke/done/")
    expect(page.get_by_role("heading", level=1)).to_have_text(text["done"])
    expect(page.locator("main")).to_contain_text(certificate.serial[:16])
    _assert_accessible(axe, page)
    if language == "fr":
        shot(page, "16-revoke-without-login-done-fr")

    certificate.refresh_from_db()
    assert certificate.revoked_via == Certificate.RevokedVia.CODE
    assert certificate.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE

    # The same code again: spent.
    page.goto(site.url + "/revoke/")
    page.locator("input[name=identifier]").fill(certificate.serial)
    page.locator("input[name=code]").fill(code)
    page.get_by_role("button", name=text["continue"]).click()
    expect(page.get_by_role("alert")).to_contain_text(text["refused"])


def test_the_page_fits_a_phone(site: Site, a11y_page: Page, shot: Shot, axe: Axe) -> None:
    page = a11y_page
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(site.url + "/revoke/")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 375, f"the page scrolls sideways ({scroll_width} px)"
    _assert_accessible(axe, page)
    shot(page, "17-revoke-without-login-375px-fr")
