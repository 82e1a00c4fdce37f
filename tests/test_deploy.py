"""Production settings: refusals without secrets, `check --deploy`, HTTPS, CSP, static files."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycert.logformat import JsonFormatter

ROOT = Path(__file__).resolve().parents[1]
CHECK_DEPLOY: tuple[str, ...] = (sys.executable, "manage.py", "check", "--deploy")
CHECK_DEPLOY += ("--tag", "security", "--fail-level", "WARNING")

SETUP = (
    "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
    "django.setup(); from django.conf import settings as s; "
)


def _production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment like an operator's: nothing inherited but PATH."""
    env = {
        "PATH": os.environ["PATH"],
        "MYCERT_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "mycert.esante.lu",
        "MYCERT_BASE_URL": "https://mycert.esante.lu",
        "MYCERT_CA_KEY_PASSPHRASE": "x",
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
        "CACHE_URL": "redis://127.0.0.1:6379/2",
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value}


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = _python(_production_env(tmp_path, DJANGO_SECRET_KEY=""), SETUP)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts(tmp_path: Path) -> None:
    result = _python(_production_env(tmp_path, DJANGO_ALLOWED_HOSTS=""), SETUP)
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must be set" in result.stderr


def test_check_deploy_is_clean_with_a_production_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CHECK_DEPLOY],
        cwd=ROOT,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_a_per_process_cache_and_an_admin_without_otp(tmp_path: Path) -> None:
    env = _production_env(tmp_path, CACHE_URL="", MYCERT_ADMIN_REQUIRE_OTP="false")
    result = subprocess.run(
        [*CHECK_DEPLOY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "mycert.W020" in result.stderr
    assert "mycert.W021" in result.stderr


def test_https_base_url_turns_on_hsts_secure_cookies_redirect_and_manifest(tmp_path: Path) -> None:
    code = SETUP + (
        "import json; print(json.dumps({k: str(getattr(s, k)) for k in ["
        "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_SSL_REDIRECT', "
        "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER', "
        "'SECURE_REDIRECT_EXEMPT', 'MYCERT_ADMIN_REQUIRE_OTP']} | "
        "{'static': s.STORAGES['staticfiles']['BACKEND']}))"
    )
    result = _python(_production_env(tmp_path), code)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["SECURE_HSTS_SECONDS"] == str(365 * 24 * 3600)
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] == "True"
    assert values["SECURE_SSL_REDIRECT"] == "True"
    assert values["SESSION_COOKIE_SECURE"] == values["CSRF_COOKIE_SECURE"] == "True"
    assert values["SECURE_PROXY_SSL_HEADER"] == "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert "^pki/" in values["SECURE_REDIRECT_EXEMPT"]
    assert values["MYCERT_ADMIN_REQUIRE_OTP"] == "True"
    assert values["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"


def test_plain_http_base_url_sends_no_hsts(tmp_path: Path) -> None:
    env = _production_env(tmp_path, MYCERT_BASE_URL="http://mycert.esante.lu")
    result = _python(env, SETUP + "print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False"]


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_without_inline_code(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert b"<script>" not in response.content
    assert b" style=" not in response.content


@pytest.mark.django_db
def test_hsts_header_on_https_requests(settings: Any, client: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.django_db
def test_ssl_redirect_spares_crl_ocsp_and_probes(settings: Any, client: Any, ca: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/").status_code == 301
    ocsp = client.post("/pki/ocsp/", data=b"not der", content_type="application/ocsp-request")
    assert ocsp.status_code == 200
    assert ocsp["Content-Type"] == "application/ocsp-response"
    assert client.get("/pki/crl/issuing.crl").status_code != 301
    assert client.get("/healthz").status_code != 301


@pytest.mark.django_db
def test_static_files_are_served_by_whitenoise(client: Any) -> None:
    response = client.get("/static/mycert/progress.js")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)


def test_json_log_lines_name_ids_and_nothing_else_from_extra() -> None:
    record = logging.LogRecord(
        "mycert.x", logging.INFO, __file__, 1, "delivery %s sent", (7,), None
    )
    record.__dict__.update(delivery_id=7, certificate_id=3, password="hunter2")
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "delivery 7 sent"
    assert line["delivery_id"] == 7
    assert line["certificate_id"] == 3
    assert line["level"] == "INFO"
    assert "hunter2" not in json.dumps(line)
