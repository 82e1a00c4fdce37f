"""A real OpenID provider for tests: ``oidc-provider-mock`` run as a separate process.

Load as a pytest plugin (``pytest_plugins = ["tests.support.oidc_provider"]``). It gives

- ``oidc_provider`` (session): a running provider, see :class:`OidcProvider`;
- ``oidc_settings`` (function): Django settings pointed at it, Authlib client reset;
- :func:`login_professional`: a whole login driven through the Django test client.

The mock (0.3.4) signs ID tokens with one RSA key and no ``kid``, takes any client id and
redirect URI, does not enforce PKCE and ignores ``acr_values``; whatever claims
``PUT /users/<sub>`` sets (``acr``, ``professional_id``, …) appear in the ID token and in
userinfo. Its authorization page is a form where one types the ``sub``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pytest
import requests

if TYPE_CHECKING:
    from django.test import Client
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse
    from pytest_django.fixtures import Settings as SettingsWrapper

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "LUXTRUST_ACR",
    "WEAK_ACR",
    "OidcProvider",
    "callback_path",
    "login_professional",
    "oidc_provider",
    "oidc_settings",
    "professional_claims",
    "run_oidc_provider",
    "start_login",
]

LUXTRUST_ACR = "urn:luxtrust:loa:high"
LUXTRUST_ACR_SUBSTANTIAL = "urn:luxtrust:loa:substantial"
WEAK_ACR = "urn:esante:loa:password"
CLIENT_ID = "mycert-test"
CLIENT_SECRET = "mycert-test-secret"
BASE_URL = "http://testserver"
_TIMEOUT = 10
_STARTUP_SECONDS = 30


@dataclass
class OidcProvider:
    """A running ``oidc-provider-mock`` and the provider-side steps of a login."""

    issuer: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        port = urlsplit(self.issuer).port
        assert port is not None
        return port

    def metadata(self) -> dict[str, Any]:
        """The discovery document as the provider serves it."""
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=_TIMEOUT)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def jwks(self) -> dict[str, Any]:
        """The provider's public keys."""
        response = requests.get(self.metadata()["jwks_uri"], timeout=_TIMEOUT)
        response.raise_for_status()
        keys: dict[str, Any] = response.json()
        return keys

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        """Create or replace the user ``sub``; its claims go into ID token and userinfo."""
        response = requests.put(
            f"{self.issuer}/users/{quote(sub, safe='')}", json=claims, timeout=_TIMEOUT
        )
        assert response.status_code == 204, response.text

    def authorize(self, authorize_url: str, sub: str) -> str:
        """Log ``sub`` in at the provider; return the callback URL (code and state)."""
        return self._submit(authorize_url, {"sub": sub})

    def deny(self, authorize_url: str) -> str:
        """Refuse the login at the provider; return the callback URL with the error."""
        return self._submit(authorize_url, {"action": "deny"})

    def log(self) -> str:
        """What the provider process printed (for assertion messages)."""
        return self.log_path.read_text(errors="replace")

    def _submit(self, authorize_url: str, form: dict[str, str]) -> str:
        # Only ever talk to this provider: the URL comes from the application under test.
        assert authorize_url.startswith(f"{self.issuer}/"), authorize_url
        page = requests.get(authorize_url, timeout=_TIMEOUT)
        assert page.status_code == 200, page.text
        # The page's form posts back to the same URL (query string included).
        response = requests.post(authorize_url, data=form, allow_redirects=False, timeout=_TIMEOUT)
        assert response.status_code in (302, 303), response.text
        location: str = response.headers["Location"]
        return location


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_oidc_provider(log_dir: Path, *args: str) -> Iterator[OidcProvider]:
    """Run ``oidc-provider-mock`` on a free loopback port until the context ends.

    ``args`` go to its command line (``--token-max-age=-600`` for expired tokens, …).
    """
    executable = Path(sys.executable).parent / "oidc-provider-mock"
    port = _free_port()
    log_path = log_dir / f"oidc-provider-{port}.log"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    provider = OidcProvider(issuer=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"oidc-provider-mock exited at start:\n{provider.log()}")
            try:
                if provider.metadata().get("issuer") == provider.issuer:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"oidc-provider-mock did not answer in time:\n{provider.log()}")
            time.sleep(0.1)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider process for the whole run."""
    with run_oidc_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider


def _reset_client() -> None:
    from mycert import oidc

    oidc.reset_client()


@pytest.fixture
def oidc_settings(settings: SettingsWrapper, oidc_provider: OidcProvider) -> Iterator[OidcProvider]:
    """Point MyCert's OpenID settings at ``oidc_provider`` (and forget any cached client)."""
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.MYCERT_OIDC_ACCEPTED_ACR = [LUXTRUST_ACR, LUXTRUST_ACR_SUBSTANTIAL]
    settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM = "professional_id"
    settings.MYCERT_OIDC_SCOPES = "openid profile email"
    settings.MYCERT_BASE_URL = BASE_URL
    _reset_client()
    yield oidc_provider
    _reset_client()


def professional_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a professional logged in with LuxTrust; ``None`` drops a claim."""
    claims: dict[str, Any] = {
        "acr": LUXTRUST_ACR,
        "professional_id": "1234567890",
        "given_name": "Marie",
        "family_name": "Muller",
        "email": "marie.muller@example.lu",
        "email_verified": True,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def callback_path(callback_url: str) -> str:
    """The path and query of a callback URL, for the Django test client."""
    parts = urlsplit(callback_url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE_URL, callback_url
    return f"{parts.path}?{parts.query}"


def start_login(client: Client, *, next_url: str | None = None) -> str:
    """GET /oidc/login/ with the test client; return the provider's authorization URL."""
    data = {"next": next_url} if next_url is not None else {}
    response = client.get("/oidc/login/", data)
    assert response.status_code == 302, response.content.decode(errors="replace")
    location: str = response["Location"]
    return location


def login_professional(
    client: Client,
    oidc_provider: OidcProvider,
    sub: str,
    claims: dict[str, Any],
    *,
    next_url: str | None = None,
) -> TestResponse:
    """Log ``sub`` in with ``claims``: MyCert → provider (requests) → MyCert's callback.

    Returns the callback's response (302 to the form when the login is accepted).
    Needs ``oidc_settings`` and database access.
    """
    oidc_provider.set_user(sub, claims)
    authorize_url = start_login(client, next_url=next_url)
    callback_url = oidc_provider.authorize(authorize_url, sub)
    return client.get(callback_path(callback_url))
