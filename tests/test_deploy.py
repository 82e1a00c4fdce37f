"""Production settings: refusals without secrets, `check --deploy`, HTTPS, CSP, static files."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycert.ops.logformat import JsonFormatter

ROOT = Path(__file__).resolve().parents[1]
CHECK_DEPLOY: tuple[str, ...] = (sys.executable, "manage.py", "check", "--deploy")
CHECK_DEPLOY += ("--tag", "security", "--fail-level", "WARNING")

# The settings as a process reads them at start (config/settings.py reads the
# environment), without loading the apps: what these tests look at is all there.
SETUP = (
    "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
    "from django.conf import settings as s; s.INSTALLED_APPS; "
)


def _production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment like an operator's: nothing inherited but PATH."""
    env = {
        "PATH": os.environ["PATH"],
        "MYCERT_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "mycert.esante.lu",
        "MYCERT_BASE_URL": "https://mycert.esante.lu",
        "MYCERT_PKI_BASE_URL": "http://mycert.esante.lu",
        "MYCERT_CA_KEY_PASSPHRASE": "x",
        "MYCERT_AUDIT_KEY": secrets.token_urlsafe(32),
        # A worker exports the audit head outside the database (deploy.md §15, W054).
        "MYCERT_AUDIT_HEAD_FILE": str(tmp_path / "audit-head.jsonl"),
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
        "CACHE_URL": "redis://127.0.0.1:6379/2",
        # The agency portal, not the demo's provider (W050, W051).
        "OIDC_ISSUER": "https://portail.esante.lu/oidc",
        "OIDC_CLIENT_SECRET": secrets.token_urlsafe(32),
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
    env = _production_env(tmp_path, CACHE_URL="locmemcache://", MYCERT_ADMIN_REQUIRE_OTP="false")
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


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # Unset: the demo's secret and mock provider, as `make run` uses them.
        ({"OIDC_CLIENT_SECRET": "", "OIDC_ISSUER": ""}, {"mycert.W050", "mycert.W051"}),
        ({"OIDC_ISSUER": "http://portail.esante.lu/oidc"}, {"mycert.W051"}),
        ({"OIDC_ISSUER": "https://127.0.0.1:9400"}, {"mycert.W051"}),
        ({"OIDC_ISSUER": "https://localhost/oidc"}, {"mycert.W051"}),
        (
            {"MYCERT_BASE_URL": "http://mycert.esante.lu", "DJANGO_SECURE_SSL_REDIRECT": "false"},
            {"mycert.W052"},
        ),
        ({"MYCERT_PKCS11_PIN": "4711"}, {"mycert.W053"}),
    ],
)
def test_check_deploy_warns_of_demo_and_unsafe_values(
    tmp_path: Path, overrides: dict[str, str], expected: set[str]
) -> None:
    env = _production_env(tmp_path, **overrides)
    if overrides.get("OIDC_CLIENT_SECRET") == "":
        env.pop("OIDC_CLIENT_SECRET", None)
    if overrides.get("OIDC_ISSUER") == "":
        env.pop("OIDC_ISSUER", None)
    result = subprocess.run(
        [*CHECK_DEPLOY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, result.stdout + result.stderr
    found = set(re.findall(r"mycert\.W\d+", result.stderr))
    assert found == expected, result.stderr
    assert "4711" not in result.stderr  # the warning names the setting, never the PIN


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


def _minimal_production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What the issue calls the minimum: debug off, the secret key, the hosts, the secrets."""
    env = {
        "PATH": os.environ["PATH"],
        "MYCERT_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "mycert.esante.lu",
        "MYCERT_CA_KEY_PASSPHRASE": secrets.token_urlsafe(32),
        "MYCERT_AUDIT_KEY": secrets.token_urlsafe(32),
        "MYCERT_OUTBOX_KEY": "x" * 43 + "=",
        # A worker exports the audit head outside the database (deploy.md §15, W054).
        "MYCERT_AUDIT_HEAD_FILE": str(tmp_path / "audit-head.jsonl"),
        # Required in production since issue 22 (W050-W052): the real provider and site.
        "OIDC_ISSUER": "https://portail.esante.lu/oidc",
        "OIDC_CLIENT_SECRET": secrets.token_urlsafe(32),
        "MYCERT_BASE_URL": "https://mycert.esante.lu",
        "MYCERT_PKI_BASE_URL": "http://mycert.esante.lu",
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value}


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHECK_DEPLOY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_only_the_required_settings(tmp_path: Path) -> None:
    result = _check_deploy(_minimal_production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_is_https_by_default_whatever_the_base_url(tmp_path: Path) -> None:
    code = SETUP + (
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_REDIRECT_EXEMPT)"
    )
    result = _python(_minimal_production_env(tmp_path), code)
    assert result.returncode == 0, result.stderr
    redirect, session, csrf, hsts, *_ = result.stdout.split()
    assert (redirect, session, csrf, hsts) == ("True", "True", "True", str(365 * 24 * 3600))
    for exempt in ("^pki/", "^healthz$", "^metrics$"):
        assert exempt in result.stdout


def test_plain_http_when_the_operator_turns_the_redirect_off(tmp_path: Path) -> None:
    env = _minimal_production_env(
        tmp_path, MYCERT_BASE_URL="http://mycert.esante.lu", DJANGO_SECURE_SSL_REDIRECT="false"
    )
    code = SETUP + (
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE)"
    )
    result = _python(env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False", "False", "False"]


def test_check_deploy_names_a_plain_relay_an_https_pki_address_and_a_missing_audit_key(
    tmp_path: Path,
) -> None:
    env = _minimal_production_env(
        tmp_path,
        EMAIL_URL="smtp://relay.esante.lu:25",
        MYCERT_BASE_URL="https://mycert.esante.lu",
        MYCERT_PKI_BASE_URL="",  # unset: the https base URL
        MYCERT_AUDIT_KEY="",
    )
    result = _check_deploy(env)
    assert result.returncode != 0
    for check_id in ("mycert.W040", "mycert.W041", "mycert.W042"):
        assert check_id in result.stderr, result.stderr


def test_check_deploy_accepts_a_tls_relay_and_a_loopback_one(tmp_path: Path) -> None:
    for url in ("smtp+tls://relay.esante.lu:587", "smtp://127.0.0.1:25", "smtp://localhost:25"):
        result = _check_deploy(_minimal_production_env(tmp_path, EMAIL_URL=url))
        assert "mycert.W040" not in result.stderr, url


def test_check_deploy_names_a_short_audit_key(tmp_path: Path) -> None:
    result = _check_deploy(_minimal_production_env(tmp_path, MYCERT_AUDIT_KEY="short"))
    assert "mycert.W043" in result.stderr


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


@pytest.mark.django_db
def test_demo_refuses_to_run_without_debug(settings: Any) -> None:
    """The demo makes a superuser whose password is in the README."""
    from django.contrib.auth import get_user_model
    from django.core.management import CommandError, call_command

    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=true"):
        call_command("demo", "--setup-only")
    assert not get_user_model().objects.filter(username__in=["admin", "helpdesk"]).exists()


def test_check_deploy_names_a_plain_http_issuer_and_a_proof_age_shorter_than_sessions(
    tmp_path: Path,
) -> None:
    """Issue 20 §1: workers read the provider's keys over HTTPS only (W051 names an http
    or loopback issuer), and a proof must outlive the session that made it (W061)."""
    env = _minimal_production_env(
        tmp_path,
        OIDC_ISSUER="http://portal.esante.lu",
        MYCERT_REQUEST_PROOF_MAX_AGE="3600",
    )
    result = _check_deploy(env)
    assert "mycert.W051" in result.stderr, result.stderr
    assert "mycert.W061" in result.stderr, result.stderr


def test_check_deploy_accepts_an_https_issuer_and_a_proof_age_above_sessions(
    tmp_path: Path,
) -> None:
    result = _check_deploy(
        _minimal_production_env(tmp_path, OIDC_ISSUER="https://portal.esante.lu/auth/realms/esante")
    )
    assert "mycert.W051" not in result.stderr, result.stderr
    assert "mycert.W061" not in result.stderr, result.stderr


def test_check_deploy_names_a_worker_without_an_audit_head_export(settings: Any) -> None:
    """Issue 20 §4: the head (and the pinned first keyed event) must leave the database."""
    from mycert.checks import check_audit_head_export

    settings.MYCERT_CA_KEY_PASSPHRASE = "a-worker-holds-the-ca-passphrase-here"
    settings.MYCERT_AUDIT_HEAD_FILE = ""
    assert [message.id for message in check_audit_head_export()] == ["mycert.W054"]
    settings.MYCERT_AUDIT_HEAD_FILE = "/srv/mycert-audit/head.jsonl"
    assert check_audit_head_export() == []
    # A web host exports nothing (beat runs on workers): nothing to configure there.
    settings.MYCERT_AUDIT_HEAD_FILE = ""
    settings.MYCERT_CA_KEY_PASSPHRASE = ""
    assert check_audit_head_export() == []


@pytest.mark.parametrize("value", ["10000", "1", "0"])
def test_a_revocation_code_work_factor_that_scrypt_refuses_stops_the_start(
    tmp_path: Path, value: str
) -> None:
    result = _python(_production_env(tmp_path, MYCERT_REVOCATION_CODE_SCRYPT_N=value), SETUP)
    assert result.returncode != 0
    assert "MYCERT_REVOCATION_CODE_SCRYPT_N must be a power of two" in result.stderr


def test_check_names_an_unusable_crl_high_water_mark_on_a_worker(
    settings: Any, tmp_path: Path
) -> None:
    """Issue 20 §2: a worker that cannot read or write its mark would refuse to publish."""
    from mycert.checks import check_crl_high_water_mark

    settings.MYCERT_CA_KEY_PASSPHRASE = "a-worker-holds-the-ca-passphrase-here"
    mark = tmp_path / "state" / "crl-high-water.json"
    settings.MYCERT_CRL_HIGH_WATER_FILE = str(mark)
    assert check_crl_high_water_mark() == []  # not there yet: the first CRL writes it
    mark.parent.mkdir()
    mark.write_text("not json")
    [error] = check_crl_high_water_mark()
    assert error.id == "mycert.E050"
    assert "cannot be read" in error.msg
    settings.MYCERT_CA_KEY_PASSPHRASE = ""  # a web host never publishes
    assert check_crl_high_water_mark() == []
