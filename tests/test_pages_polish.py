"""Small things a newcomer stumbled on (issue 23, point 12): one date format per row, no
title ending in a full stop, the self-check line only while a certificate can be
checked, status.json as a link, English quotes on the English self-check page."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from mycert.models import Certificate
from mycert.services.revocation import certificate_revoke
from tests.support import keystores

pytestmark = pytest.mark.django_db


@pytest.fixture
def holder(ca: Any, settings: Any) -> tuple[Client, Certificate]:
    settings.MYCERT_CHECK_BASE_URL = "https://check.example.lu"
    issued = keystores.issue()
    assert issued.record is not None
    client = Client(HTTP_ACCEPT_LANGUAGE="fr")
    client.force_login(issued.record.professional.user)
    return client, issued.record


def test_my_certificates_gives_every_date_of_a_row_in_one_format(
    holder: tuple[Client, Certificate],
) -> None:
    client, _certificate = holder
    page = client.get("/certificates/").content.decode()
    row = page[page.index("<tbody>") : page.index("</tbody>")]
    # dd/mm/yyyy everywhere, never « 4 décembre 2029 » beside « 07/12/2026 03:00 ».
    assert re.findall(r"\d{2}/\d{2}/\d{4}", row)
    assert not re.search(r"\d{1,2} (janvier|février|mars|avril|mai|juin|juillet|août)", row)
    assert not re.search(r"\d{1,2} (septembre|octobre|novembre|décembre) \d{4}", row)


def test_the_check_line_is_shown_only_while_a_certificate_can_be_checked(
    holder: tuple[Client, Certificate],
) -> None:
    client, certificate = holder
    assert (
        "Vérifiez que votre certificat fonctionne" in client.get("/certificates/").content.decode()
    )

    certificate_revoke(
        certificate_id=certificate.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )

    page = client.get("/certificates/").content.decode()
    assert "Vérifiez que votre certificat fonctionne" not in page


def test_the_request_sent_page_title_has_no_full_stop(holder: tuple[Client, Certificate]) -> None:
    client, certificate = holder
    page = client.get(f"/request/sent/{certificate.request_id}/").content.decode()
    found = re.search(r"<title>(.*?)</title>", page, re.S)
    assert found
    title = html.unescape(found.group(1))
    assert title.startswith("Demande envoyée ·"), title


@pytest.mark.parametrize("language", ["fr", "de", "en"])
def test_the_self_check_page_links_status_json(ca: Any, language: str) -> None:
    page = Client().get("/check/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert '<a href="status.json">status.json</a>' in page


def test_the_english_self_check_page_uses_english_quotes(ca: Any) -> None:
    page = html.unescape(Client().get("/check/", HTTP_ACCEPT_LANGUAGE="en").content.decode())
    main = page[page.index("<main") :]
    assert "«" not in main
    assert "»" not in main
    assert "“MyCert”" in main
