"""OpenID Connect with the agency portal (LuxTrust behind it): the protocol side of login.

Authorization code flow with PKCE (RFC 7636, S256) and a nonce (OIDC Core §3.1.2.1),
through Authlib's Django client. Authlib verifies the ID token's signature, ``exp``,
``iat`` and ``nonce``; it checks ``iss`` only against the discovery document and ``aud``
only indirectly (through ``azp``), so both are pinned here to the configured issuer and
client id (OIDC Core §3.1.3.7 steps 2–3), once in Authlib's claim options and once again
explicitly. Who may log in (``acr``, the professional identifier) is decided from the
signed ID token alone, never from userinfo (docs/architecture.md « Roles »).

Nothing here writes to the database: ``mycert.services.professionals`` does that.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests
from authlib.common.security import is_secure_transport
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client import OAuthError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings
from django.http import HttpRequest, HttpResponseRedirect
from joserfc.errors import BadSignatureError, JoseError

__all__ = [
    "ID_TOKEN_ALGORITHMS",
    "PROFILE_CLAIMS",
    "CompletedLogin",
    "LoginRefused",
    "RefusalCode",
    "VerifiedIdentity",
    "allowed_id_token_algorithms",
    "begin_login",
    "check_issuer_and_audience",
    "end_session_url",
    "finish_login",
    "get_client",
    "merge_userinfo",
    "reset_client",
    "sub_hash",
    "validate_id_token_claims",
]

logger = logging.getLogger(__name__)

CLIENT_NAME = "portal"
# Asymmetric algorithms only: the JWKS holds public keys, and "none" or HS* must never
# be accepted whatever the discovery document says (OIDC Core §3.1.3.7 steps 6–7).
ID_TOKEN_ALGORITHMS = ("RS256", "PS256", "ES256")
# Clock skew tolerated on exp/iat (OIDC Core §3.1.3.7 steps 9–10 leave it to the client).
CLOCK_LEEWAY_SECONDS = 60
HTTP_TIMEOUT_SECONDS = 10
# Re-read discovery and keys now and then, so a provider's key rotation is picked up
# without a restart (OIDC Core §10.1.1).
METADATA_MAX_AGE_SECONDS = 6 * 3600
# Claims that may come from userinfo when the ID token lacks them: the names only. Never
# acr, sub or the professional identifier, and never the e-mail or email_verified: the
# keystore goes to that address, so it must come from the signed ID token.
PROFILE_CLAIMS = ("given_name", "family_name")
REQUIRED_PROFILE_CLAIMS = ("given_name", "family_name")
# X.520 serialNumber is a PrintableString (RFC 5280 Appendix A); the identifier is
# written there, so it must fit that alphabet and the model's 64 characters.
_PROFESSIONAL_ID_RE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]{1,64}")
_STATE_MAX_LENGTH = 256
# Error codes are ASCII words (RFC 6749 §4.1.2.1); anything else stays out of the logs.
_ERROR_CODE_RE = re.compile(r"[a-z_]{1,64}")


class RefusalCode(StrEnum):
    """Why a login was refused; the value goes into the audit trail and the logs."""

    ACCESS_DENIED = "access_denied"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    STATE_MISMATCH = "state_mismatch"
    INVALID_CALLBACK = "invalid_callback"
    TOKEN_REQUEST_FAILED = "token_request_failed"  # noqa: S105 - a reason code, not a secret
    INVALID_ID_TOKEN = "invalid_id_token"  # noqa: S105 - a reason code, not a secret
    WEAK_ACR = "weak_acr"
    NOT_A_PROFESSIONAL = "not_a_professional"
    INVALID_PROFESSIONAL_ID = "invalid_professional_id"
    MISSING_EMAIL = "missing_email"
    INVALID_PROFILE = "invalid_profile"
    NAME_TOO_LONG = "name_too_long"
    EMAIL_NOT_SUPPORTED = "email_not_supported"
    PROFESSIONAL_ID_TAKEN = "professional_id_taken"
    PROFESSIONAL_ID_CHANGED = "professional_id_changed"
    ACCOUNT_DISABLED = "account_disabled"


class LoginRefused(Exception):
    """A login that must not open a session; ``code`` says why, ``sub`` whose (if known)."""

    def __init__(self, code: RefusalCode, detail: str = "", *, sub: str | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else str(code))
        self.code = code
        self.detail = detail
        self.sub = sub


@dataclass(frozen=True)
class VerifiedIdentity:
    """What the signed ID token says about who logged in, and how."""

    sub: str
    acr: str
    professional_id: str


@dataclass(frozen=True)
class CompletedLogin:
    """A verified callback: the identity, the claims to store, where to go next."""

    identity: VerifiedIdentity
    claims: dict[str, Any]
    id_token: str
    next_url: str


def sub_hash(sub: str | None) -> str:
    """Name a subject in logs without writing the subject itself."""
    if not sub:
        return "-"
    return hashlib.sha256(sub.encode()).hexdigest()[:16]


# --- Pure claim checks ---------------------------------------------------------------------


def check_issuer_and_audience(claims: Mapping[str, Any], *, issuer: str, client_id: str) -> None:
    """Refuse an ID token not issued by ``issuer`` for ``client_id`` (OIDC Core §3.1.3.7)."""
    if claims.get("iss") != issuer:
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "iss", sub=_str_or_none(claims.get("sub")))
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "aud", sub=_str_or_none(claims.get("sub")))
    # With several audiences, azp must name us (OIDC Core §2 "azp", §3.1.3.7 steps 4–5).
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "azp", sub=_str_or_none(claims.get("sub")))


def validate_id_token_claims(
    claims: Mapping[str, Any],
    *,
    accepted_acr: Collection[str],
    professional_id_claim: str,
) -> VerifiedIdentity:
    """Decide from the ID token's claims whether a professional logged in with LuxTrust.

    An empty ``accepted_acr`` refuses everyone: the check fails closed.
    """
    sub = claims.get("sub")
    # sub: at most 255 ASCII characters, never reassigned (OIDC Core §2, §5.7).
    if not isinstance(sub, str) or not sub or len(sub) > 255 or not sub.isascii():
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "sub")
    acr = claims.get("acr")
    # acr_values in the request are only a wish (OIDC Core §3.1.2.1, §5.5.1.1): what counts
    # is the signed acr the provider actually asserts.
    if not isinstance(acr, str) or acr not in accepted_acr:
        raise LoginRefused(RefusalCode.WEAK_ACR, f"acr={acr!r}", sub=sub)
    raw_id = claims.get(professional_id_claim)
    if raw_id is None or raw_id == "":
        raise LoginRefused(RefusalCode.NOT_A_PROFESSIONAL, professional_id_claim, sub=sub)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise LoginRefused(RefusalCode.INVALID_PROFESSIONAL_ID, "type", sub=sub)
    professional_id = str(raw_id).strip()
    if not _PROFESSIONAL_ID_RE.fullmatch(professional_id):
        raise LoginRefused(RefusalCode.INVALID_PROFESSIONAL_ID, "format", sub=sub)
    return VerifiedIdentity(sub=sub, acr=acr, professional_id=professional_id)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- The client, registered lazily from settings -------------------------------------------

_lock = threading.Lock()
_cached: tuple[tuple[str, ...], DjangoOAuth2App] | None = None


def _settings_key() -> tuple[str, ...]:
    return (
        settings.OIDC_ISSUER,
        settings.OIDC_CLIENT_ID,
        settings.OIDC_CLIENT_SECRET,
        settings.MYCERT_OIDC_SCOPES,
    )


def get_client() -> DjangoOAuth2App:
    """Return the portal's client, registered again whenever the OIDC settings change."""
    global _cached  # one client per process, rebuilt when the settings change
    key = _settings_key()
    with _lock:
        if _cached is not None and _cached[0] == key:
            loaded_at = _cached[1].server_metadata.get("_loaded_at")
            if loaded_at is None or time.time() - loaded_at < METADATA_MAX_AGE_SECONDS:
                return _cached[1]
        issuer, client_id, client_secret, scopes = key
        client = OAuth().register(
            name=CLIENT_NAME,
            client_id=client_id,
            client_secret=client_secret,
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs={
                "scope": scopes,
                "code_challenge_method": "S256",  # RFC 7636 §4.2; RFC 9700 §2.1.1
                "default_timeout": HTTP_TIMEOUT_SECONDS,
            },
        )
        if not isinstance(client, DjangoOAuth2App):  # pragma: no cover - Authlib's contract
            raise TypeError("Authlib returned an unexpected client class")
        _cached = (key, client)
        return client


