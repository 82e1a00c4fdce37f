"""The shipped main-site nginx (deploy/nginx/mycert-site.conf + mycert-pki.conf), run.

Debian's nginx with the two files as an operator installs them (only addresses, paths
and the upstream changed), in front of MyCert's web app (the Django live server):

- OCSP GET (RFC 5019) and POST are answered from nginx's short cache, and a revocation
  still reaches the clients within the cache's lifetime, far inside the 60 s goal;
- tryLater (the revoked answer not signed yet) and other OCSP errors are never cached:
  the answer signed a moment later is served at once;
- the CRLs and CA certificates are served over plain HTTP, never redirected, cached;
- the main site clears X-MyCert-Client-Cert: a forged header through it gets
  ``no_certificate`` at the self-check;
- the files start with no [::] listen (a host without IPv6);
- the OCSP responder process (granian running the same application, as a web host runs
  it for /pki/ocsp/; PostgreSQL only: it shares the test's database) gives exactly the
  web app's answers, a revocation at once, and nginx sends OCSP to it.
"""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from django.utils import timezone

from mycert import custody
from mycert.services.ocsp import ocsp_responses_sign
from mycert.services.publication import crl_publish
from mycert.services.revocation import certificate_revoke
from tests.support import keystores
from tests.support.ocsp import ocsp_request_der
from tests.support.tls_servers import REPO, Nginx, free_port, server_certificate, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NGINX_DIR = REPO / "deploy" / "nginx"
SITE = NGINX_DIR / "mycert-site.conf"
PKI = NGINX_DIR / "mycert-pki.conf"
GOAL_SECONDS = 60


def _ocsp_cache_seconds() -> int:
    """The lifetime the shipped file gives OCSP answers (proxy_cache_valid 200 …s)."""
    block = PKI.read_text().split("location /pki/ocsp/ {", 1)[1].split("\n}", 1)[0]
    found = re.search(r"proxy_cache_valid 200 (\d+)s;", block)
    assert found is not None
    return int(found.group(1))


@dataclass
class Site:
    http: str
    https: str
    server_cert: Path
    direct: str  # the web app itself, without nginx

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.get(url, timeout=10, verify=str(self.server_cert), **kwargs)


def _start_site(tmp_path: Path, web_port: int, ocsp_port: int) -> tuple[Nginx, Site]:
    certificate, key = server_certificate(tmp_path)
    http_port, https_port = free_port(), free_port()
    text = SITE.read_text()
    replacements = {
        "    listen 80;\n": f"    listen 127.0.0.1:{http_port};\n",
        "    listen 443 ssl;\n": f"    listen 127.0.0.1:{https_port} ssl;\n",
        "server 127.0.0.1:8001;": f"server 127.0.0.1:{ocsp_port};",
        "127.0.0.1:8000": f"127.0.0.1:{web_port}",
        "/var/cache/nginx/mycert-pki": str(tmp_path / "cache"),
        "/etc/ssl/mycert/mycert.esante.lu.crt": str(certificate),
        "/etc/ssl/mycert/mycert.esante.lu.key": str(key),
        "/etc/nginx/snippets/mycert-pki.conf": str(PKI),
    }
    for old, new in replacements.items():
        assert old in text, f"{SITE.name} no longer contains {old!r}"
        text = text.replace(old, new)
    nginx = Nginx(tmp_path / "nginx")
    nginx.start(text, https_port)
    return nginx, Site(
        f"http://127.0.0.1:{http_port}",
        f"https://127.0.0.1:{https_port}",
        certificate,
        f"http://127.0.0.1:{web_port}",
    )


@pytest.fixture
def site(live_server: Any, settings: Any, ca: custody.CaPaths, tmp_path: Path) -> Iterator[Site]:
    """nginx before the web app; the OCSP responder process is down (nobody on its port),
    so /pki/ocsp/ goes to the backup, the web app: the same answers."""
    settings.MYCERT_PKI_BASE_URL = live_server.url
    crl_publish(now=timezone.now())
    nginx, made = _start_site(tmp_path, urlsplit(live_server.url).port or 80, free_port())
    try:
        yield made
    finally:
        nginx.stop()


@dataclass
class Answer:
    status: str  # "good", "revoked", or the OCSP error ("tryLater", …)
    cache: str  # nginx's X-MyCert-Cache: MISS, HIT, … ("" without nginx)


def _ask(base: str, der: bytes, *, post: bool) -> Answer:
    if post:
        response = requests.post(
            f"{base}/pki/ocsp/",
            data=der,
            headers={"Content-Type": "application/ocsp-request"},
            timeout=10,
        )
    else:
        encoded = quote(base64.b64encode(der).decode(), safe="")
        response = requests.get(f"{base}/pki/ocsp/{encoded}", timeout=10)
    assert response.status_code == 200, response.text
    parsed = ocsp.load_der_ocsp_response(response.content)
    if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        status = {
            ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
            ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
        }.get(parsed.response_status, parsed.response_status.name)
    else:
        status = parsed.certificate_status.name.lower()
    return Answer(status, response.headers.get("X-MyCert-Cache", ""))


