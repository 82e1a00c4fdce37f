"""Login through a real OpenID provider process (oidc-provider-mock), nothing mocked.

Each refusal is checked the same way: a 4xx page, no professional created or changed,
no user in the session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from django.contrib.auth import SESSION_KEY, get_user_model
from django.test import Client
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from pytest_django.fixtures import Settings as SettingsWrapper

from mycert import oidc
from mycert.models import AuditEvent, Professional
from mycert.oidc import LoginRefused, RefusalCode
from mycert.services.professionals import oidc_username, professional_login
from mycert.views.auth import ID_TOKEN_SESSION_KEY
from tests.support.oidc_provider import (
    CLIENT_ID,
    LUXTRUST_ACR,
    WEAK_ACR,
    OidcProvider,
    callback_path,
    login_professional,
    professional_claims,
    run_oidc_provider,
    start_login,
)

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {**_query(url), **params}
    return urlunsplit(parts._replace(query=urlencode(query)))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _jwt_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return header


def _assert_refused(
    client: Client,
    response: Any,
    status: int,
    *,
    reason: str | None = "unchecked",
) -> None:
    """A plain page with ``status``, no session user, no professional, ``reason`` audited.

    ``reason=None``: nothing audited (state failures are logged only). The callback
    answers with a redirect to the refusal's stable address, which ``response`` follows.
    """
    response = _followed(client, response)
    assert response.status_code == status, response.content.decode()
    assert SESSION_KEY not in client.session
    assert not Professional.objects.exists()
    assert not AuditEvent.objects.filter(action="auth.login").exists()
    if reason != "unchecked":
        assert [event["reason"] for event in _refusals()] == ([reason] if reason else [])


def _followed(client: Client, response: Any) -> Any:
    """The refusal page a callback's redirect leads to (``response`` itself otherwise)."""
    if response.status_code == 302 and response["Location"].startswith("/login/refused/"):
        return client.get(response["Location"])
    return response


def _refusals() -> list[dict[str, Any]]:
    return [
        event.details
        for event in AuditEvent.objects.filter(action="auth.login_refused").order_by("pk")
    ]


