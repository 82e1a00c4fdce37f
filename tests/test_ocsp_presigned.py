"""OCSP from stored answers: workers sign ahead, the web serves bytes and holds no key.

Real CA, real database; requests built and answers read with pyca, the WSGI entry point
that gunicorn runs called as a WSGI server would.
"""

from __future__ import annotations

import io
import secrets
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.db import transaction
from django.test import Client
from django.utils import timezone

from mycert import custody
from mycert.models import Certificate, OcspResponse
from mycert.services.issuance import request_issue
from mycert.services.ocsp import (
    _SignAfterCommit,
    ocsp_responses_due_ids,
    ocsp_responses_refresh,
    ocsp_responses_sign,
)
from mycert.services.revocation import certificate_revoke
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _issue() -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _request_der(record: Certificate, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    leaf = x509.load_pem_x509_certificate(record.pem.encode())
    issuing = custody.ca_certificates_load().issuing
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, issuing, algorithm or hashes.SHA1())  # noqa: S303 - CertID
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def _ask(client: Client, record: Certificate, algorithm: Any = None) -> ocsp.OCSPResponse:
    response = client.post(
        "/pki/ocsp/", _request_der(record, algorithm), content_type="application/ocsp-request"
    )
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.content)


def _revoke(record: Certificate) -> None:
    certificate_revoke(
        certificate_id=record.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )


def test_issuance_stores_a_good_answer_for_each_certid_hash(client: Client, ca: Any) -> None:
    record = _issue()
    stored = OcspResponse.objects.get(certificate=record)
    assert stored.status == OcspResponse.Status.GOOD
    for algorithm, der in ((hashes.SHA1, stored.der_sha1), (hashes.SHA256, stored.der_sha256)):
        parsed = ocsp.load_der_ocsp_response(bytes(der))
        assert isinstance(parsed.hash_algorithm, algorithm)
        assert parsed.serial_number == record.serial_number
        assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert parsed.next_update_utc == stored.next_update
        answered = _ask(client, record, algorithm())
        assert answered.public_bytes(serialization.Encoding.DER) == bytes(der)


def test_the_web_answers_without_any_key(client: Client, ca: Any, settings: Any) -> None:
    """The OCSP view reads stored bytes: a host whose passphrase opens nothing still answers."""
    record = _issue()
    settings.MYCERT_CA_KEY_PASSPHRASE = "not-the-passphrase-" + secrets.token_hex(8)
    custody.cache_clear()
    answer = _ask(client, record)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_a_committed_revocation_is_never_answered_good(client: Client, ca: Any) -> None:
    """Between the revocation's commit and its signed answer: tryLater, never the stored good."""
    record = _issue()
    assert _ask(client, record).certificate_status == ocsp.OCSPCertStatus.GOOD
    # The revocation commits; its signing task has not run (the broker is slow, say).
    Certificate.objects.filter(pk=record.pk).update(
        revoked_at=timezone.now(), revocation_reason="keyCompromise"
    )
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303
        assert _ask(client, record, algorithm).response_status == (
            ocsp.OCSPResponseStatus.TRY_LATER
        )
    # Beat's refresh repairs a lost task: a revoked row with a "good" answer is due.
    assert ocsp_responses_due_ids(now=timezone.now()) == [record.pk]
    ocsp_responses_refresh(now=timezone.now())
    answer = _ask(client, record)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.key_compromise


def test_revocation_signs_the_revoked_answer_on_commit(
    client: Client, ca: Any, eager_tasks: None
) -> None:
    record = _issue()
    _revoke(record)
    answer = _ask(client, record, hashes.SHA256())
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert OcspResponse.objects.get(certificate=record).status == OcspResponse.Status.REVOKED


def test_a_bulk_revocation_signs_once_for_all(client: Client, ca: Any, eager_tasks: None) -> None:
    records = [_issue() for _ in range(3)]
    with transaction.atomic():
        for record in records:
            _revoke(record)
        pending = transaction.get_connection().run_on_commit
        signings = [c for _, c, _ in pending if isinstance(c, _SignAfterCommit)]
    assert len(signings) == 1
    assert signings[0].certificate_ids == [r.pk for r in records]
    for record in records:
        assert _ask(client, record).certificate_status == ocsp.OCSPCertStatus.REVOKED


def test_a_rolled_back_revocation_signs_nothing(ca: Any, eager_tasks: None) -> None:
    record = _issue()
    before = OcspResponse.objects.get(certificate=record).this_update

    def revoke_then_fail() -> None:
        with transaction.atomic():
            _revoke(record)
            raise RuntimeError("the helpdesk's transaction fails")

    with pytest.raises(RuntimeError):
        revoke_then_fail()
    stored = OcspResponse.objects.get(certificate=record)
    assert (stored.status, stored.this_update) == (OcspResponse.Status.GOOD, before)


def test_refresh_re_signs_before_half_the_validity(ca: Any, settings: Any) -> None:
    record = _issue()
    validity = settings.MYCERT_OCSP_VALIDITY
    now = timezone.now()
    assert ocsp_responses_due_ids(now=now) == []
    assert ocsp_responses_due_ids(now=now + validity / 2) == [record.pk]
    later = now + validity / 2
    assert ocsp_responses_refresh(now=later) == 1
    stored = OcspResponse.objects.get(certificate=record)
    assert stored.this_update == later.replace(microsecond=0)
    assert ocsp_responses_due_ids(now=later) == []