def _revoke(issued: keystores.Keystore) -> int:
    assert issued.record is not None
    certificate_revoke(
        certificate_id=issued.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=timezone.now(),
    )
    return issued.record.pk


def test_a_revocation_reaches_clients_through_the_cache_within_its_lifetime(site: Site) -> None:
    lifetime = _ocsp_cache_seconds()
    # The cache's share of the 60 s goal leaves most of it to the relying servers.
    assert lifetime <= GOAL_SECONDS / 4
    issued = keystores.issue(professional_id="LU-MED-800100")
    der = ocsp_request_der(issued.certificate)
    for post in (False, True):
        first = _ask(site.http, der, post=post)
        assert (first.status, first.cache) == ("good", "MISS")
        again = _ask(site.http, der, post=post)
        assert (again.status, again.cache) == ("good", "HIT")
    cached_at = time.monotonic()

    # The helpdesk revokes; the worker signs the revoked answer (its task, done here).
    pk = _revoke(issued)
    ocsp_responses_sign(certificate_ids=[pk], now=timezone.now())
    assert _ask(site.direct, der, post=True).status == "revoked"

    seen: dict[bool, float] = {}
    while len(seen) < 2:
        for post in (False, True):
            if post in seen:
                continue
            answer = _ask(site.http, der, post=post)
            assert answer.status in ("good", "revoked")
            if answer.status == "revoked":
                seen[post] = time.monotonic() - cached_at
        assert time.monotonic() - cached_at < lifetime + 5, seen
        time.sleep(0.1)
    # Never later than the cached "good" expires (plus a poll and the load's slack).
    assert max(seen.values()) <= lifetime + 2, seen
    # And over HTTPS, through the same cache.
    verified = requests.post(
        f"{site.https}/pki/ocsp/",
        data=der,
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
        verify=str(site.server_cert),
    )
    assert ocsp.load_der_ocsp_response(verified.content).certificate_status == (
        ocsp.OCSPCertStatus.REVOKED
    )


def test_try_later_and_other_errors_are_never_cached(site: Site) -> None:
    issued = keystores.issue(professional_id="LU-MED-800200")
    der = ocsp_request_der(issued.certificate)
    # Revoked, and the worker has not signed the revoked answer yet: tryLater, not "good".
    pk = _revoke(issued)
    for post in (False, True):
        for _ in range(2):
            answer = _ask(site.http, der, post=post)
            assert answer.status == "tryLater"
            assert answer.cache != "HIT"
    ocsp_responses_sign(certificate_ids=[pk], now=timezone.now())
    # At once, not after the cache's lifetime: no tryLater was kept.
    for post in (False, True):
        assert _ask(site.http, der, post=post).status == "revoked"

    # A certificate MyCert never issued (unauthorized) and a malformed request.
    foreign, _ = keystores.foreign()
    stranger = ocsp_request_der(foreign.certificate)
    for _ in range(2):
        answer = _ask(site.http, stranger, post=True)
        assert (answer.status, answer.cache == "HIT") == ("unauthorized", False)
        broken = _ask(site.http, b"\x30\x03\x02\x01\x00", post=True)
        assert (broken.status, broken.cache == "HIT") == ("malformedRequest", False)


def test_crls_and_ca_certificates_over_plain_http_cached_never_redirected(site: Site) -> None:
    for path, content_type in (
        ("/pki/crl/issuing.crl", "application/pkix-crl"),
        ("/pki/crl/root.crl", "application/pkix-crl"),
        ("/pki/ca/root.cer", "application/pkix-cert"),
        ("/pki/ca/issuing.cer", "application/pkix-cert"),
    ):
        first = requests.get(f"{site.http}{path}", timeout=10, allow_redirects=False)
        assert first.status_code == 200, path
        assert first.headers["Content-Type"] == content_type
        assert first.headers["X-MyCert-Cache"] == "MISS"
        again = requests.get(f"{site.http}{path}", timeout=10, allow_redirects=False)
        assert again.content == first.content
        assert again.headers["X-MyCert-Cache"] == "HIT"
    x509.load_der_x509_crl(requests.get(f"{site.http}/pki/crl/issuing.crl", timeout=10).content)
    # Everything else on plain HTTP goes to HTTPS.
    other = requests.get(f"{site.http}/certificates/", timeout=10, allow_redirects=False)
    assert other.status_code == 301
    assert other.headers["Location"].startswith("https://")
    # /metrics is not published.
    assert site.get(f"{site.https}/metrics").status_code == 403