@pytest.fixture
def en(client: Client) -> Client:
    """Read refusal pages in English (French is the default)."""
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture(scope="module")
def other_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A second, independent provider: other signing key."""
    with run_oidc_provider(tmp_path_factory.mktemp("oidc-other")) as provider:
        yield provider


@pytest.fixture(scope="module")
def expiring_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """A provider whose tokens expired ten minutes before they were issued."""
    with run_oidc_provider(tmp_path_factory.mktemp("oidc-exp"), "--token-max-age=-600") as provider:
        yield provider


# --- a successful login ----------------------------------------------------------------------


def test_login_creates_professional_and_session(
    client: Client, oidc_settings: OidcProvider
) -> None:
    response = login_professional(client, oidc_settings, "sub-marie", professional_claims())

    assert response.status_code == 302
    assert response["Location"] == "/request/"
    professional = Professional.objects.get()
    assert professional.oidc_subject == "sub-marie"
    assert professional.professional_id == "1234567890"
    assert (professional.given_name, professional.family_name) == ("Marie", "Muller")
    assert professional.email == "marie.muller@example.lu"
    user = professional.user
    assert client.session[SESSION_KEY] == str(user.pk)
    assert user.username == "oidc:sub-marie"
    assert not user.has_usable_password()
    assert not user.is_staff
    assert not user.is_superuser
    event = AuditEvent.objects.get(action="auth.login")
    assert event.actor == f"user:{user.pk}"
    assert event.details == {"acr": LUXTRUST_ACR, "created": True}
    # The next page really is open to this user.
    assert client.get("/request/").status_code == 200


def test_a_professional_with_a_valid_certificate_lands_on_my_certificates(
    client: Client, oidc_settings: OidcProvider, ca: Any
) -> None:
    """The form is for a first certificate; a holder comes back to see theirs, revoke
    it or follow its progress (issue 23, point 10). An explicit ``next`` still wins."""
    from django.utils import timezone

    from mycert.services.issuance import request_issue
    from tests.factories import CertificateRequestFactory
    from tests.support.id_tokens import trusting_signing_provider

    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    professional = Professional.objects.get()
    with trusting_signing_provider():
        request = CertificateRequestFactory.create(professional=professional)
        assert request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    client.logout()

    response = login_professional(client, oidc_settings, "sub-marie", professional_claims())
    assert response["Location"] == "/certificates/"
    client.logout()
    asked = login_professional(
        client, oidc_settings, "sub-marie", professional_claims(), next_url="/request/"
    )
    assert asked["Location"] == "/request/"


def test_second_login_updates_names_without_duplicating(
    client: Client, oidc_settings: OidcProvider
) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    first = Professional.objects.get()

    second_browser = Client()
    response = login_professional(
        second_browser,
        oidc_settings,
        "sub-marie",
        professional_claims(family_name="Muller-Weber", email="m.weber@example.lu"),
    )

    assert response.status_code == 302
    professional = Professional.objects.get()
    assert professional.pk == first.pk
    assert professional.family_name == "Muller-Weber"
    assert professional.email == "m.weber@example.lu"
    assert professional.user.last_name == "Muller-Weber"
    assert get_user_model().objects.count() == 1
    assert AuditEvent.objects.filter(action="auth.login").count() == 2


def test_matched_by_sub_never_by_email(client: Client, oidc_settings: OidcProvider) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    # Another subject with Marie's e-mail (and its own identifier) is another professional.
    response = login_professional(
        Client(), oidc_settings, "sub-other", professional_claims(professional_id="999")
    )
    assert response.status_code == 302
    assert Professional.objects.count() == 2
    assert Professional.objects.get(oidc_subject="sub-other").professional_id == "999"


def test_authorization_request_uses_pkce_s256_nonce_and_state(
    client: Client, oidc_settings: OidcProvider
) -> None:
    authorize_url = start_login(client)

    params = _query(authorize_url)
    assert authorize_url.startswith(oidc_settings.metadata()["authorization_endpoint"])
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == "http://testserver/oidc/callback/"
    assert set(params["scope"].split()) == {"openid", "profile", "email"}
    assert params["acr_values"].split() == [LUXTRUST_ACR, "urn:luxtrust:loa:substantial"]
    assert params["nonce"]
    assert params["state"]
    # RFC 7636 §4.2: the challenge is BASE64URL(SHA256(verifier)) of the kept verifier.
    assert params["code_challenge_method"] == "S256"
    state_data = client.session[f"_state_portal_{params['state']}"]["data"]
    digest = hashlib.sha256(state_data["code_verifier"].encode()).digest()
    assert params["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert state_data["nonce"] == params["nonce"]


def test_login_cycles_the_session_key(client: Client, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    authorize_url = start_login(client)
    key_before = client.session.session_key
    callback_url = oidc_settings.authorize(authorize_url, "sub-marie")

    client.get(callback_path(callback_url))

    assert key_before
    assert client.session.session_key != key_before
    assert SESSION_KEY in client.session


def test_token_without_kid_is_accepted(client: Client, oidc_settings: OidcProvider) -> None:
    """oidc-provider-mock signs without a kid (Authlib ≥ 1.7): one key must be enough."""
    response = login_professional(client, oidc_settings, "sub-marie", professional_claims())

    assert response.status_code == 302
    id_token = client.session[ID_TOKEN_SESSION_KEY]
    assert "kid" not in _jwt_header(id_token)
    assert len(oidc_settings.jwks()["keys"]) == 1


def test_single_key_jwks_without_kid_verifies(settings: SettingsWrapper) -> None:
    """The same with a key set that carries no kid at all (our own key and token)."""
    issuer = "https://portal.example"
    settings.OIDC_ISSUER = issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    key = RSAKey.generate_key(2048)
    public = key.as_dict(private=False)
    public.pop("kid", None)
    client = _preloaded_client(issuer, {"keys": [public]})
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "sub": "s",
        "exp": now + 300,
        "iat": now,
        "nonce": "n",
    }
    id_token = jwt.encode({"alg": "RS256"}, claims, key)
    assert "kid" not in _jwt_header(id_token)

    verified = oidc._verify_id_token(client, {"id_token": id_token}, nonce="n")

    assert verified["sub"] == "s"


def test_next_path_on_this_site_is_followed(client: Client, oidc_settings: OidcProvider) -> None:
    response = login_professional(
        client, oidc_settings, "sub-marie", professional_claims(), next_url="/certificates/?x=1"
    )
    assert response["Location"] == "/certificates/?x=1"


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http://testserver/x",
        "javascript:alert(1)",
    ],
)
def test_open_redirect_next_is_ignored(
    client: Client, oidc_settings: OidcProvider, next_url: str
) -> None:
    response = login_professional(
        client, oidc_settings, "sub-marie", professional_claims(), next_url=next_url
    )
    assert response.status_code == 302
    assert response["Location"] == "/request/"


# --- who may log in --------------------------------------------------------------------------


def test_weak_acr_is_refused_with_a_clear_page(en: Client, oidc_settings: OidcProvider) -> None:
    response = login_professional(en, oidc_settings, "sub-weak", professional_claims(acr=WEAK_ACR))

    _assert_refused(en, response, 403)
    page = _followed(en, response).content.decode()
    assert "LuxTrust" in page
    assert "smartcard, token or mobile app" in page
    assert _refusals() == [{"reason": "weak_acr", "sub": "sub-weak"}]


def test_weak_acr_page_speaks_french_by_default(
    client: Client, oidc_settings: OidcProvider
) -> None:
    response = login_professional(
        client, oidc_settings, "sub-weak", professional_claims(acr=WEAK_ACR)
    )
    _assert_refused(client, response, 403, reason="weak_acr")
    assert '<html lang="fr">' in _followed(client, response).content.decode()


def test_missing_acr_is_refused(client: Client, oidc_settings: OidcProvider) -> None:
    response = login_professional(client, oidc_settings, "sub-x", professional_claims(acr=None))
    _assert_refused(client, response, 403, reason="weak_acr")


def test_weak_login_ends_an_earlier_session(client: Client, oidc_settings: OidcProvider) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    assert SESSION_KEY in client.session
    before = Professional.objects.get()

    response = login_professional(
        client, oidc_settings, "sub-marie", professional_claims(acr=WEAK_ACR, family_name="Changed")
    )

    assert _followed(client, response).status_code == 403
    assert SESSION_KEY not in client.session
    assert Professional.objects.get().family_name == before.family_name


def test_a_name_too_long_for_a_certificate_is_refused_with_what_to_change(
    en: Client, oidc_settings: OidcProvider
) -> None:
    claims = professional_claims(given_name="Anne-Marie " + "G" * 40, family_name="W" * 50)
    response = login_professional(en, oidc_settings, "sub-long", claims)

    _assert_refused(en, response, 403)
    page = _followed(en, response).content.decode()
    assert "Your name is too long for a certificate" in page
    assert "Shorten your name in your eSanté account" in page
    assert _refusals() == [{"reason": "name_too_long", "sub": "sub-long"}]
    assert not Professional.objects.exists()


def test_an_internationalised_address_is_refused_with_what_to_change(
    en: Client, oidc_settings: OidcProvider
) -> None:
    claims = professional_claims(email="anne.müller@cabinet.example.lu")
    response = login_professional(en, oidc_settings, "sub-idn", claims)

    _assert_refused(en, response, 403)
    page = _followed(en, response).content.decode()
    assert "Your e-mail address cannot go into a certificate" in page
    assert _refusals() == [{"reason": "email_not_supported", "sub": "sub-idn"}]


def test_missing_professional_claim_is_refused(en: Client, oidc_settings: OidcProvider) -> None:
    response = login_professional(
        en, oidc_settings, "sub-patient", professional_claims(professional_id=None)
    )
    _assert_refused(en, response, 403)
    assert "health professionals" in _followed(en, response).content.decode()
    assert _refusals() == [{"reason": "not_a_professional", "sub": "sub-patient"}]


def test_missing_email_is_refused(client: Client, oidc_settings: OidcProvider) -> None:
    response = login_professional(client, oidc_settings, "sub-x", professional_claims(email=None))
    _assert_refused(client, response, 403, reason="missing_email")


def test_profile_missing_from_the_id_token_is_asked_from_userinfo(
    caplog: pytest.LogCaptureFixture,
    client: Client,
    oidc_settings: OidcProvider,
    settings: SettingsWrapper,
) -> None:
    """Without the profile and email scopes the mock leaves names and e-mail out of both
    the ID token and userinfo: MyCert asks userinfo, then refuses for want of an e-mail."""
    settings.MYCERT_OIDC_SCOPES = "openid"
    caplog.set_level("DEBUG", logger="urllib3")

    response = login_professional(client, oidc_settings, "sub-marie", professional_claims())

    _assert_refused(client, response, 403, reason="missing_email")
    assert "GET /userinfo" in caplog.text


def test_professional_id_of_another_subject_is_refused(
    client: Client, oidc_settings: OidcProvider
) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())

    other = Client()
    response = login_professional(
        other, oidc_settings, "sub-intruder", professional_claims(family_name="X")
    )

    assert _followed(other, response).status_code == 403
    assert SESSION_KEY not in other.session
    assert list(Professional.objects.values_list("oidc_subject", "family_name")) == [
        ("sub-marie", "Muller")
    ]


def test_a_refusal_has_a_stable_address_that_survives_reload_and_language_switch(
    client: Client, oidc_settings: OidcProvider
) -> None:
    """Reloading the callback would spend its state again and show a false reason."""
    response = login_professional(
        client, oidc_settings, "sub-weak", professional_claims(acr=WEAK_ACR)
    )
    assert response.status_code == 302
    assert response["Location"] == "/login/refused/weak_acr/"

    first = client.get(response["Location"])
    again = client.get(response["Location"])  # the browser's reload
    assert first.status_code == again.status_code == 403
    assert "Une connexion avec LuxTrust est requise" in again.content.decode()
    # The language switch posts back to the same address.
    switched = client.post(
        "/i18n/setlang/", {"language": "de", "next": response["Location"]}, follow=True
    )
    assert switched.redirect_chain[-1][0] == "/login/refused/weak_acr/"
    assert switched.status_code == 403
    assert '<html lang="de">' in switched.content.decode()
    assert "LuxTrust" in switched.content.decode()
    assert "bereits verwendet" not in switched.content.decode()
    # Shown once, audited once.
    assert _refusals() == [{"reason": "weak_acr", "sub": "sub-weak"}]


def test_an_unknown_refusal_address_is_a_404(client: Client) -> None:
    assert client.get("/login/refused/no-such-reason/").status_code == 404


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("de", "de"), ("de-LU", "de"), ("en_GB", "en"), ("pt", "fr"), (None, "fr")],
)
def test_the_providers_locale_is_the_professionals_mail_language(
    client: Client, oidc_settings: OidcProvider, locale: str | None, expected: str
) -> None:
    """The portal's profile says which language the e-mails speak, not the browser's."""
    response = login_professional(
        client, oidc_settings, "sub-jean", professional_claims(locale=locale)
    )
    assert response.status_code == 302
    assert Professional.objects.get().language == expected


# --- the protocol: state, provider errors, token checks --------------------------------------


def test_access_denied_at_the_provider(en: Client, oidc_settings: OidcProvider) -> None:
    authorize_url = start_login(en)
    callback_url = oidc_settings.deny(authorize_url)
    assert _query(callback_url)["error"] == "access_denied"
    # oidc-provider-mock 0.3 leaves state out of its error answer, which RFC 6749
    # §4.1.2.1 requires; a real provider sends it back, and MyCert checks it first.
    callback_url = _with_query(callback_url, state=_query(authorize_url)["state"])

    response = en.get(callback_path(callback_url))

    _assert_refused(en, response, 403, reason="access_denied")
    assert "cancelled" in _followed(en, response).content.decode()


def test_other_provider_error(client: Client, oidc_settings: OidcProvider) -> None:
    state = _query(start_login(client))["state"]
    response = client.get(
        "/oidc/callback/", {"error": "server_error", "error_description": "x", "state": state}
    )
    _assert_refused(client, response, 400, reason="provider_error")


@pytest.mark.parametrize("state", [None, "forged"])
def test_a_cross_site_error_answer_neither_logs_out_nor_writes_the_audit_trail(
    client: Client, oidc_settings: OidcProvider, state: str | None
) -> None:
    """Any site can send a browser to the callback with ``?error=access_denied``: without
    this browser's state it is no answer to anything, so the session stays."""
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    user_id = client.session[SESSION_KEY]
    events = AuditEvent.objects.count()

    query = {"error": "access_denied", **({"state": state} if state else {})}
    response = _followed(client, client.get("/oidc/callback/", query))

    assert response.status_code == 400
    assert client.session[SESSION_KEY] == user_id
    assert AuditEvent.objects.count() == events