def reset_client() -> None:
    """Forget the registered client and its cached discovery document and keys."""
    global _cached
    with _lock:
        _cached = None


def _load_metadata(client: DjangoOAuth2App) -> dict[str, Any]:
    """Read discovery once and refuse a document that speaks for another issuer."""
    issuer = settings.OIDC_ISSUER
    if not is_secure_transport(issuer):
        # TLS everywhere except loopback (OIDC Core §16.17; RFC 9700 §2.6).
        logger.error("OIDC_ISSUER must be an https URL")
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "insecure issuer")
    try:
        metadata: dict[str, Any] = client.load_server_metadata()
    except (requests.RequestException, ValueError) as exc:
        logger.warning("OpenID discovery failed: %s", type(exc).__name__)
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "discovery") from exc
    # The issuer in the document must be exactly the one configured (OIDC Discovery §4.3);
    # Authlib compares the token's iss with this value.
    if metadata.get("issuer") != issuer:
        client.server_metadata.clear()
        logger.error("OpenID discovery names another issuer than OIDC_ISSUER")
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "issuer mismatch")
    metadata["id_token_signing_alg_values_supported"] = allowed_id_token_algorithms(metadata)
    return metadata


def allowed_id_token_algorithms(metadata: Mapping[str, Any]) -> list[str]:
    """The provider's ID-token algorithms that MyCert accepts; ``LoginRefused`` if none.

    Authlib hands this list to joserfc, which reads an empty list as "my recommended
    algorithms", HS256 among them: an empty list would turn the pin into no pin at all,
    so it refuses the login instead (fails closed).
    """
    # RS256 is the default when the document says nothing (OIDC Discovery §3).
    advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    if not isinstance(advertised, list):
        advertised = []
    allowed = [alg for alg in advertised if alg in ID_TOKEN_ALGORITHMS]
    if not allowed:
        logger.error(
            "OpenID discovery lists none of the accepted ID-token algorithms %s",
            ", ".join(ID_TOKEN_ALGORITHMS),
        )
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "no accepted algorithm")
    return allowed


