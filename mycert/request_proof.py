"""The proof that a request comes from a LuxTrust login: its signed ID token, checked by the worker.

A request carries the raw ID token of the login that submitted it. Before it makes a
key, the worker verifies that token itself, trusting nothing the database says:

- the signature, against the provider's keys that *this process* reads from the
  configured ``OIDC_ISSUER``'s discovery document and JWKS (OIDC Core §3.1.3.7 step 6,
  §10.1.1), cached; a key stored in the database is never used;
- ``iss`` and ``aud`` (our client), an accepted ``acr`` and a professional identifier,
  exactly as at login (``mycert.oidc``);
- ``iat``, no older than ``MYCERT_REQUEST_PROOF_MAX_AGE`` when the worker checks it.
  ``exp`` is not checked: it bounds when a client may accept the token *as a login*
  (OIDC Core §3.1.3.7 step 9), minutes; the worker reads it as a signed record of a
  login that happened at ``iat``, and a worker outage of a few hours must not fail
  requests;
- the e-mail (``email_verified`` true) and both names: everything that goes into the
  certificate or decides where the keystore goes comes from the verified claims.

Transport: discovery and JWKS over HTTPS, or plain http to a loopback address only (the
same rule as the login's, ``authlib.common.security.is_secure_transport``; the demo and
the tests run their provider on loopback). Any other ``http://`` issuer or ``jwks_uri``
is refused.

Nothing here touches the database: ``mycert.services.issuance`` decides what to do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.security import is_secure_transport
from django.conf import settings
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from mycert.oidc import (
    CLOCK_LEEWAY_SECONDS,
    HTTP_TIMEOUT_SECONDS,
    ID_TOKEN_ALGORITHMS,
    METADATA_MAX_AGE_SECONDS,
    LoginRefused,
    RefusalCode,
    check_issuer_and_audience,
    validate_id_token_claims,
)

__all__ = [
    "ProofUnavailable",
    "ProvenIdentity",
    "RequestUnproven",
    "proof_digest",
    "reset_provider_keys",
    "token_digest",
    "verify_request_proof",
]

logger = logging.getLogger(__name__)

#: A signature that fails with the cached keys fetches the keys again (a rotation), but
#: not more often than this: a database writer inserting bad tokens must not make the
#: workers hammer the provider.
KEY_REFRESH_MIN_SECONDS = 60
#: A JWT larger than this is not an ID token (the portal's are about 1 KiB).
MAX_TOKEN_LENGTH = 16 * 1024


class RequestUnproven(Exception):
    """The request's proof is missing or does not hold: no key may be made.

    ``check`` names the failed check (``missing``, ``signature``, ``iat``, …), never
    a claim's value; it goes into the request's reason, the audit trail and the alert.
    """

    def __init__(self, check: str) -> None:
        super().__init__(check)
        self.check = check


class ProofUnavailable(OSError):
    """The provider's keys cannot be read now; the proof is neither good nor bad.

    An ``OSError``, so the issuing task retries it like any storage outage.
    """


@dataclass(frozen=True)
class ProvenIdentity:
    """What the verified token says: all the certificate and the mail may use."""

    sub: str
    acr: str
    professional_id: str
    given_name: str
    family_name: str
    email: str
    issued_at: int
    #: SHA-256 of the token's canonical claims: one login, one certificate.
    digest: str


def proof_digest(claims: Mapping[str, Any]) -> str:
    """Name a token by its signed claims (hex SHA-256 of their canonical JSON).

    The claims, not the compact string: the same payload may be encoded or (ECDSA)
    signed in several ways, and none of them may count as a second login.
    """
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def token_digest(id_token: str) -> str:
    """Name a token in the audit trail without keeping it ("" when there is none).

    ``proof_digest`` of its claims when the payload decodes (the same value the
    certificate keeps once verified), else the SHA-256 of the string. Nothing is
    verified here: it is a label, never a decision.
    """
    if not id_token:
        return ""
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        claims = None
    if isinstance(claims, dict):
        return proof_digest(claims)
    return hashlib.sha256(id_token.encode()).hexdigest()


# --- The provider's keys, as this process reads them ------------------------------------


@dataclass
class _ProviderKeys:
    issuer: str
    keys: KeySet
    algorithms: list[str]
    loaded_at: float


_lock = threading.Lock()
_cache: _ProviderKeys | None = None


def reset_provider_keys() -> None:
    """Forget the cached discovery and keys (tests; a changed ``OIDC_ISSUER``)."""
    global _cache
    with _lock:
        _cache = None


def _get_json(url: str) -> dict[str, Any]:
    if not is_secure_transport(url):
        # TLS, or loopback only (OIDC Core §16.17; RFC 9700 §2.6).
        raise ProofUnavailable(f"insecure URL refused: {url.split('?')[0][:200]}")
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProofUnavailable(f"{type(exc).__name__} reading the provider") from exc
    if not isinstance(document, dict):
        raise ProofUnavailable("provider answered something else than a JSON object")
    return document


def _load_keys(issuer: str) -> _ProviderKeys:
    metadata = _get_json(f"{issuer}/.well-known/openid-configuration")
    # The document must speak for exactly the configured issuer (OIDC Discovery §4.3).
    if metadata.get("issuer") != issuer:
        raise ProofUnavailable("discovery names another issuer than OIDC_ISSUER")
    jwks_uri = metadata.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise ProofUnavailable("discovery has no jwks_uri")
    advertised = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [alg for alg in advertised if alg in ID_TOKEN_ALGORITHMS]
    if not algorithms:
        raise ProofUnavailable("discovery lists none of the accepted algorithms")
    try:
        keys = KeySet.import_key_set(_get_json(jwks_uri))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProofUnavailable(f"unusable JWKS: {type(exc).__name__}") from exc
    # Public keys only: a JWKS carrying a private or symmetric key is a broken provider.
    if any(key.is_private or key.key_type == "oct" for key in keys.keys):
        raise ProofUnavailable("JWKS holds a private or symmetric key")
    return _ProviderKeys(issuer=issuer, keys=keys, algorithms=algorithms, loaded_at=time.time())


def _provider_keys(*, refresh: bool = False) -> _ProviderKeys:
    global _cache
    issuer = settings.OIDC_ISSUER
    with _lock:
        cached = _cache
        now = time.time()
        if cached is not None and cached.issuer == issuer:
            age = now - cached.loaded_at
            fresh = age < METADATA_MAX_AGE_SECONDS
            if fresh and not (refresh and age >= KEY_REFRESH_MIN_SECONDS):
                return cached
        try:
            loaded = _load_keys(issuer)
        except ProofUnavailable as exc:
            # Requests wait (the task retries); the operator needs to know why.
            logger.warning("provider keys for request proofs unavailable: %s", exc)
            raise
        _cache = loaded
        logger.info("provider keys read for request proofs: %s keys", len(loaded.keys.keys))
        return loaded


# --- The check ---------------------------------------------------------------------------


def _decode(id_token: str, provider: _ProviderKeys) -> dict[str, Any]:
    header = _header(id_token)
    if "kid" not in header and len(provider.keys.keys) > 1:
        # No kid to choose by (OIDC Core §10.1 allows it): any of the provider's keys
        # whose signature holds will do.
        for key in provider.keys.keys:
            try:
                return dict(jwt.decode(id_token, key, algorithms=provider.algorithms).claims)
            except JoseError:
                continue
        raise BadSignatureError()
    token = jwt.decode(id_token, provider.keys, algorithms=provider.algorithms)
    return dict(token.claims)


def _header(id_token: str) -> dict[str, Any]:
    segment = id_token.split(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError as exc:
        raise RequestUnproven("malformed") from exc
    if not isinstance(header, dict):
        raise RequestUnproven("malformed")
    return header


def verify_request_proof(id_token: str, *, now: float) -> ProvenIdentity:
    """Verify a request's ID token as described above; raise ``RequestUnproven``.

    ``now`` is a POSIX time. ``ProofUnavailable`` (temporary) when the provider's keys
    cannot be read.
    """
    if not id_token:
        raise RequestUnproven("missing")
    if len(id_token) > MAX_TOKEN_LENGTH or id_token.count(".") != 2:
        raise RequestUnproven("malformed")
    provider = _provider_keys()
    try:
        try:
            claims = _decode(id_token, provider)
        except JoseError:
            # A rotated key (or a token without kid after a rotation) shows as a bad
            # signature or an unknown kid: read the keys once more (OIDC Core §10.1.1).
            refreshed = _provider_keys(refresh=True)
            if refreshed is provider:
                raise
            claims = _decode(id_token, refreshed)
    except JoseError as exc:
        raise RequestUnproven("signature") from exc
    except (ValueError, TypeError) as exc:
        raise RequestUnproven("malformed") from exc
    return _check_claims(claims, now=now)


def _check_claims(claims: dict[str, Any], *, now: float) -> ProvenIdentity:
    try:
        check_issuer_and_audience(
            claims, issuer=settings.OIDC_ISSUER, client_id=settings.OIDC_CLIENT_ID
        )
        identity = validate_id_token_claims(
            claims,
            accepted_acr=settings.MYCERT_OIDC_ACCEPTED_ACR,
            professional_id_claim=settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM,
        )
    except LoginRefused as refused:
        # The claim that failed (iss, aud, azp, sub), or the login's own refusal code
        # (weak_acr, not_a_professional, …): names only, never a claim's value.
        check = refused.detail if refused.code is RefusalCode.INVALID_ID_TOKEN else refused.code
        raise RequestUnproven(str(check)) from refused
    issued_at = claims.get("iat")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
        raise RequestUnproven("iat")
    if issued_at > now + CLOCK_LEEWAY_SECONDS:
        raise RequestUnproven("iat in the future")
    if now - issued_at > settings.MYCERT_REQUEST_PROOF_MAX_AGE:
        raise RequestUnproven("iat too old")
    # Only an address the provider vouches for (OIDC Core §5.1; absent is not a yes).
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip() or claims.get("email_verified") is not True:
        raise RequestUnproven("email")
    names: list[str] = []
    for claim in ("given_name", "family_name"):
        value = claims.get(claim)
        if not isinstance(value, str) or not value.strip():
            raise RequestUnproven(claim)
        names.append(" ".join(value.split()))
    return ProvenIdentity(
        sub=identity.sub,
        acr=identity.acr,
        professional_id=identity.professional_id,
        given_name=names[0],
        family_name=names[1],
        email=email.strip(),
        issued_at=int(issued_at),
        digest=proof_digest(claims),
    )