def test_missing_state_is_refused(client: Client, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")

    response = client.get("/oidc/callback/", {"code": _query(callback_url)["code"]})

    _assert_refused(client, response, 400, reason=None)


def test_wrong_state_is_refused(client: Client, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")

    response = client.get(callback_path(_with_query(callback_url, state="forged")))

    _assert_refused(client, response, 400, reason=None)


def test_callback_cannot_be_used_twice(client: Client, oidc_settings: OidcProvider) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")
    assert client.get(callback_path(callback_url)).status_code == 302

    response = client.get(callback_path(callback_url))

    assert _followed(client, response).status_code == 400


def test_callback_replayed_in_another_browser_is_refused(
    client: Client, oidc_settings: OidcProvider
) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")

    attacker = Client()
    start_login(attacker)
    response = attacker.get(callback_path(callback_url))

    _assert_refused(attacker, response, 400, reason=None)


def test_code_injected_under_another_login_fails_the_nonce(
    caplog: pytest.LogCaptureFixture, client: Client, oidc_settings: OidcProvider
) -> None:
    """A stolen code pasted into a login started elsewhere (RFC 9700 §4.5).

    The mock does not enforce PKCE, so only the nonce catches it here.
    """
    oidc_settings.set_user("sub-victim", professional_claims())
    victim_callback = oidc_settings.authorize(start_login(Client()), "sub-victim")

    own_state = _query(start_login(client))["state"]
    injected = _with_query(victim_callback, state=own_state)
    response = client.get(callback_path(injected))

    _assert_refused(client, response, 403, reason="invalid_id_token")
    assert _refusals() == [{"reason": "invalid_id_token", "sub": ""}]
    assert "'nonce'" in caplog.text


def test_token_for_another_client_is_refused(
    caplog: pytest.LogCaptureFixture, client: Client, oidc_settings: OidcProvider
) -> None:
    """The code is redeemed as another client, so the ID token's aud is not MyCert."""
    oidc_settings.set_user("sub-marie", professional_claims())
    authorize_url = _with_query(start_login(client), client_id="someone-else")
    callback_url = oidc_settings.authorize(authorize_url, "sub-marie")
    oidc.get_client().client_id = "someone-else"

    response = client.get(callback_path(callback_url))

    _assert_refused(client, response, 403, reason="invalid_id_token")
    assert _refusals() == [{"reason": "invalid_id_token", "sub": ""}]
    assert "'aud'" in caplog.text


def test_code_of_another_client_is_refused(
    caplog: pytest.LogCaptureFixture,
    client: Client,
    oidc_settings: OidcProvider,
    settings: SettingsWrapper,
) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")
    settings.OIDC_CLIENT_ID = "someone-else"

    response = client.get(callback_path(callback_url))

    _assert_refused(client, response, 400, reason="token_request_failed")
    assert "detail=invalid_grant" in caplog.text


def test_token_from_another_issuer_is_refused(
    caplog: pytest.LogCaptureFixture, client: Client, oidc_settings: OidcProvider
) -> None:
    """The mock names itself after the Host it is reached by: via "localhost" it signs
    (with the right key) tokens whose iss is not the configured issuer."""
    oidc_settings.set_user("sub-marie", professional_claims())
    authorize_url = start_login(client)
    callback_url = oidc_settings.authorize(authorize_url, "sub-marie")
    metadata = oidc.get_client().server_metadata
    metadata["token_endpoint"] = metadata["token_endpoint"].replace("127.0.0.1", "localhost")

    response = client.get(callback_path(callback_url))

    _assert_refused(client, response, 403, reason="invalid_id_token")
    assert "'iss'" in caplog.text


def test_discovery_for_another_issuer_is_refused(
    client: Client, oidc_settings: OidcProvider
) -> None:
    client_ = oidc.get_client()
    client_.load_server_metadata()
    client_.server_metadata["issuer"] = "https://evil.example"

    response = client.get("/oidc/login/")

    assert response.status_code == 503
    # The bad document is forgotten: the next attempt reads discovery again.
    assert start_login(client).startswith(oidc_settings.issuer)


def test_token_signed_by_another_key_is_refused(
    caplog: pytest.LogCaptureFixture,
    client: Client,
    oidc_settings: OidcProvider,
    other_provider: OidcProvider,
) -> None:
    oidc_settings.set_user("sub-marie", professional_claims())
    callback_url = oidc_settings.authorize(start_login(client), "sub-marie")
    metadata = oidc.get_client().server_metadata
    metadata["jwks_uri"] = other_provider.metadata()["jwks_uri"]
    metadata.pop("jwks", None)

    response = client.get(callback_path(callback_url))

    _assert_refused(client, response, 403, reason="invalid_id_token")
    assert "detail=signature" in caplog.text


def test_expired_token_is_refused(
    caplog: pytest.LogCaptureFixture,
    client: Client,
    oidc_settings: OidcProvider,
    expiring_provider: OidcProvider,
    settings: SettingsWrapper,
) -> None:
    settings.OIDC_ISSUER = expiring_provider.issuer
    response = login_professional(client, expiring_provider, "sub-marie", professional_claims())
    _assert_refused(client, response, 403, reason="invalid_id_token")
    assert "ExpiredTokenError" in caplog.text


def test_unreachable_provider_gives_a_page_not_a_500(
    client: Client, oidc_settings: OidcProvider, settings: SettingsWrapper
) -> None:
    with socket.socket() as sock:
        # Bound but not listening: connections are refused.
        sock.bind(("127.0.0.1", 0))
        settings.OIDC_ISSUER = f"http://127.0.0.1:{sock.getsockname()[1]}"
        response = client.get("/oidc/login/")
    assert response.status_code == 503


# --- Authlib's own checks, and where ours go further -----------------------------------------


def _preloaded_client(issuer: str, jwks: dict[str, Any]) -> Any:
    """Our registered client with discovery and keys already in hand (no network)."""
    oidc.reset_client()
    client = oidc.get_client()
    client.server_metadata.update(
        {
            "issuer": issuer,
            "jwks_uri": "http://127.0.0.1:9/jwks",
            "jwks": jwks,
            "id_token_signing_alg_values_supported": ["RS256"],
            "_loaded_at": time.time(),
        }
    )
    return client


@pytest.fixture
def signer(settings: SettingsWrapper) -> Iterator[tuple[Any, RSAKey, str]]:
    issuer = "https://portal.example"
    settings.OIDC_ISSUER = issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    key = RSAKey.generate_key(2048)
    client = _preloaded_client(issuer, {"keys": [key.as_dict(private=False)]})
    yield client, key, issuer
    oidc.reset_client()


def _sign(key: RSAKey, **claims: Any) -> dict[str, str]:
    """An ID token signed with ``key``; a claim given as None is left out."""
    now = int(time.time())
    payload = {"sub": "s", "exp": now + 300, "iat": now, "nonce": "n", **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return {"id_token": jwt.encode({"alg": "RS256"}, payload, key)}


def test_authlib_alone_accepts_a_foreign_audience_with_our_azp(signer: Any) -> None:
    """Authlib checks aud only through azp: aud without us but azp=us passes it."""
    client, key, issuer = signer
    token = _sign(key, iss=issuer, aud=["other", "third"], azp=CLIENT_ID)

    assert client.parse_id_token(token, nonce="n")["sub"] == "s"
    with pytest.raises(LoginRefused) as refused:
        oidc._verify_id_token(client, token, nonce="n")
    assert refused.value.code is RefusalCode.INVALID_ID_TOKEN


_OURS = "<configured issuer>"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example", "aud": CLIENT_ID},
        {"aud": CLIENT_ID},
        {"iss": _OURS, "aud": "other"},
        {"iss": _OURS},
        {"iss": _OURS, "aud": CLIENT_ID, "exp": int(time.time()) - 600},
        {"iss": _OURS, "aud": CLIENT_ID, "nonce": "other"},
        {"iss": _OURS, "aud": CLIENT_ID, "nonce": None},
    ],
    ids=["iss", "no-iss", "aud", "no-aud", "exp", "nonce", "no-nonce"],
)
def test_verify_refuses(signer: Any, claims: dict[str, Any]) -> None:
    client, key, issuer = signer
    claims = {name: issuer if value == _OURS else value for name, value in claims.items()}
    token = _sign(key, **claims)
    with pytest.raises(LoginRefused) as refused:
        oidc._verify_id_token(client, token, nonce="n")
    assert refused.value.code is RefusalCode.INVALID_ID_TOKEN


def test_verify_refuses_alg_none_and_hmac(signer: Any) -> None:
    client, _key, issuer = signer
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "sub": "s",
        "exp": now + 300,
        "iat": now,
        "nonce": "n",
    }
    hmac_token = jwt.encode({"alg": "HS256"}, payload, OctKey.import_key("x" * 32))
    none_token = f"{_b64(json.dumps({'alg': 'none'}))}.{_b64(json.dumps(payload))}."
    for token in (hmac_token, none_token):
        with pytest.raises(LoginRefused):
            oidc._verify_id_token(client, {"id_token": token}, nonce="n")