# --- The two legs of the flow --------------------------------------------------------------


def begin_login(
    request: HttpRequest, *, redirect_uri: str, next_url: str, ui_locales: str = ""
) -> HttpResponseRedirect:
    """Send the browser to the provider, remembering state, nonce, verifier and ``next``."""
    client = get_client()
    _load_metadata(client)
    extra: dict[str, str] = {
        # A hint only; the answer is checked in the ID token.
        "acr_values": " ".join(settings.MYCERT_OIDC_ACCEPTED_ACR),
    }
    if ui_locales:
        extra["ui_locales"] = ui_locales
    # Authlib draws a fresh state, nonce and code_verifier per request (RFC 9700 §2.1).
    authorization = client.create_authorization_url(redirect_uri, **extra)
    client.save_authorize_data(
        request,
        state=authorization["state"],
        redirect_uri=redirect_uri,
        code_verifier=authorization["code_verifier"],
        nonce=authorization["nonce"],
        next=next_url,
    )
    return HttpResponseRedirect(authorization["url"])


def finish_login(request: HttpRequest) -> CompletedLogin:
    """Check the callback, redeem the code, verify the ID token; raise ``LoginRefused``."""
    client = get_client()
    params = request.GET
    state = params.get("state", "")
    state_data: dict[str, Any] | None = None
    if state and len(state) <= _STATE_MAX_LENGTH:
        state_data = client.framework.get_state_data(request.session, state)
        # Single use, whatever happens next (RFC 6749 §10.12).
        client.framework.clear_state_data(request.session, state)

    # State first, errors after: an error answer is only worth acting on (auditing,
    # ending the session) when it belongs to a login this browser started. Otherwise any
    # site could send the browser to ``?error=access_denied`` and log its user out.
    if not state_data or not all(
        isinstance(state_data.get(key), str) for key in ("redirect_uri", "code_verifier", "nonce")
    ):
        # Unknown, replayed or missing state: not a login this browser started (CSRF).
        raise LoginRefused(RefusalCode.STATE_MISMATCH)
    error = params.get("error")
    if error:
        # The provider's answer (RFC 6749 §4.1.2.1); only the registered code is kept.
        code = RefusalCode.ACCESS_DENIED if error == "access_denied" else RefusalCode.PROVIDER_ERROR
        raise LoginRefused(code, error if _ERROR_CODE_RE.fullmatch(error) else "unregistered")
    code_value = params.get("code")
    if not code_value:
        raise LoginRefused(RefusalCode.INVALID_CALLBACK, "code")

    _load_metadata(client)
    try:
        token: dict[str, Any] = client.fetch_access_token(
            code=code_value,
            redirect_uri=state_data["redirect_uri"],
            code_verifier=state_data["code_verifier"],  # RFC 7636 §4.5
        )
    except OAuthError as exc:
        error_code = str(exc.error)
        if not _ERROR_CODE_RE.fullmatch(error_code):
            error_code = "unregistered"
        raise LoginRefused(RefusalCode.TOKEN_REQUEST_FAILED, error_code) from exc
    except (requests.RequestException, ValueError) as exc:
        logger.warning("token request failed: %s", type(exc).__name__)
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "token") from exc

    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        # Authlib silently skips verification when there is no ID token; we refuse.
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "no id_token")
    id_claims = _verify_id_token(client, token, nonce=state_data["nonce"])
    check_issuer_and_audience(
        id_claims, issuer=settings.OIDC_ISSUER, client_id=settings.OIDC_CLIENT_ID
    )
    identity = validate_id_token_claims(
        id_claims,
        accepted_acr=settings.MYCERT_OIDC_ACCEPTED_ACR,
        professional_id_claim=settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM,
    )
    claims = dict(id_claims)
    # Providers may keep the profile out of the ID token (OIDC Core §5.4): ask userinfo,
    # for those claims only.
    if any(name not in claims for name in REQUIRED_PROFILE_CLAIMS) and token.get("access_token"):
        missing = [name for name in PROFILE_CLAIMS if name not in claims]
        claims = merge_userinfo(
            claims, _profile_from_userinfo(client, token, identity=identity, names=missing)
        )
    next_url = state_data.get("next")
    return CompletedLogin(
        identity=identity,
        claims=claims,
        id_token=id_token,
        next_url=next_url if isinstance(next_url, str) else "",
    )