def test_refresh_skips_expired_certificates_and_signs_missing_answers(ca: Any) -> None:
    kept, expired = _issue(), _issue()
    OcspResponse.objects.filter(certificate=kept).delete()
    Certificate.objects.filter(pk=expired.pk).update(not_after=timezone.now() - timedelta(days=1))
    OcspResponse.objects.filter(certificate=expired).update(
        this_update=timezone.now() - timedelta(days=2)
    )
    assert ocsp_responses_due_ids(now=timezone.now()) == [kept.pk]


def test_stale_answers_are_not_served(client: Client, ca: Any) -> None:
    """Workers down past nextUpdate: tryLater; a certificate past its end: unauthorized."""
    record = _issue()
    past = timezone.now() - timedelta(minutes=1)
    OcspResponse.objects.filter(certificate=record).update(next_update=past)
    assert _ask(client, record).response_status == ocsp.OCSPResponseStatus.TRY_LATER
    Certificate.objects.filter(pk=record.pk).update(not_after=past)
    assert _ask(client, record).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_a_certificate_without_an_answer_yet_gets_try_later(client: Client, ca: Any) -> None:
    record = _issue()
    OcspResponse.objects.filter(certificate=record).delete()
    assert _ask(client, record).response_status == ocsp.OCSPResponseStatus.TRY_LATER


def test_other_certid_hashes_are_unauthorized(client: Client, ca: Any) -> None:
    record = _issue()
    answer = _ask(client, record, hashes.SHA512())
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_signing_in_chunks_covers_every_certificate(ca: Any, monkeypatch: Any) -> None:
    import mycert.services.ocsp as service

    records = [_issue() for _ in range(5)]
    monkeypatch.setattr(service, "CHUNK", 2)
    later = timezone.now() + timedelta(minutes=1)
    assert ocsp_responses_sign(certificate_ids=[r.pk for r in records], now=later) == 5
    assert set(OcspResponse.objects.values_list("this_update", flat=True)) == {
        later.replace(microsecond=0)
    }


# --- The WSGI entry point gunicorn runs (config.wsgi: OCSP before Django's handler) -------------


def _wsgi(
    method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[str, dict[str, str], bytes]:
    from config.wsgi import application

    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/ocsp-request",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(response_headers)

    payload = b"".join(application(environ, start_response))
    return captured["status"], captured["headers"], payload


def test_the_wsgi_fast_path_gives_the_views_answers(client: Client, ca: Any) -> None:
    import base64
    from urllib.parse import quote

    record = _issue()
    der = _request_der(record)
    view = client.post("/pki/ocsp/", der, content_type="application/ocsp-request")
    status, headers, body = _wsgi("POST", "/pki/ocsp/", der)
    assert status == "200 OK"
    assert body == view.content
    assert headers["Content-Type"] == "application/ocsp-response"
    assert headers["ETag"] == view["ETag"]
    assert headers["Cache-Control"].startswith("max-age=")

    encoded = quote(base64.b64encode(der).decode(), safe="")
    status, headers, got = _wsgi("GET", f"/pki/ocsp/{encoded}")
    assert (status, got) == ("200 OK", view.content)
    status, _, empty = _wsgi("GET", f"/pki/ocsp/{encoded}", HTTP_IF_NONE_MATCH=headers["ETag"])
    assert (status, empty) == ("304 Not Modified", b"")

    for bad in (b"", b"not ocsp", b"\x00" * 9000):
        status, _, reply = _wsgi("POST", "/pki/ocsp/", bad)
        assert status == "200 OK"
        assert ocsp.load_der_ocsp_response(reply).response_status == (
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        )
    status, _, _ = _wsgi("PUT", "/pki/ocsp/", der)
    assert status.startswith("405")
    # Everything else is Django's.
    status, _, _ = _wsgi("GET", "/pki/ca/issuing.cer")
    assert status == "200 OK"


def test_a_re_signed_answer_is_served_with_its_own_etag_and_dates(client: Client, ca: Any) -> None:
    # The headers of a stored answer are formatted once per answer: a re-signed one
    # (beat's refresh, a revocation) must never carry the previous answer's.
    import hashlib
    from email.utils import parsedate_to_datetime

    record = _issue()
    der = _request_der(record)
    first = client.post("/pki/ocsp/", der, content_type="application/ocsp-request")
    _revoke(record)
    ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now() + timedelta(seconds=2))
    for response in (
        first,
        client.post("/pki/ocsp/", der, content_type="application/ocsp-request"),
    ):
        answer = ocsp.load_der_ocsp_response(response.content)
        assert (
            response["ETag"] == f'"{hashlib.blake2b(response.content, digest_size=16).hexdigest()}"'
        )
        assert parsedate_to_datetime(response["Last-Modified"]) == answer.this_update_utc
        assert parsedate_to_datetime(response["Expires"]) == answer.next_update_utc
    assert ocsp.load_der_ocsp_response(response.content).certificate_status == (
        ocsp.OCSPCertStatus.REVOKED
    )
    assert response["ETag"] != first["ETag"]
