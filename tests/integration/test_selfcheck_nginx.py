"""The self-check behind the real nginx with deploy/nginx/mycert-check.conf (issue #15).

curl presents real MyCert keystores the way the README tells vendors to
(``--cert-type P12 --cert file.p12:password``) to nginx, which hands the certificate to
the Django live server; every verdict is Django's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from mycert.models import AuditEvent
from mycert.services.revocation import certificate_revoke
from tests.support import keystores
from tests.support.tls_servers import Nginx, check_site, free_port, server_certificate

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@dataclass
class CheckSite:
    url: str
    server_cert: Path
    directory: Path

    def curl(self, path: str, *args: str) -> tuple[int, str]:
        result = subprocess.run(
            [
                "curl", "-sS", "--cacert", str(self.server_cert), "-o", "-",
                "-w", "\n%{http_code}", *args, f"{self.url}{path}",
            ],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        body, _, code = result.stdout.rpartition("\n")
        return int(code), body

    def status(self, keystore: keystores.Keystore | None, *args: str) -> dict[str, Any]:
        if keystore is not None:
            path = keystore.write(self.directory, f"k{keystore.certificate.serial_number}")
            args = ("--cert-type", "P12", "--cert", f"{path}:{keystore.password}", *args)
        code, body = self.curl("/status.json", *args)
        assert code == 200, body
        return dict(json.loads(body))


@pytest.fixture
def check_site_nginx(
    live_server: Any, ca: Any, tmp_path: Path, settings: Any
) -> Iterator[CheckSite]:
    certificate, key = server_certificate(tmp_path)
    port = free_port()
    settings.MYCERT_CHECK_BASE_URL = f"https://127.0.0.1:{port}"
    nginx = Nginx(tmp_path / "nginx")
    upstream = urlsplit(live_server.url)
    nginx.start(
        check_site(
            port=port, upstream=f"127.0.0.1:{upstream.port}", certificate=certificate, key=key
        ),
        port,
    )
    try:
        yield CheckSite(f"https://127.0.0.1:{port}", certificate, tmp_path)
    finally:
        nginx.stop()


def test_curl_with_a_valid_keystore_gets_ok(check_site_nginx: CheckSite) -> None:
    issued = keystores.issue(professional_id="LU-MED-777001")
    assert issued.record is not None
    body = check_site_nginx.status(issued)
    assert body["status"] == "ok"
    assert body["serial"] == issued.record.serial
    assert body["professional_id"] == "LU-MED-777001"
    event = AuditEvent.objects.filter(action="selfcheck.checked").latest("pk")
    assert event.details == {"serial": issued.record.serial, "result": "ok"}


def test_the_page_at_the_root_shows_the_holder(check_site_nginx: CheckSite) -> None:
    issued = keystores.issue(given_name="Jean", family_name="Weber")
    path = issued.write(check_site_nginx.directory, "page")
    code, body = check_site_nginx.curl(
        "/", "--cert-type", "P12", "--cert", f"{path}:{issued.password}",
        "-H", "Accept-Language: fr",
    )  # fmt: skip
    assert code == 200
    assert "Jean Weber" in body
    assert "non révoqué" in body


def test_no_certificate_reaches_the_page(check_site_nginx: CheckSite) -> None:
    assert check_site_nginx.status(None)["status"] == "no_certificate"


def test_nginx_overwrites_a_forged_header(check_site_nginx: CheckSite) -> None:
    issued = keystores.issue()
    pem = issued.certificate.public_bytes(serialization.Encoding.PEM).decode()
    forged = ("-H", f"X-MyCert-Client-Cert: {quote(pem, safe='')}")
    assert check_site_nginx.status(None, *forged)["status"] == "no_certificate"


def test_revoked_expired_foreign_early_and_server_only_certificates_are_named(
    check_site_nginx: CheckSite,
) -> None:
    revoked = keystores.issue()
    assert revoked.record is not None
    certificate_revoke(
        certificate_id=revoked.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=timezone.now(),
    )
    assert check_site_nginx.status(revoked)["status"] == "revoked"
    # OpenSSL finds these expired or untrusted during the handshake: optional_no_ca and
    # error_page 495 must still bring them to Django.
    assert check_site_nginx.status(keystores.expired(keystores.issue()))["status"] == "expired"
    other, _ = keystores.foreign()
    assert check_site_nginx.status(other)["status"] == "unknown_issuer"
    now = timezone.now()
    early = keystores.variant(
        keystores.issue(), not_before=now + timedelta(days=1), not_after=now + timedelta(days=9)
    )
    assert check_site_nginx.status(early)["status"] == "not_yet_valid"
    server_only = keystores.variant(keystores.issue(), server_auth_only=True)
    assert check_site_nginx.status(server_only)["status"] == "wrong_usage"


def test_only_the_two_addresses_and_what_the_page_needs_are_served(
    check_site_nginx: CheckSite,
) -> None:
    assert check_site_nginx.curl("/admin/")[0] == 404
    assert check_site_nginx.curl("/request/")[0] == 404
    code, _ = check_site_nginx.curl("/static/mycert/site.css")
    assert code == 200
