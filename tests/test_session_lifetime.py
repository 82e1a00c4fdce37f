"""Sessions end after MYCERT_SESSION_MAX_SECONDS, however busy (an absolute lifetime)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse

from mycert.middleware import SESSION_STARTED_KEY
from tests.factories import ProfessionalFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client: Client) -> Client:
    professional = ProfessionalFactory.create()
    client.force_login(professional.user)
    return client


def _age_session(client: Client, seconds: int) -> None:
    session = client.session
    session[SESSION_STARTED_KEY] = int(time.time()) - seconds
    session.save()


def test_the_login_starts_the_clock(logged_in: Client) -> None:
    started = logged_in.session[SESSION_STARTED_KEY]
    assert abs(started - time.time()) < 60


def test_a_session_past_its_absolute_lifetime_is_logged_out(
    logged_in: Client, settings: Any
) -> None:
    settings.MYCERT_SESSION_MAX_SECONDS = 8 * 3600
    _age_session(logged_in, 8 * 3600 + 1)

    response = logged_in.get(reverse("my-certificates"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("oidc-login"))
    assert SESSION_KEY not in logged_in.session


def test_a_busy_session_within_its_lifetime_stays(logged_in: Client, settings: Any) -> None:
    settings.MYCERT_SESSION_MAX_SECONDS = 8 * 3600
    _age_session(logged_in, 8 * 3600 - 60)

    response = logged_in.get(reverse("my-certificates"))

    assert response.status_code == 200
    assert SESSION_KEY in logged_in.session


def test_the_status_poll_cannot_keep_an_old_session_alive(logged_in: Client, settings: Any) -> None:
    settings.MYCERT_SESSION_MAX_SECONDS = 3600
    _age_session(logged_in, 3601)

    response = logged_in.get(reverse("my-certificates-status"))

    assert response.status_code in (302, 401, 403)
    assert SESSION_KEY not in logged_in.session