def _verify_id_token(
    client: DjangoOAuth2App, token: dict[str, Any], *, nonce: str
) -> dict[str, Any]:
    """Verify signature, iss, aud, exp, iat and nonce of the token's ID token."""
    options = {
        "iss": {"essential": True, "value": settings.OIDC_ISSUER},
        "aud": {"essential": True, "value": settings.OIDC_CLIENT_ID},
    }
    for attempt in (1, 2):
        try:
            claims = client.parse_id_token(
                token, nonce=nonce, claims_options=options, leeway=CLOCK_LEEWAY_SECONDS
            )
        except BadSignatureError as exc:
            # Without a kid a rotated key shows up as a bad signature, not an unknown kid:
            # read the provider's keys once more before refusing (OIDC Core §10.1.1).
            if attempt == 1:
                try:
                    client.fetch_jwk_set(force=True)
                except (requests.RequestException, ValueError) as fetch_exc:
                    raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "jwks") from fetch_exc
                continue
            raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "signature") from exc
        except JoseError as exc:
            # The description names the failed check (claim name), never its value.
            detail = f"{type(exc).__name__}: {exc.description}"
            raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, detail[:120]) from exc
        except (requests.RequestException, ValueError) as exc:
            raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "jwks") from exc
        if claims is None:
            raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "no id_token")
        return dict(claims)
    raise AssertionError("unreachable")  # pragma: no cover


def _profile_from_userinfo(
    client: DjangoOAuth2App,
    token: dict[str, Any],
    *,
    identity: VerifiedIdentity,
    names: list[str],
) -> dict[str, Any]:
    """Fetch the missing profile claims; userinfo never speaks for acr or the identifier."""
    if not client.server_metadata.get("userinfo_endpoint"):
        return {}
    try:
        userinfo = client.userinfo(token=token)
    except (requests.RequestException, ValueError) as exc:
        raise LoginRefused(RefusalCode.PROVIDER_UNAVAILABLE, "userinfo", sub=identity.sub) from exc
    # A userinfo answer about someone else must be thrown away (OIDC Core §5.3.2).
    if userinfo.get("sub") != identity.sub:
        raise LoginRefused(RefusalCode.INVALID_ID_TOKEN, "userinfo sub", sub=identity.sub)
    return {name: userinfo[name] for name in names if name in userinfo}


def merge_userinfo(id_claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> dict[str, Any]:
    """The ID token's claims, completed by userinfo with missing ``PROFILE_CLAIMS`` only."""
    merged = dict(id_claims)
    for name in PROFILE_CLAIMS:
        if name not in merged and name in userinfo:
            merged[name] = userinfo[name]
    return merged


def end_session_url(*, id_token_hint: str, post_logout_redirect_uri: str) -> str | None:
    """Return the provider's logout URL (RP-Initiated Logout 1.0 §2), or None if it has none."""
    try:
        metadata = _load_metadata(get_client())
    except LoginRefused:
        return None
    endpoint = metadata.get("end_session_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        return None
    params = {
        "client_id": settings.OIDC_CLIENT_ID,
        "post_logout_redirect_uri": post_logout_redirect_uri,
    }
    if id_token_hint:
        params["id_token_hint"] = id_token_hint
    url: str = add_params_to_uri(endpoint, params)
    return url
