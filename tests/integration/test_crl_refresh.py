"""deploy/mycert-crl-refresh.sh refuses every CRL that would turn a revocation back.

The relying services fetch the CRLs over plain HTTP (docs/relying-parties.md §2), so
anyone on the path can answer in MyCert's place with another CRL MyCert's CAs really
signed. The script, run as shipped with the real openssl and curl, first installs the
live CRLs of MyCert's web app (a revocation listed); then "the path" (an HTTP server of
this test) answers with:

- the issuing CA's CRL from before the revocation (a replay: lower cRLNumber);
- an issuing CA's CRL past its nextUpdate;
- the root's CRL in the issuing CA's place (signed, current, numbered above, lists no one);
- a CRL under the issuing CA's name signed by another key;
- a truncated download.

Each time the installed file stays as it was (the revocation still listed), the script
says why and exits 1. It raises an alarm (exit 2) when an installed CRL comes within the
set margin of its nextUpdate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.utils import timezone

from mycert import custody
from mycert.models import Crl
from mycert.pki import CertificateAuthority, KeyType, build_crl, generate_private_key
from mycert.services.publication import crl_publish
from mycert.services.revocation import certificate_revoke
from tests.support import keystores
from tests.support.tls_servers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REFRESH = REPO / "deploy" / "mycert-crl-refresh.sh"


class _Path(ThreadingHTTPServer):
    """Whoever is on the network path: answers /pki/crl/*.crl with bytes of its choice."""

    files: dict[str, bytes]


class _Handler(BaseHTTPRequestHandler):
    server: _Path

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Refresh:
    live_url: str
    ca_file: Path
    crl_file: Path
    path: _Path

    def run(
        self, url: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REFRESH), url or self.live_url, str(self.ca_file), str(self.crl_file)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )

    def through_path(self, issuing: bytes, root: bytes) -> subprocess.CompletedProcess[str]:
        """Run the script while the path answers with these CRLs (DER)."""
        self.path.files = {"/pki/crl/issuing.crl": issuing, "/pki/crl/root.crl": root}
        host, port = self.path.server_address[:2]
        return self.run(f"http://{host!s}:{port}")

    def installed_serials(self) -> set[int]:
        pem = self.crl_file.read_bytes()
        first = pem.split(b"-----END X509 CRL-----\n", 1)[0] + b"-----END X509 CRL-----\n"
        return {entry.serial_number for entry in x509.load_pem_x509_crl(first)}


@pytest.fixture
def refresh(live_server: Any, settings: Any, ca: custody.CaPaths) -> Iterator[Refresh]:
    settings.MYCERT_PKI_BASE_URL = live_server.url
    directory = Path(tempfile.mkdtemp(prefix="mycert-crl-refresh-", dir="/tmp"))
    ca_file = directory / "mycert-ca.pem"
    ca_file.write_bytes(ca.root_cert.read_bytes() + ca.issuing_cert.read_bytes())
    path = _Path(("127.0.0.1", 0), _Handler)
    path.files = {}
    thread = threading.Thread(target=path.serve_forever, daemon=True)
    thread.start()
    try:
        yield Refresh(live_server.url, ca_file, directory / "mycert-crls.pem", path)
    finally:
        path.shutdown()
        path.server_close()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Revoked:
    serial: int
    before: bytes  # the issuing CA's CRL signed before the revocation (DER)


def _revoke_and_install(refresh: Refresh) -> Revoked:
    """MyCert's CRL before a revocation, then the revocation installed from the live app."""
    crl_publish(now=timezone.now())
    before = Crl.objects.order_by("-number").first()
    assert before is not None
    assert refresh.run().returncode == 0
    issued = keystores.issue(professional_id="LU-MED-700100")
    assert issued.record is not None
    certificate_revoke(
        certificate_id=issued.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=timezone.now(),
    )
    crl_publish(now=timezone.now())
    result = refresh.run()
    assert result.returncode == 0, result.stderr
    serial = issued.certificate.serial_number
    assert serial in refresh.installed_serials()
    return Revoked(serial, bytes(before.der))


def _root_crl(ca: custody.CaPaths) -> bytes:
    return ca.root_crl.read_bytes()


def _refused(result: subprocess.CompletedProcess[str], refresh: Refresh, kept: bytes) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert refresh.crl_file.read_bytes() == kept
    assert "keeping the installed issuing CRL" in result.stderr


def test_a_replayed_older_crl_is_refused(refresh: Refresh, ca: custody.CaPaths) -> None:
    revoked = _revoke_and_install(refresh)
    kept = refresh.crl_file.read_bytes()
    result = refresh.through_path(revoked.before, _root_crl(ca))
    _refused(result, refresh, kept)
    assert "issuing CRL refused: cRLNumber" in result.stderr
    assert "older than the installed" in result.stderr
    assert revoked.serial in refresh.installed_serials()


def test_an_expired_crl_is_refused(refresh: Refresh, ca: custody.CaPaths) -> None:
    revoked = _revoke_and_install(refresh)
    kept = refresh.crl_file.read_bytes()
    now = timezone.now()
    # Genuinely signed by the issuing CA and numbered above the installed one: only its
    # nextUpdate is wrong.
    expired = build_crl(
        issuer=custody.ca_load().issuing,
        entries=[],
        crl_number=10**6,
        this_update=now - timedelta(days=2),
        next_update=now - timedelta(days=1),
    ).public_bytes(serialization.Encoding.DER)
    result = refresh.through_path(expired, _root_crl(ca))
    _refused(result, refresh, kept)
    assert "issuing CRL refused: expired" in result.stderr
    assert revoked.serial in refresh.installed_serials()


def test_the_roots_crl_in_the_issuing_cas_place_is_refused(
    refresh: Refresh, ca: custody.CaPaths
) -> None:
    revoked = _revoke_and_install(refresh)
    kept = refresh.crl_file.read_bytes()
    root_crl = _root_crl(ca)
    # Signed by MyCert's root, current, and its cRLNumber (Unix time) is far above the
    # issuing CA's: only its issuer tells it apart. It lists no end entity.
    assert x509.load_der_x509_crl(root_crl).extensions.get_extension_for_class(
        x509.CRLNumber
    ).value.crl_number > max(Crl.objects.values_list("number", flat=True))
    result = refresh.through_path(root_crl, root_crl)
    _refused(result, refresh, kept)
    assert "issuing CRL refused: issued by" in result.stderr
    assert revoked.serial in refresh.installed_serials()


def test_a_crl_under_the_issuing_cas_name_signed_by_another_key_is_refused(
    refresh: Refresh, ca: custody.CaPaths
) -> None:
    _revoke_and_install(refresh)
    kept = refresh.crl_file.read_bytes()
    now = timezone.now()
    forged = build_crl(
        issuer=_impostor(custody.ca_load().issuing.certificate),
        entries=[],
        crl_number=10**6,
        this_update=now,
        next_update=now + timedelta(days=1),
    ).public_bytes(serialization.Encoding.DER)
    result = refresh.through_path(forged, _root_crl(ca))
    _refused(result, refresh, kept)
    assert "issuing CRL refused: its signature is not the issuing CA's" in result.stderr


def _impostor(genuine: x509.Certificate) -> CertificateAuthority:
    """A CA with the genuine one's name and extensions, and a key of its own."""
    key = generate_private_key(KeyType.EC_P256)
    builder = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(genuine.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
    )
    for extension in genuine.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return CertificateAuthority(builder.sign(key, hashes.SHA256()), key)


def test_a_truncated_download_is_refused(refresh: Refresh, ca: custody.CaPaths) -> None:
    _revoke_and_install(refresh)
    kept = refresh.crl_file.read_bytes()
    crl_publish(now=timezone.now())  # a newer genuine CRL, cut short on the way
    newest = Crl.objects.order_by("-number").first()
    assert newest is not None
    result = refresh.through_path(bytes(newest.der)[: len(newest.der) // 2], _root_crl(ca))
    _refused(result, refresh, kept)
    assert "issuing CRL refused: not a CRL" in result.stderr


def test_a_refused_root_crl_keeps_the_installed_root_crl_and_takes_the_new_issuing_one(
    refresh: Refresh, ca: custody.CaPaths
) -> None:
    """Per CA: a newer issuing CRL is still installed when the root's is refused."""
    revoked = _revoke_and_install(refresh)
    crl_publish(now=timezone.now())
    newest = Crl.objects.order_by("-number").first()
    assert newest is not None
    result = refresh.through_path(bytes(newest.der), bytes(newest.der))
    assert result.returncode == 1, result.stderr
    assert "root CRL refused: issued by" in result.stderr
    assert "keeping the installed root CRL" in result.stderr
    installed = refresh.crl_file.read_bytes()
    assert bytes(newest.der) in _pem_crls_as_der(installed)
    assert _root_crl(ca) in _pem_crls_as_der(installed)
    assert revoked.serial in refresh.installed_serials()


def _pem_crls_as_der(pem: bytes) -> list[bytes]:
    end = b"-----END X509 CRL-----\n"
    return [
        x509.load_pem_x509_crl(part + end).public_bytes(serialization.Encoding.DER)
        for part in pem.split(end)
        if part.strip()
    ]


def test_an_installed_crl_near_its_next_update_raises_the_alarm(refresh: Refresh) -> None:
    crl_publish(now=timezone.now())
    fresh = refresh.run()
    assert fresh.returncode == 0, fresh.stderr
    assert "ALARM" not in fresh.stderr
    # MyCert's CRLs are valid 24 h: with a margin of 25 h the new one is already too close.
    near = refresh.run(env={"MYCERT_CRL_ALARM_SECONDS": str(25 * 3600)})
    assert near.returncode == 2, near.stderr
    assert "ALARM: the installed issuing CRL expires in" in near.stderr
    # The same for the root's CRL (a year): a margin beyond it.
    root = refresh.run(env={"MYCERT_ROOT_CRL_ALARM_SECONDS": str(400 * 86400)})
    assert root.returncode == 2, root.stderr
    assert "ALARM: the installed root CRL expires in" in root.stderr
