"""CRL and OCSP as relying services see them: fetched from the addresses in the certificate,
read by openssl, verified against the root."""

from __future__ import annotations

import base64
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.db import connection
from django.test import Client
from django.utils import timezone

from mycert import custody
from mycert.models import Certificate
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from mycert.services.revocation import AlreadyRevoked, certificate_revoke
from tests.factories import CertificateRequestFactory
from tests.support.ocsp import ocsp_request_der

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pki_site(settings, ca, live_server, eager_tasks):
    """Certificates issued while the PKI base URL is the live test server."""
    settings.MYCERT_PKI_BASE_URL = live_server.url
    crl_publish(now=timezone.now())
    return live_server.url


def _issue() -> tuple[Certificate, x509.Certificate]:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    record = Certificate.objects.get(pk=outcome.certificate_id)
    return record, x509.load_pem_x509_certificate(record.pem.encode())


def _aia(certificate: x509.Certificate, method: x509.ObjectIdentifier) -> str:
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(str(d.access_location.value) for d in aia if d.access_method == method)


def _crl_url(certificate: x509.Certificate) -> str:
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return str(points[0].full_name[0].value)


def _openssl_ocsp(url: str, leaf: Path, ca_dir: Path, *extra: str) -> str:
    result = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-url",
            url,
            *extra,
            "-issuer",
            str(ca_dir / "issuing.pem"),
            "-cert",
            str(leaf),
            "-CAfile",
            str(ca_dir / "root.pem"),
            "-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert "Response verify OK" in result.stderr + result.stdout, result.stderr + result.stdout
    return result.stdout


