"""« Mon certificat fonctionne-t-il ? » in the browser, through the real nginx (issue #15).

Chromium presents a MyCert keystore (Playwright's ``client_certificates``: the .p12 and its
password) to nginx running deploy/nginx/mycert-check.conf in front of the live server,
as a professional's browser with the keystore imported would. Playwright does the TLS
handshake with the client certificate itself, in a proxy between Chromium and the server
(Chromium's own certificate selection cannot be driven headless); the server side, nginx
and Django, is the real one. In French, German and English: a valid certificate, a
revoked one, and none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from mycert.services.revocation import certificate_revoke
from tests.browser.conftest import VIEWPORT, AxeReport
from tests.support import keystores
from tests.support.tls_servers import Nginx, check_site, free_port, server_certificate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Shot = Callable[[Page, str], Path]

LOCALES = {"fr": "fr-FR", "de": "de-DE", "en": "en-GB"}
EXPECTED = {
    "ok": {"fr": "non révoqué", "de": "nicht widerrufen", "en": "not revoked"},
    "revoked": {
        "fr": "a été révoqué le",
        "de": "widerrufen",
        "en": "was revoked on",
    },
    "none": {
        "fr": "n'a présenté aucun certificat",
        "de": "kein Zertifikat vorgelegt",
        "en": "did not present any certificate",
    },
}
SHOT_NUMBER = {"fr": 50, "de": 60, "en": 70}


@pytest.fixture
def check_url(live_server: Any, ca: Any, tmp_path: Path, settings: Any) -> Iterator[str]:
    certificate, key = server_certificate(tmp_path)
    port = free_port()
    settings.MYCERT_CHECK_BASE_URL = f"https://127.0.0.1:{port}"
    nginx = Nginx(tmp_path / "nginx")
    upstream = urlsplit(live_server.url).port
    nginx.start(
        check_site(port=port, upstream=f"127.0.0.1:{upstream}", certificate=certificate, key=key),
        port,
    )
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        nginx.stop()


def _open(
    browser: Browser, url: str, language: str, keystore: Path | None, password: str
) -> Iterator[Page]:
    certificates: list[Any] = (
        [{"origin": url, "pfxPath": str(keystore), "passphrase": password}] if keystore else []
    )
    context = browser.new_context(
        viewport=VIEWPORT,  # type: ignore[arg-type]
        locale=LOCALES[language],
        client_certificates=certificates,
        ignore_https_errors=True,  # the test nginx's self-signed server certificate
        bypass_csp=True,  # axe-core is injected
    )
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto(url + "/")
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_the_self_check_in_the_browser_valid_revoked_and_none(
    language: str,
    browser: Browser,
    check_url: str,
    tmp_path: Path,
    shot: Shot,
    axe: Callable[[Page], AxeReport],
) -> None:
    valid = keystores.issue(given_name="Marie", family_name="Thill")
    revoked = keystores.issue(given_name="Luc", family_name="Kieffer")
    assert valid.record is not None
    assert revoked.record is not None
    certificate_revoke(
        certificate_id=revoked.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=timezone.now(),
    )
    number = SHOT_NUMBER[language]
    cases = [
        ("ok", valid.write(tmp_path, "valid"), valid.password),
        ("revoked", revoked.write(tmp_path, "revoked"), revoked.password),
        ("none", None, ""),
    ]
    for offset, (case, p12, password) in enumerate(cases):
        for page in _open(browser, check_url, language, p12, password):
            card = page.locator("section.check")
            expect(card).to_contain_text(EXPECTED[case][language])
            if case == "ok":
                expect(card).to_contain_text("Marie Thill")
                expect(card).to_contain_text(valid.record.professional.professional_id)
                expect(card).to_contain_text(valid.record.serial)
            if case == "revoked":
                expect(card).to_contain_text(revoked.record.serial)
            if case == "none":
                expect(card).to_contain_text("Firefox")
            report = axe(page)
            assert not report.serious, report.describe()
            shot(page, f"{number + offset}-self-check-{case}-{language}")
