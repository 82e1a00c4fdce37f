"""A signing identity provider for tests that make requests without a browser login.

A request must carry a signed ID token that the worker verifies against the keys it
reads itself from ``OIDC_ISSUER``'s discovery document (``mycert.request_proof``). Tests
that log in through ``oidc-provider-mock`` get the mock's tokens; the factories and the
batches of the integration tests and benchmarks need tokens for professionals made
directly in the database. This module serves, over real HTTP on loopback, a discovery
document and a JWKS for an RSA key held by the test process, and signs ID tokens with
it. Production code knows nothing of it: the worker trusts it only because the test
points ``OIDC_ISSUER`` at it, as an operator would at the portal.

Load as a pytest plugin; the autouse fixture ``request_proof_issuer`` points the
settings at this provider for every test (``oidc_settings`` repoints them at the mock).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings as SettingsWrapper

    from mycert.models import Professional

__all__ = [
    "CLIENT_ID",
    "LUXTRUST_ACR",
    "SigningProvider",
    "id_token_for",
    "request_proof_issuer",
    "signing_provider",
    "trusting_signing_provider",
]

CLIENT_ID = "mycert-test"
LUXTRUST_ACR = "urn:luxtrust:loa:high"
ACCEPTED_ACR = [LUXTRUST_ACR, "urn:luxtrust:loa:substantial"]


class SigningProvider:
    """An RSA key, its JWKS and discovery document served on a loopback port."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)
        self.requests_served = 0
        #: More public keys the JWKS lists (a provider in the middle of a rotation).
        self.extra_keys: list[RSAKey] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests_served += 1
                if self.path == "/.well-known/openid-configuration":
                    body = provider.metadata()
                elif self.path == "/jwks":
                    keys = [provider.key, *provider.extra_keys]
                    body = {"keys": [key.as_dict(private=False) for key in keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def sign(self, claims: dict[str, Any], *, key: RSAKey | None = None, kid: bool = True) -> str:
        """Sign ``claims`` as an ID token (RS256), with this provider's key or ``key``."""
        signing_key = key or self.key
        header: dict[str, Any] = {"alg": "RS256"}
        if kid:
            header["kid"] = signing_key.kid or "test-1"
        return jwt.encode(header, claims, signing_key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_provider: SigningProvider | None = None
_provider_lock = threading.Lock()


def signing_provider() -> SigningProvider:
    """The process's provider, started on first use (also outside pytest: benchmarks)."""
    global _provider
    with _provider_lock:
        if _provider is None:
            _provider = SigningProvider()
        return _provider


def claims_for(professional: Professional, **overrides: Any) -> dict[str, Any]:
    """The claims of a LuxTrust login by ``professional``, as the portal would sign them."""
    from django.conf import settings

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.OIDC_ISSUER,
        "aud": settings.OIDC_CLIENT_ID,
        "sub": professional.oidc_subject,
        "iat": now,
        "exp": now + 300,
        "auth_time": now,
        "nonce": secrets.token_urlsafe(16),
        "acr": LUXTRUST_ACR,
        settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM: professional.professional_id,
        "given_name": professional.given_name,
        "family_name": professional.family_name,
        "email": professional.email,
        "email_verified": True,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def id_token_for(professional: Professional, *, key: RSAKey | None = None, **overrides: Any) -> str:
    """A signed ID token of ``professional``'s login; ``None`` in ``overrides`` drops a claim."""
    return signing_provider().sign(claims_for(professional, **overrides), key=key)


def force_login_with_proof(client: Any, professional: Professional) -> str:
    """``client.force_login`` plus what a portal login keeps: its signed ID token."""
    from mycert.views.auth import ID_TOKEN_SESSION_KEY

    client.force_login(professional.user)
    token = id_token_for(professional)
    session = client.session
    session[ID_TOKEN_SESSION_KEY] = token
    session.save()
    return token


@contextmanager
def trusting_signing_provider() -> Iterator[SigningProvider]:
    """Trust the signing provider for a while, in a test pointed at ``oidc-provider-mock``.

    For a test that logs in through the mock and also issues factory-made requests.
    """
    from django.test import override_settings

    from mycert import request_proof

    provider = signing_provider()
    with override_settings(
        OIDC_ISSUER=provider.issuer,
        OIDC_CLIENT_ID=CLIENT_ID,
        MYCERT_OIDC_ACCEPTED_ACR=list(ACCEPTED_ACR),
        MYCERT_OIDC_PROFESSIONAL_ID_CLAIM="professional_id",
    ):
        request_proof.reset_provider_keys()
        yield provider
    request_proof.reset_provider_keys()


def point_settings_at(settings: Any, provider: SigningProvider) -> None:
    """Make ``settings`` trust ``provider`` as the portal (the worker reads its keys)."""
    from mycert import request_proof

    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.MYCERT_OIDC_ACCEPTED_ACR = list(ACCEPTED_ACR)
    settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM = "professional_id"
    request_proof.reset_provider_keys()


@pytest.fixture(autouse=True)
def request_proof_issuer(settings: SettingsWrapper) -> SigningProvider:
    """Every test trusts the signing provider (``oidc_settings`` repoints at the mock)."""
    provider = signing_provider()
    point_settings_at(settings, provider)
    return provider
