"""What relying services fetch: the CRL, the CA certificates and the OCSP responder.

Served over plain HTTP too and never redirected (RFC 5280 §4.2.1.13, RFC 6960 App. A).
No login, no cookies, no CSRF: these are public, signed objects.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from mycert import ca_store
from mycert.models import Certificate, Crl
from mycert.pki import (
    CertificateStatus,
    StatusAnswer,
    build_ocsp_response,
    error_response,
    issued_by,
    parse_ocsp_request,
)

logger = logging.getLogger(__name__)

OCSP_RESPONSE_TYPE = "application/ocsp-response"
# An OCSP request for one certificate is ~100 bytes; anything much larger is not one.
MAX_OCSP_REQUEST_BYTES = 8 * 1024


def _no_store(response: HttpResponse) -> HttpResponse:
    # Status must reflect a revocation at once: no shared caches.
    response["Cache-Control"] = "no-cache, max-age=0"
    return response


@require_GET
def crl(request: HttpRequest) -> HttpResponse:
    """The newest CRL of the issuing CA, as stored (the web needs no CA key)."""
    latest = (
        Crl.objects.order_by("-number").only("der", "number", "this_update", "next_update").first()
    )
    if latest is None:
        return HttpResponse("No CRL has been published yet.", status=503, content_type="text/plain")
    response = HttpResponse(bytes(latest.der), content_type="application/pkix-crl")
    response["Last-Modified"] = latest.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT")
    response["Content-Disposition"] = 'inline; filename="issuing.crl"'
    return _no_store(response)


@require_GET
def root_crl(request: HttpRequest) -> HttpResponse:
    """The root's CRL over the issuing CA."""
    try:
        data = ca_store.configured_paths().root_crl.read_bytes()
    except OSError:
        return HttpResponse("No root CRL is available.", status=503, content_type="text/plain")
    return HttpResponse(data, content_type="application/pkix-crl")


@require_GET
def ca_certificate(request: HttpRequest, which: str) -> HttpResponse:
    """The issuing or root CA certificate in DER (AIA caIssuers, RFC 5280 §4.2.2.1)."""
    loaded = ca_store.load_ca_certificates()
    certificate = loaded.issuing if which == "issuing" else loaded.root
    return HttpResponse(
        certificate.public_bytes(serialization.Encoding.DER), content_type="application/pkix-cert"
    )


def _status_row(serial: int) -> tuple[datetime | None, str] | None:
    """The certificate's revocation columns, in one database round trip.

    OCSP is the hottest path and asks exactly one question per request, so it skips
    Django's per-request health check (``CONN_HEALTH_CHECKS``: a ``SELECT 1`` before the
    first query, as many round trips again) and instead asks once more on a fresh
    connection if the kept one turns out to be broken (a restarted or failed-over
    database). Outside a transaction only, where a retry is harmless.
    """
    query = Certificate.objects.filter(serial=format(serial, "x")).values_list(
        "revoked_at", "revocation_reason"
    )
    if connection.in_atomic_block:
        return query.first()
    connection.health_check_done = True  # type: ignore[attr-defined]  # Django's own flag
    try:
        return query.first()
    except (InterfaceError, OperationalError):
        logger.warning("OCSP: database connection broken, asking again on a new one")
        connection.close()
        return query.first()


def _ocsp_answer(serial: int) -> StatusAnswer:
    row = _status_row(serial)
    if row is None:
        return StatusAnswer(CertificateStatus.UNKNOWN)
    revoked_at, reason = row
    if revoked_at is None:
        return StatusAnswer(CertificateStatus.GOOD)
    return StatusAnswer(
        CertificateStatus.REVOKED,
        revoked_at=revoked_at,
        reason=x509.ReasonFlags(reason) if reason else None,
    )


def _ocsp_reply(der: bytes) -> HttpResponse:
    try:
        query = parse_ocsp_request(der)
    except ValueError:
        return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    issuing = ca_store.load_ca_certificates().issuing
    if not issued_by(query, issuing):
        # Not our CA: we are not authoritative (RFC 6960 §2.3 "unauthorized").
        return _ocsp_error(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    try:
        responder = ca_store.load_ocsp_responder()
        body = build_ocsp_response(
            query=query,
            issuer_certificate=issuing,
            responder=responder,
            answer=_ocsp_answer(query.serial_number),
            now=timezone.now(),
            validity=settings.MYCERT_OCSP_VALIDITY,
        )
    except (ca_store.CaStoreError, ValueError):
        logger.exception("OCSP responder cannot sign")
        return _ocsp_error(ocsp.OCSPResponseStatus.TRY_LATER)
    return _no_store(HttpResponse(body, content_type=OCSP_RESPONSE_TYPE))


def _ocsp_error(status: ocsp.OCSPResponseStatus) -> HttpResponse:
    # OCSP errors travel inside a 200 response (RFC 6960 App. A.1.1 / RFC 5019 §5).
    return _no_store(HttpResponse(error_response(status), content_type=OCSP_RESPONSE_TYPE))


@csrf_exempt
@require_http_methods(["POST"])
def ocsp_post(request: HttpRequest) -> HttpResponse:
    """OCSP over HTTP POST (RFC 6960 App. A.1): the DER request is the body."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:  # "abc", "1e9": not a length (RFC 9110 §8.6), not a 500 either
        return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if length > MAX_OCSP_REQUEST_BYTES:
        return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    return _ocsp_reply(request.body)


@require_GET
def ocsp_get(request: HttpRequest, encoded: str) -> HttpResponse:
    """OCSP over HTTP GET: base64 of the DER request, URL-encoded, in the path."""
    if len(encoded) > MAX_OCSP_REQUEST_BYTES:
        return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    text = unquote(encoded)
    try:
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    return _ocsp_reply(der)
