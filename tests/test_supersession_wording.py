"""Supersession said the same way everywhere (issue 23, point 4): the form, the password
e-mail, « Mes certificats » and the admin all give MYCERT_SUPERSEDE_AFTER_DAYS after the
new certificate's delivery, and the old certificate shows « sera remplacé le … »."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import override

from mycert.models import Certificate, CertificateRequest, Delivery, Professional
from mycert.services.issuance import request_issue
from tests.factories import CertificateRequestFactory, ProfessionalFactory

pytestmark = pytest.mark.django_db


def _issue(professional: Professional, *, delivered_at: Any = None) -> Certificate:
    request = CertificateRequestFactory.create(professional=professional)
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    Delivery.objects.filter(certificate_id=outcome.certificate_id).update(
        status=Delivery.Status.SENT, sealed_payload=None
    )
    CertificateRequest.objects.filter(pk=request.pk).update(
        status=CertificateRequest.Status.SENT, completed_at=delivered_at or timezone.now()
    )
    return Certificate.objects.get(pk=outcome.certificate_id)


@pytest.fixture
def replaced(ca: Any, settings: Any) -> tuple[Certificate, str]:
    """An old certificate whose replacement was delivered two days ago, and the French
    date on which beat revokes it."""
    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 14
    professional = ProfessionalFactory.create(language="fr")
    old = _issue(professional, delivered_at=timezone.now() - timedelta(days=30))
    delivered = timezone.now() - timedelta(days=2)
    _issue(professional, delivered_at=delivered)
    with override("fr"):
        # In the list's own short format, as its other dates (issue 23, point 12).
        day = date_format(timezone.localtime(delivered + timedelta(days=14)), "SHORT_DATE_FORMAT")
    return old, day


def test_my_certificates_says_when_the_old_certificate_will_be_replaced(
    client: Client, replaced: tuple[Certificate, str]
) -> None:
    old, day = replaced
    client.force_login(old.professional.user)
    page = html.unescape(
        client.get(reverse("my-certificates"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    )
    row = page[page.index(f'id="request-{old.request_id}"') :]
    row = row[: row.index("</tr>")]
    assert f"sera remplacé le {day}" in row
    assert page.count("sera remplacé le") == 1  # the new one is not being replaced


def test_the_admin_says_when_the_old_certificate_will_be_replaced(
    client: Client, replaced: tuple[Certificate, str]
) -> None:
    _old, day = replaced
    agent = User.objects.create_user("agent", password="x", is_staff=True)
    agent.groups.add(Group.objects.get(name="Helpdesk"))
    client.force_login(agent)
    page = html.unescape(
        client.get(
            reverse("admin:mycert_certificate_changelist"), HTTP_ACCEPT_LANGUAGE="fr"
        ).content.decode()
    )
    assert f"sera remplacé le {day}" in page
    assert page.count("sera remplacé le") == 1


def test_the_form_gives_the_same_delay_as_the_password_email(
    client: Client, ca: Any, settings: Any
) -> None:
    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 14
    professional = ProfessionalFactory.create(language="fr")
    _issue(professional)
    client.force_login(professional.user)

    page = html.unescape(
        client.get(reverse("request-certificate"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    )

    assert "reste valable 14 jours après la remise du nouveau" in page
    assert "dès que le nouveau aura été délivré" not in page  # the old, contradicting words