def test_the_main_site_clears_a_forged_client_certificate_header(site: Site, settings: Any) -> None:
    issued = keystores.issue(professional_id="LU-MED-800300")
    pem = issued.certificate.public_bytes(serialization.Encoding.PEM).decode()
    forged = {"X-MyCert-Client-Cert": quote(pem, safe="")}
    # The check host shares the main site's host name here, so only nginx's clearing of
    # the header stands between the forger and the page (Django's host check is
    # tests/test_selfcheck.py's).
    settings.MYCERT_CHECK_BASE_URL = site.https
    answer = site.get(f"{site.https}/check/status.json", headers=forged)
    assert answer.status_code == 200
    assert answer.json()["status"] == "no_certificate"
    # The same header straight to the web app from this (trusted) address would count.
    direct = requests.get(
        f"{site.direct}/check/status.json",
        headers={**forged, "Host": "127.0.0.1"},
        timeout=10,
    )
    assert direct.json()["status"] == "ok"


@pytest.mark.parametrize("name", ["mycert-site.conf", "mycert-check.conf"])
def test_the_shipped_files_start_without_ipv6(name: str) -> None:
    """nginx refuses to start where it cannot bind [::]: the [::] listens are optional,
    commented out, and the file's header says so."""
    text = (NGINX_DIR / name).read_text()
    assert not re.search(r"^\s*listen \[::\]", text, re.M)
    assert re.search(r"^\s*# listen \[::\]", text, re.M)
    assert "without IPv6" in text.split("\n\n", 1)[0] + text.split("\n\n", 2)[1]


@pytest.fixture
def ocsp_process(worker_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """The OCSP responder process as docs/deploy.md §3 runs it; return its port."""
    port = free_port()
    log = tmp_path / "granian.log"
    # A web host's environment: no CA passphrase, no outbox key.
    env = {**worker_env, "MYCERT_CA_KEY_PASSPHRASE": "", "MYCERT_OUTBOX_KEY": ""}
    command = [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--blocking-threads", "2", "--no-ws",
        "--log-level", "warning", "config.wsgi:application",
    ]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_port(port, process=process, log=log)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _cache_control(response: requests.Response) -> dict[str, str]:
    directives = (part.strip() for part in response.headers["Cache-Control"].split(","))
    return dict(part.partition("=")[::2] for part in directives)


def _max_age(response: requests.Response) -> int:
    return int(_cache_control(response)["max-age"])


def _cache_directives(response: requests.Response) -> dict[str, str]:
    """Cache-Control without max-age, which depends on when it was asked."""
    return {k: v for k, v in _cache_control(response).items() if k != "max-age"}


def test_the_ocsp_responder_process_answers_as_the_web_app(
    live_server: Any, settings: Any, ca: custody.CaPaths, tmp_path: Path, ocsp_process: int
) -> None:
    settings.MYCERT_PKI_BASE_URL = live_server.url
    responder = f"http://127.0.0.1:{ocsp_process}"
    issued = keystores.issue(professional_id="LU-MED-800400")
    der = ocsp_request_der(issued.certificate)
    foreign, _ = keystores.foreign()
    stranger = ocsp_request_der(foreign.certificate)
    for post in (False, True):
        for request in (der, stranger, b"\x30\x03\x02\x01\x00"):
            mine = _ask(responder, request, post=post)
            theirs = _ask(live_server.url, request, post=post)
            assert mine.status == theirs.status
    assert _ask(responder, der, post=True).status == "good"
    # The same bytes as Django's view, headers included.
    encoded = quote(base64.b64encode(der).decode(), safe="")
    mine_raw = requests.get(f"{responder}/pki/ocsp/{encoded}", timeout=10)
    theirs_raw = requests.get(f"{live_server.url}/pki/ocsp/{encoded}", timeout=10)
    assert mine_raw.content == theirs_raw.content
    for header in ("Content-Type", "ETag", "Expires", "Last-Modified"):
        assert mine_raw.headers[header] == theirs_raw.headers[header]
    # max-age counts down to nextUpdate: the two fetches may straddle a second.
    assert abs(_max_age(mine_raw) - _max_age(theirs_raw)) <= 1
    assert _cache_directives(mine_raw) == _cache_directives(theirs_raw)

    # No cache of its own: tryLater once the revocation commits, revoked once signed.
    pk = _revoke(issued)
    assert _ask(responder, der, post=True).status == "tryLater"
    ocsp_responses_sign(certificate_ids=[pk], now=timezone.now())
    assert _ask(responder, der, post=False).status == "revoked"

    # nginx sends /pki/ocsp/ to it: with no web app at all (nobody on mycert_web's port,
    # the backup), OCSP is still answered.
    nginx, site = _start_site(tmp_path, free_port(), ocsp_process)
    try:
        assert _ask(site.http, der, post=True).status == "revoked"
        assert _ask(site.http, der, post=False).status == "revoked"
        assert requests.get(f"{site.http}/pki/ca/root.cer", timeout=10).status_code == 502
    finally:
        nginx.stop()