@pytest.mark.parametrize(
    ("advertised", "allowed"),
    [
        (["HS256", "RS256", "none", "ES256"], ["RS256", "ES256"]),
        (None, ["RS256"]),  # unspecified: RS256, the discovery default
    ],
)
def test_the_algorithm_filter_keeps_only_asymmetric_algorithms(
    advertised: list[str] | None, allowed: list[str]
) -> None:
    metadata = {} if advertised is None else {"id_token_signing_alg_values_supported": advertised}
    assert oidc.allowed_id_token_algorithms(metadata) == allowed


@pytest.mark.parametrize("advertised", [["HS256"], ["none"], ["HS256", "HS512"], "RS256"])
def test_discovery_without_an_accepted_algorithm_refuses_the_login(
    advertised: object, signer: Any
) -> None:
    """An empty list would mean "joserfc's recommended set", HS256 included: refuse."""
    client, _key, _issuer = signer
    client.server_metadata["id_token_signing_alg_values_supported"] = advertised

    with pytest.raises(LoginRefused) as refused:
        oidc._load_metadata(client)

    assert refused.value.code is RefusalCode.PROVIDER_UNAVAILABLE


def test_login_page_refuses_a_provider_offering_only_symmetric_algorithms(
    client: Client, oidc_settings: OidcProvider
) -> None:
    oidc_client = oidc.get_client()
    metadata = oidc._load_metadata(oidc_client)
    metadata["id_token_signing_alg_values_supported"] = ["HS256"]
    oidc_client.server_metadata.update(metadata)

    response = client.get("/oidc/login/")

    assert response.status_code == 503


