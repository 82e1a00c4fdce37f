"""The professional's journey in a real browser, in French, German and English.

Home → « Se connecter avec LuxTrust » → the OpenID provider's page → the form (usage
information, helpdesk contact) → « Envoyer » → « Demande envoyée. » → My certificates,
which moves from « soumise » to « envoyée » by itself when the worker is done.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from mycert.models import Certificate, CertificateRequest
from tests.browser.conftest import AxeReport, Site
from tests.browser.helpers import log_in, log_in_at_provider, make_vendor, switch_language

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Shot = Callable[[Page, str], Path]

# What each language shows at each step (the catalogs' wording).
TEXT = {
    "fr": {
        "login": "Se connecter avec LuxTrust",
        "usage": "Informations d'utilisation",
        "confirm": "Je confirme avoir pris connaissance des informations d'utilisation.",
        "vendor": "Choisissez votre éditeur",
        "send": "Envoyer",
        "sent": "Demande envoyée.",
        "follow": "Suivre ma demande",
        "submitted": "soumise",
        "done": "envoyée",
        "mine": "Mes certificats",
    },
    "de": {
        "login": "Mit LuxTrust anmelden",
        "usage": "Nutzungsinformationen",
        "confirm": "Ich bestätige, dass ich die Nutzungsinformationen gelesen habe.",
        "vendor": "Wählen Sie Ihren Softwareanbieter",
        "send": "Senden",
        "sent": "Anfrage gesendet.",
        "follow": "Meine Anfrage verfolgen",
        "submitted": "eingereicht",
        "done": "versendet",
        "mine": "Meine Zertifikate",
    },
    "en": {
        "login": "Log in with LuxTrust",
        "usage": "Usage information",
        "confirm": "I confirm that I have read the usage information.",
        "vendor": "Choose your vendor",
        "send": "Send",
        "sent": "Request sent.",
        "follow": "Follow my request",
        "submitted": "submitted",
        "done": "sent",
        "mine": "My certificates",
    },
}


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_professional_journey(site: Site, page: Page, shot: Shot, language: str) -> None:
    text = TEXT[language]
    vendor = make_vendor(pgp_key=site.vendor_key)
    sub = site.professional(
        f"journey-{language}", email=f"anne.{language}@cabinet.example.lu", given_name="Anne"
    )
    n = {"fr": 0, "de": 20, "en": 30}[language]

    def name(step: int, what: str) -> str:
        return f"{n + step:02d}-{what}-{language}"

    page.goto(site.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    if language != "fr":
        switch_language(page, language)
    shot(page, name(1, "home"))

    page.get_by_role("link", name=text["login"]).click()
    expect(page).to_have_url(re.compile(re.escape(site.oidc.issuer) + "/oauth2/authorize"))
    if language == "fr":
        shot(page, "02-provider-login")
    log_in_at_provider(page, sub)

    # The form: usage information, helpdesk contact, vendor list, checkbox, button.
    expect(page).to_have_url(site.url + "/request/")
    expect(page.get_by_role("heading", name=text["usage"])).to_be_visible()
    expect(page.locator(".usage")).to_contain_text("helpdesk@esante.lu")
    expect(page.locator(".site-footer")).to_contain_text("helpdesk@esante.lu")
    vendor_select = page.get_by_label(text["vendor"])
    expect(vendor_select).to_be_visible()
    shot(page, name(3, "form"))

    vendor_select.select_option(str(vendor.pk))
    page.get_by_label(text["confirm"]).check()
    page.get_by_role("button", name=text["send"]).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(text["sent"])
    expect(page.locator("main")).to_contain_text(vendor.name)
    shot(page, name(4, "request-sent"))

    page.get_by_role("link", name=text["follow"]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(text["mine"])
    state = page.locator(".state")
    expect(state).to_have_text(text["submitted"])
    shot(page, name(5, "my-certificates-submitted"))

    # The worker's turn. The page follows by itself: progress.js polls the states, then
    # fetches the page once more for the serial, the dates and the "Revoke…" link.
    site.tasks.release()
    expect(state).to_have_text(text["done"], timeout=20_000)
    request = CertificateRequest.objects.get(professional__oidc_subject=sub)
    assert request.status == CertificateRequest.Status.SENT
    assert request.language == language
    certificate = Certificate.objects.get(request=request)
    expect(page.locator("code.serial")).to_have_text(certificate.serial, timeout=10_000)
    expect(page.locator(".state")).to_have_text(text["done"])
    # Dates read day-first in every language, English included (not 12/04/2026 2:23 p.m.).
    submitted = timezone.localtime(request.submitted_at)
    day_first = {
        "fr": f"{submitted:%d/%m/%Y %H:%M}",
        "de": f"{submitted:%d.%m.%Y %H:%M}",
        "en": f"{submitted.day} {submitted:%b %Y, %H:%M}",
    }[language]
    expect(page.locator(f"#request-{request.pk} td").first).to_have_text(day_first)
    shot(page, name(6, "my-certificates-sent"))

    # Two e-mails to the professional, two to the vendor, in the professional's language:
    # the keystore one explains the installation and what to do on compromise; the
    # password one carries the password and points to the other e-mail, nothing more.
    keystore_mail, password_mail = site.smtp.to(f"anne.{language}@cabinet.example.lu")
    assert len(site.smtp.to(vendor.email)) == 2
    keystore_text = _plain_text(keystore_mail.message)
    for needed in ("Windows", "macOS", "keytool", "helpdesk@esante.lu", MAIL_TEXT[language]):
        assert needed in keystore_text, needed
    assert any(p.get_content_type() == "application/x-pkcs12" for p in keystore_mail.message.walk())
    password_text = _plain_text(password_mail.message)
    subject = str(make_header(decode_header(keystore_mail.subject)))
    assert f"{subject.strip()}" in " ".join(password_text.split()), "points to the other e-mail"
    assert not any(
        p.get_content_type() == "application/x-pkcs12" for p in password_mail.message.walk()
    )
    assert "keytool" not in password_text


# The sentence of the keystore e-mail for someone who did not ask for the certificate.
MAIL_TEXT = {
    "fr": "Vous n'avez pas demandé ce certificat ?",
    "de": "Sie haben dieses Zertifikat nicht beantragt?",
    "en": "You did not ask for this certificate?",
}


def _plain_text(message: Message) -> str:
    texts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            texts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return "\n".join(texts)


def test_professional_revokes_own_certificate(
    site: Site, a11y_page: Page, shot: Shot, axe: Callable[[Page], AxeReport]
) -> None:
    page = a11y_page
    sub = site.professional("self-revoke", email="luc.schmit@cabinet.example.lu")
    log_in(page, site.url, sub)
    page.get_by_label(TEXT["fr"]["vendor"]).select_option("none")
    page.get_by_label(TEXT["fr"]["confirm"]).check()
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande envoyée.")
    site.tasks.release()
    page.goto(site.url + "/certificates/")
    expect(page.locator(".state")).to_have_text("envoyée")
    certificate = Certificate.objects.get(professional__oidc_subject=sub)

    # The link names the certificate for screen readers (one link per row).
    page.get_by_role("link", name=f"Révoquer… {certificate.serial}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Révoquer mon certificat")
    expect(page.locator("main")).to_contain_text(certificate.serial)
    shot(page, "12-revoke-own-certificate-fr")
    # Sent without a choice: the page says what is missing.
    page.get_by_role("button", name="Révoquer ce certificat").click()
    expect(page.locator("#reason-error")).to_have_text(
        "Indiquez pourquoi vous révoquez le certificat."
    )
    expect(page.locator("#confirm-error")).to_have_text(
        "Cochez la case pour confirmer la révocation du certificat."
    )
    page.get_by_label("Je n'ai plus besoin de ce certificat").check()
    page.get_by_label(re.compile("^Je comprends que le certificat cessera")).check()
    report = axe(page)
    assert not report.serious, report.describe()
    page.get_by_role("button", name="Révoquer ce certificat").click()

    expect(page).to_have_url(site.url + "/certificates/")
    expect(page.locator(".messages")).to_be_visible()
    expect(page.locator(".state")).to_have_text("révoquée")
    expect(page.get_by_role("link", name=re.compile("^Révoquer…"))).to_have_count(0)
    shot(page, "13-my-certificates-revoked-fr")
    report = axe(page)
    assert not report.serious, report.describe()
    certificate.refresh_from_db()
    assert certificate.revoked_at is not None
    assert certificate.revocation_reason == "cessationOfOperation"
    assert certificate.revoked_via == Certificate.RevokedVia.PROFESSIONAL


def test_logout_ends_the_session_here_and_at_the_portal(site: Site, page: Page) -> None:
    """« Se déconnecter »: MyCert's session ends, then the portal's (RP-Initiated Logout)."""
    log_in(page, site.url, site.professional("journey-logout"))
    expect(page).to_have_url(site.url + "/request/")

    page.get_by_role("button", name="Se déconnecter").click()

    # The provider's end-session page, told who is leaving and where to send them back.
    expect(page.get_by_role("heading", name="End Session")).to_be_visible()
    parameters = page.locator("details dl")
    expect(parameters).to_contain_text("id_token_hint")
    expect(parameters).to_contain_text(site.url + "/")
    page.get_by_role("button", name="End session").click()

    expect(page).to_have_url(site.url + "/")
    expect(page.get_by_role("button", name="Se déconnecter")).to_have_count(0)
    # The form needs a login again: it sends the browser to the portal.
    page.goto(site.url + "/request/")
    expect(page).not_to_have_url(site.url + "/request/")
    expect(page.locator("input[name=sub]")).to_be_visible()
