"""A web host holds no secret (docs/architecture.md « Hosts and trust boundaries »): it starts,
checks clean and seals nothing.

Workers alone hold the CA keys' secrets and the outbox key; the outbox key is required
outside debug and never derived from DJANGO_SECRET_KEY, which every web host holds.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from mycert import sealing
from tests.support.hosts import public_ca_copy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_sealing() -> Any:
    sealing._fernet.cache_clear()
    yield
    sealing._fernet.cache_clear()


def test_production_never_derives_the_outbox_key_from_the_secret_key(
    settings: Any, fresh_sealing: None
) -> None:
    settings.DEBUG = False
    settings.MYCERT_OUTBOX_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="MYCERT_OUTBOX_KEY is not set"):
        sealing.seal(b"keystore")


def test_debug_derives_a_key_when_none_is_set(settings: Any, fresh_sealing: None) -> None:
    settings.DEBUG = True
    settings.MYCERT_OUTBOX_KEY = ""
    assert sealing.unseal(sealing.seal(b"keystore")) == b"keystore"


def test_a_malformed_outbox_key_is_named(settings: Any, fresh_sealing: None) -> None:
    settings.MYCERT_OUTBOX_KEY = "not-a-fernet-key"
    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        sealing.seal(b"keystore")


def test_the_configured_key_seals(settings: Any, fresh_sealing: None) -> None:
    key = Fernet.generate_key().decode()
    settings.DEBUG = False
    settings.MYCERT_OUTBOX_KEY = key
    token = sealing.seal(b"password")
    assert Fernet(key.encode()).decrypt(token) == b"password"


def _host_env(tmp_path: Path, ca_dir: Path, **extra: str) -> dict[str, str]:
    """A production host's environment, built from nothing but PATH."""
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "mycert.esante.lu",
        "MYCERT_BASE_URL": "https://mycert.esante.lu",
        # Relying services fetch CRLs and OCSP over plain http (deploy.md §15, W041).
        "MYCERT_PKI_BASE_URL": "http://mycert.esante.lu",
        # Every host, web and worker, keys the audit chain (deploy.md §15, W042).
        "MYCERT_AUDIT_KEY": secrets.token_urlsafe(32),
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
        "CACHE_URL": "redis://127.0.0.1:6379/2",
        # The agency portal, not the demo's provider (W050, W051).
        "OIDC_ISSUER": "https://portail.esante.lu/oidc",
        "OIDC_CLIENT_SECRET": secrets.token_urlsafe(32),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/2",
        "MYCERT_VAR_DIR": str(tmp_path / "var"),
        "MYCERT_CA_DIR": str(ca_dir),
        **extra,
    }


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Every check (not only the security tag): the CA's too.
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_on_a_web_host_without_any_key_secret_is_clean(
    ca: Any, tmp_path: Path
) -> None:
    public = public_ca_copy(ca.directory, tmp_path / "public-ca")
    result = _check(_host_env(tmp_path, public))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_web_host_starts_and_serves_its_pages_without_secrets(ca: Any, tmp_path: Path) -> None:
    public = public_ca_copy(ca.directory, tmp_path / "public-ca")
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "django.setup(); from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); from django.test import Client; "
        "c = Client(HTTP_HOST='mycert.esante.lu'); "
        "print(c.get('/', secure=True).status_code, c.get('/pki/ca/issuing.cer').status_code)"
    )
    env = _host_env(tmp_path, public, MYCERT_STATIC_MANIFEST="false")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "200"]


def test_check_on_a_worker_without_the_outbox_key_fails(ca: Any, tmp_path: Path) -> None:
    from django.conf import settings

    env = _host_env(
        tmp_path,
        ca.directory,
        MYCERT_CA_KEY_PASSPHRASE=settings.MYCERT_CA_KEY_PASSPHRASE,
        MYCERT_AUDIT_HEAD_FILE=str(tmp_path / "audit-head.jsonl"),  # a worker's (W054)
    )
    result = _check(env)
    assert result.returncode != 0
    assert "mycert.E011" in result.stderr + result.stdout
    assert "MYCERT_OUTBOX_KEY is not set" in result.stderr + result.stdout

    env["MYCERT_OUTBOX_KEY"] = Fernet.generate_key().decode()
    assert _check(env).returncode == 0