def test_userinfo_never_supplies_the_e_mail() -> None:
    """The keystore goes to the e-mail: it must come from the signed ID token."""
    merged = oidc.merge_userinfo(
        {"sub": "s", "given_name": "Marie"},
        {
            "sub": "s",
            "family_name": "Muller",
            "email": "attacker@example.com",
            "email_verified": True,
            "acr": "x",
        },
    )
    assert merged == {"sub": "s", "given_name": "Marie", "family_name": "Muller"}


# --- the pure claim checks -------------------------------------------------------------------


def _validate(claims: dict[str, Any], accepted: list[str] | None = None) -> oidc.VerifiedIdentity:
    return oidc.validate_id_token_claims(
        claims,
        accepted_acr=[LUXTRUST_ACR] if accepted is None else accepted,
        professional_id_claim="professional_id",
    )


def test_validate_claims_accepts_a_luxtrust_professional() -> None:
    identity = _validate({"sub": "s", "acr": LUXTRUST_ACR, "professional_id": " LU-MED-1 "})
    assert identity == oidc.VerifiedIdentity(sub="s", acr=LUXTRUST_ACR, professional_id="LU-MED-1")


@pytest.mark.parametrize(
    ("claims", "accepted", "code"),
    [
        ({"acr": WEAK_ACR, "professional_id": "1"}, None, RefusalCode.WEAK_ACR),
        ({"professional_id": "1"}, None, RefusalCode.WEAK_ACR),
        ({"acr": [LUXTRUST_ACR], "professional_id": "1"}, None, RefusalCode.WEAK_ACR),
        ({"acr": LUXTRUST_ACR, "professional_id": "1"}, [], RefusalCode.WEAK_ACR),
        ({"acr": LUXTRUST_ACR}, None, RefusalCode.NOT_A_PROFESSIONAL),
        ({"acr": LUXTRUST_ACR, "professional_id": ""}, None, RefusalCode.NOT_A_PROFESSIONAL),
        ({"acr": LUXTRUST_ACR, "professional_id": True}, None, RefusalCode.INVALID_PROFESSIONAL_ID),
        (
            {"acr": LUXTRUST_ACR, "professional_id": "é\n"},
            None,
            RefusalCode.INVALID_PROFESSIONAL_ID,
        ),
        (
            {"acr": LUXTRUST_ACR, "professional_id": "9" * 65},
            None,
            RefusalCode.INVALID_PROFESSIONAL_ID,
        ),
    ],
)
def test_validate_claims_refuses(
    claims: dict[str, Any], accepted: list[str] | None, code: RefusalCode
) -> None:
    with pytest.raises(LoginRefused) as refused:
        _validate({"sub": "s", **claims}, accepted)
    assert refused.value.code is code
    assert refused.value.sub == "s"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://other", "aud": CLIENT_ID},
        {"iss": "https://portal", "aud": "other"},
        {"iss": "https://portal", "aud": ["other", CLIENT_ID]},  # several audiences, no azp
        {"iss": "https://portal", "aud": ["other", CLIENT_ID], "azp": "other"},
        {"iss": "https://portal"},
    ],
)
def test_issuer_and_audience_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(LoginRefused):
        oidc.check_issuer_and_audience(claims, issuer="https://portal", client_id=CLIENT_ID)


