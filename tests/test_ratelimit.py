"""Rate limits on login and on the request form: 429 past the limit, free again next window."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory

from mycert.ops import ratelimit
from tests.factories import ProfessionalFactory

pytestmark = pytest.mark.django_db


class Clock:
    """Stands in for ``mycert.ops.ratelimit.now``: tests step over a window instead of sleeping."""

    def __init__(self) -> None:
        self.value = 1_000_020.0  # inside a 60 s window starting at 1_000_020 - 0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit, "now", clock)
    return clock


def test_login_callback_429_after_the_limit_then_ok_after_the_window(
    client: Client, settings: Any, clock: Clock
) -> None:
    settings.MYCERT_RATELIMIT_LOGIN = "3/60"
    for _ in range(3):
        assert client.get("/oidc/callback/").status_code != 429
    refused = client.get("/oidc/callback/")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Trop de tentatives" in refused.content.decode()  # the French problem page
    clock.value += 60
    assert client.get("/oidc/callback/").status_code != 429


def test_login_and_callback_share_one_budget(client: Client, settings: Any, clock: Clock) -> None:
    settings.MYCERT_RATELIMIT_LOGIN = "2/60"
    client.get("/oidc/callback/")
    client.get("/oidc/callback/")
    assert client.get("/oidc/login/").status_code == 429


def test_the_limit_is_per_client_address_behind_a_trusted_proxy(
    client: Client, settings: Any, clock: Clock
) -> None:
    settings.MYCERT_RATELIMIT_LOGIN = "1/60"
    settings.MYCERT_TRUSTED_PROXY_COUNT = 1
    first: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    other: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    assert client.get("/oidc/callback/", **first).status_code != 429
    assert client.get("/oidc/callback/", **first).status_code == 429
    assert client.get("/oidc/callback/", **other).status_code != 429
    # A client cannot pick a fresh address: only the proxy's (rightmost) entry counts.
    spoofed: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "203.0.113.99, 198.51.100.7"}
    assert client.get("/oidc/callback/", **spoofed).status_code == 429


def test_request_form_post_is_limited_per_user(settings: Any, clock: Clock, client: Client) -> None:
    settings.MYCERT_RATELIMIT_REQUEST = "2/3600"
    professional = ProfessionalFactory.create()
    client.force_login(professional.user)
    for _ in range(2):
        assert client.post("/request/", {}).status_code == 400  # the form's own refusal
    assert client.post("/request/", {}).status_code == 429
    assert client.get("/request/").status_code == 200  # reading the form is not limited
    # Same user from another address: still limited (the per-user key).
    assert client.post("/request/", {}, REMOTE_ADDR="192.0.2.50").status_code == 429
    # Another professional from another address is not.
    other = Client()
    other.force_login(ProfessionalFactory.create().user)
    assert other.post("/request/", {}, REMOTE_ADDR="192.0.2.51").status_code == 400
    clock.value += 3600
    assert client.post("/request/", {}).status_code == 400


def test_limits_can_be_switched_off(client: Client, settings: Any, clock: Clock) -> None:
    settings.MYCERT_RATELIMIT_LOGIN = "1/60"
    settings.MYCERT_RATELIMIT_ENABLED = False
    for _ in range(3):
        assert client.get("/oidc/callback/").status_code != 429


def test_client_ip() -> None:
    factory = RequestFactory()
    request = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 5.6.7.8")
    from django.test import override_settings

    with override_settings(MYCERT_TRUSTED_PROXY_COUNT=0):
        assert ratelimit.client_ip(request) == "10.0.0.1"
    with override_settings(MYCERT_TRUSTED_PROXY_COUNT=1):
        assert ratelimit.client_ip(request) == "5.6.7.8"
    with override_settings(MYCERT_TRUSTED_PROXY_COUNT=2):
        assert ratelimit.client_ip(request) == "1.2.3.4"
    with override_settings(MYCERT_TRUSTED_PROXY_COUNT=5):
        assert ratelimit.client_ip(request) == "1.2.3.4"
    garbage = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")
    with override_settings(MYCERT_TRUSTED_PROXY_COUNT=1):
        assert ratelimit.client_ip(garbage) == "10.0.0.1"


@pytest.mark.parametrize("value", ["", "3", "a/b", "0/60", "3/0"])
def test_bad_rates_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"COUNT/SECONDS|positive"):
        ratelimit.parse_rate(value)