def _write_pem(certificate: x509.Certificate, path: Path) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_ocsp_good_then_revoked_at_the_certificates_own_address(
    pki_site: str, tmp_path: Path
) -> None:
    record, certificate = _issue()
    leaf = _write_pem(certificate, tmp_path / "leaf.pem")
    ca_dir = custody.ca_paths().directory
    ocsp_url = _aia(certificate, x509.oid.AuthorityInformationAccessOID.OCSP)
    assert ocsp_url.startswith(pki_site)

    assert f"{leaf}: good" in _openssl_ocsp(ocsp_url, leaf, ca_dir)
    assert f"{leaf}: good" in _openssl_ocsp(ocsp_url, leaf, ca_dir, "-sha256")
    assert f"{leaf}: good" in _openssl_ocsp(ocsp_url, leaf, ca_dir, "-no_nonce")
    # Pre-signed answers echo no nonce (RFC 5019 §4): openssl warns, and verifies.
    warned = subprocess.run(
        ["openssl", "ocsp", "-url", ocsp_url, "-issuer", str(ca_dir / "issuing.pem"),
         "-cert", str(leaf), "-CAfile", str(ca_dir / "root.pem")],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert "WARNING: no nonce in response" in warned.stderr + warned.stdout
    assert "Response verify OK" in warned.stderr + warned.stdout

    certificate_revoke(
        certificate_id=record.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )
    answer = _openssl_ocsp(ocsp_url, leaf, ca_dir)
    assert f"{leaf}: revoked" in answer
    assert "Reason: keyCompromise" in answer


def test_ocsp_never_issued_serial_is_unauthorized(pki_site: str, tmp_path: Path) -> None:
    """RFC 5019 §2.2.3: a pre-signing responder answers "unauthorized" for a serial it
    never issued (it has no signed "unknown" to give, and must not say "good")."""
    _, _certificate = _issue()
    ca_dir = custody.ca_paths().directory
    result = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-url",
            f"{pki_site}/pki/ocsp/",
            "-issuer",
            str(ca_dir / "issuing.pem"),
            "-serial",
            "0x1234567890abcdef",
            "-CAfile",
            str(ca_dir / "root.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert "Responder Error: unauthorized" in result.stdout + result.stderr


def test_ocsp_get_sha256_is_the_stored_answer_with_rfc5019_caching(pki_site: str) -> None:
    _, certificate = _issue()
    issuing = custody.ca_certificates_load().issuing
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuing, hashes.SHA256())
        .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
        .build()
    )
    encoded = quote(
        base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode(), safe=""
    )
    response = requests.get(f"{pki_site}/pki/ocsp/{encoded}", timeout=10)
    assert response.headers["Content-Type"] == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    # The CertID echoes the request's: SHA-256 hashes, same serial (RFC 6960 §4.1.1).
    assert isinstance(parsed.hash_algorithm, hashes.SHA256)
    assert parsed.issuer_key_hash == request.issuer_key_hash
    assert parsed.serial_number == certificate.serial_number
    # Pre-signed: the nonce is not echoed (RFC 5019 §4 profile).
    with pytest.raises(x509.ExtensionNotFound):
        parsed.extensions.get_extension_for_class(x509.OCSPNonce)
    # RFC 5019 §6.2: cacheable until nextUpdate.
    assert parsed.next_update_utc is not None
    max_age = int(response.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    left = (parsed.next_update_utc - timezone.now()).total_seconds()
    assert 0 < max_age <= left + 1
    assert "public" in response.headers["Cache-Control"]
    assert response.headers["ETag"].startswith('"')
    assert response.headers["Last-Modified"]
    assert response.headers["Expires"]
    again = requests.get(
        f"{pki_site}/pki/ocsp/{encoded}",
        headers={"If-None-Match": response.headers["ETag"]},
        timeout=10,
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    "body", [b"", b"not an ocsp request", b"\x30\x03\x02\x01\x01", b"\x00" * 9000]
)
def test_malformed_ocsp_requests_get_malformed_request(pki_site: str, body: bytes) -> None:
    response = requests.post(
        f"{pki_site}/pki/ocsp/",
        data=body,
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    assert response.status_code == 200
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_malformed_ocsp_get_paths(client: Client, ca) -> None:
    for path in ["/pki/ocsp/%%%%", "/pki/ocsp/AAAA", "/pki/ocsp/" + "A" * 9000]:
        response = client.get(path)
        assert response.status_code == 200
        parsed = ocsp.load_der_ocsp_response(response.content)
        assert parsed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_crl_at_the_certificates_address_lists_the_revocation(
    pki_site: str, tmp_path: Path
) -> None:
    record, certificate = _issue()
    compromised = timezone.now() - timedelta(hours=2)
    certificate_revoke(
        certificate_id=record.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
        compromised_at=compromised,
    )
    crl_publish(now=timezone.now())  # what the on-commit task does in the worker
    url = _crl_url(certificate)
    assert url.startswith(pki_site)
    response = requests.get(url, timeout=10)
    assert response.headers["Content-Type"] == "application/pkix-crl"
    crl_path = tmp_path / "issuing.crl"
    crl_path.write_bytes(response.content)
    ca_dir = custody.ca_paths().directory
    text = subprocess.run(
        [
            "openssl",
            "crl",
            "-inform",
            "DER",
            "-in",
            str(crl_path),
            "-noout",
            "-text",
            "-CAfile",
            str(ca_dir / "issuing.pem"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "verify OK" in text.stderr
    assert record.serial.upper() in text.stdout.replace(":", "").upper()
    assert "Key Compromise" in text.stdout
    assert "Invalidity Date" in text.stdout


def test_crl_numbers_only_increase(ca) -> None:
    numbers = [crl_publish(now=timezone.now()).number for _ in range(3)]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3


def test_revoking_twice_is_refused(ca) -> None:
    record, _ = _issue()
    kwargs = {
        "certificate_id": record.pk,
        "reason": Certificate.RevocationReason.CESSATION_OF_OPERATION,
        "via": Certificate.RevokedVia.HELPDESK,
        "actor": None,
    }
    certificate_revoke(**kwargs, now=timezone.now())  # type: ignore[arg-type]
    with pytest.raises(AlreadyRevoked):
        certificate_revoke(**kwargs, now=timezone.now())  # type: ignore[arg-type]


def test_ca_certificates_are_published_in_der(client: Client, ca) -> None:
    issuing = client.get("/pki/ca/issuing.cer")
    assert issuing["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(issuing.content) == custody.ca_certificates_load().issuing
    assert client.get("/pki/ca/other.cer").status_code == 404
    root_crl = client.get("/pki/crl/root.crl")
    assert (
        x509.load_der_x509_crl(root_crl.content).issuer
        == custody.ca_certificates_load().root.subject
    )


def test_ocsp_asks_again_on_a_new_connection_when_the_kept_one_broke(client: Client, ca) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("kept connections are a PostgreSQL matter (SQLite opens one per request)")
    _, leaf = _issue()
    body = ocsp_request_der(leaf)
    # The database side of the kept connection is gone (a restart, a failover); the
    # OCSP view skips the per-request health check and must recover by itself.
    assert connection.connection is not None
    connection.connection.close()

    response = client.post("/pki/ocsp/", body, content_type="application/ocsp-request")

    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_re_published_crl_follows_the_rows(ca) -> None:
    first, _ = _issue()
    second, _ = _issue()
    now = timezone.now()
    Certificate.objects.filter(pk=first.pk).update(
        revoked_at=now - timedelta(hours=1), revocation_reason="superseded"
    )

    def listed() -> dict[int, x509.ReasonFlags | None]:
        crl = x509.load_der_x509_crl(bytes(crl_publish(now=timezone.now()).der))
        reasons: dict[int, x509.ReasonFlags | None] = {}
        for entry in crl:
            try:
                reasons[entry.serial_number] = entry.extensions.get_extension_for_class(
                    x509.CRLReason
                ).value.reason
            except x509.ExtensionNotFound:
                reasons[entry.serial_number] = None
        return reasons

    assert listed() == {first.serial_number: x509.ReasonFlags.superseded}
    # Entries are reused between publications by value: a row that changes (a reason
    # raised to keyCompromise) or a new revocation shows in the next CRL.
    Certificate.objects.filter(pk=first.pk).update(
        revocation_reason="keyCompromise", compromised_at=now - timedelta(days=2)
    )
    Certificate.objects.filter(pk=second.pk).update(
        revoked_at=now - timedelta(minutes=5), revocation_reason="unspecified"
    )
    assert listed() == {
        first.serial_number: x509.ReasonFlags.key_compromise,
        second.serial_number: None,
    }