def test_issuer_and_audience_accepted() -> None:
    for aud in (CLIENT_ID, [CLIENT_ID]):
        oidc.check_issuer_and_audience(
            {"iss": "https://portal", "aud": aud}, issuer="https://portal", client_id=CLIENT_ID
        )
    oidc.check_issuer_and_audience(
        {"iss": "https://portal", "aud": ["x", CLIENT_ID], "azp": CLIENT_ID},
        issuer="https://portal",
        client_id=CLIENT_ID,
    )


# --- the service -----------------------------------------------------------------------------


@pytest.fixture
def acr_settings(settings: SettingsWrapper) -> None:
    settings.MYCERT_OIDC_ACCEPTED_ACR = [LUXTRUST_ACR]
    settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM = "professional_id"


@pytest.mark.usefixtures("acr_settings")
@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"email": None}, RefusalCode.MISSING_EMAIL),
        ({"email": "not-an-address"}, RefusalCode.MISSING_EMAIL),
        ({"email_verified": False}, RefusalCode.MISSING_EMAIL),
        ({"email_verified": None}, RefusalCode.MISSING_EMAIL),  # absent is not a yes
        ({"email_verified": "true"}, RefusalCode.MISSING_EMAIL),
        ({"given_name": None}, RefusalCode.INVALID_PROFILE),
        ({"family_name": " "}, RefusalCode.INVALID_PROFILE),
        ({"acr": WEAK_ACR}, RefusalCode.WEAK_ACR),
        # What the certificate profile would refuse after « Envoyer » (issue 12).
        ({"given_name": "A" * 50, "family_name": "B" * 50}, RefusalCode.NAME_TOO_LONG),
        ({"given_name": "A" * 32, "family_name": "B" * 32}, RefusalCode.NAME_TOO_LONG),
        ({"email": "anne.müller@cabinet.example.lu"}, RefusalCode.EMAIL_NOT_SUPPORTED),
        ({"email": "anne@bücher.example.lu"}, RefusalCode.EMAIL_NOT_SUPPORTED),
    ],
)
def test_professional_login_refuses(overrides: dict[str, Any], code: RefusalCode) -> None:
    with pytest.raises(LoginRefused) as refused:
        professional_login(claims={"sub": "s", **professional_claims(**overrides)})
    assert refused.value.code is code
    assert not Professional.objects.exists()
    assert not get_user_model().objects.exists()


@pytest.mark.usefixtures("acr_settings")
def test_professional_login_refuses_a_changed_identifier() -> None:
    professional_login(claims={"sub": "s", **professional_claims()})
    with pytest.raises(LoginRefused) as refused:
        professional_login(claims={"sub": "s", **professional_claims(professional_id="42")})
    assert refused.value.code is RefusalCode.PROFESSIONAL_ID_CHANGED
    assert Professional.objects.get().professional_id == "1234567890"


@pytest.mark.usefixtures("acr_settings")
def test_professional_login_refuses_a_disabled_user() -> None:
    professional = professional_login(claims={"sub": "s", **professional_claims()})
    professional.user.is_active = False
    professional.user.save()
    with pytest.raises(LoginRefused) as refused:
        professional_login(claims={"sub": "s", **professional_claims()})
    assert refused.value.code is RefusalCode.ACCOUNT_DISABLED


@pytest.mark.usefixtures("acr_settings")
def test_professional_login_keeps_language_and_long_subjects() -> None:
    sub = "x" * 255
    professional = professional_login(claims={"sub": sub, **professional_claims()}, language="de")
    assert professional.language == "de"
    assert professional.user.username == oidc_username(sub)
    assert len(professional.user.username) <= 150
    assert professional.oidc_subject == sub


# --- logout ----------------------------------------------------------------------------------


def test_logout_is_post_only(client: Client, oidc_settings: OidcProvider) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    response = client.get("/oidc/logout/")
    assert response.status_code == 405
    assert SESSION_KEY in client.session


def test_logout_needs_the_csrf_token(oidc_settings: OidcProvider) -> None:
    browser = Client(enforce_csrf_checks=True)
    login_professional(browser, oidc_settings, "sub-marie", professional_claims())
    assert browser.post("/oidc/logout/").status_code == 403
    assert SESSION_KEY in browser.session


def test_logout_ends_the_session_then_the_provider_session(
    client: Client, oidc_settings: OidcProvider
) -> None:
    login_professional(client, oidc_settings, "sub-marie", professional_claims())
    id_token = client.session[ID_TOKEN_SESSION_KEY]

    response = client.post("/oidc/logout/")

    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(oidc_settings.metadata()["end_session_endpoint"])
    params = _query(location)
    assert params["id_token_hint"] == id_token
    assert params["post_logout_redirect_uri"] == "http://testserver/"
    assert params["client_id"] == CLIENT_ID
    assert SESSION_KEY not in client.session
    assert ID_TOKEN_SESSION_KEY not in client.session
    assert AuditEvent.objects.filter(action="auth.logout").count() == 1
    # The provider accepts the request and sends the browser home: the demo's mock asks
    # to confirm (a form), then redirects to MyCert (issue 23, point 10).
    page = requests.get(location, timeout=10)
    assert page.status_code == 200
    form = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert form, page.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    confirmed = requests.post(
        urljoin(location, form.group(1)), data=fields, allow_redirects=False, timeout=10
    )
    assert confirmed.status_code in (302, 303), confirmed.text
    assert confirmed.headers["Location"] == "http://testserver/"


def test_logout_without_a_provider_session_goes_home(
    client: Client, oidc_settings: OidcProvider
) -> None:
    response = client.post("/oidc/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/"
