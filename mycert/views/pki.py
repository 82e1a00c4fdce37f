"""What relying services fetch: the CRL, the CA certificates and the OCSP responder.

Served over plain HTTP too and never redirected (RFC 5280 §4.2.1.13, RFC 6960 App. A).
No login, no cookies, no CSRF: these are public, signed objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils import timezone
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from mycert import custody
from mycert.models import Crl, OcspResponse
from mycert.pki import error_response, issued_by, parse_ocsp_request
from mycert.pki.ocsp_presigned import PRESIGNED_HASHES
from mycert.services.ocsp import ca_status_lookup, ocsp_response_lookup

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
        data = custody.ca_paths().root_crl.read_bytes()
    except OSError:
        return HttpResponse("No root CRL is available.", status=503, content_type="text/plain")
    return HttpResponse(data, content_type="application/pkix-crl")


@require_GET
def ca_certificate(request: HttpRequest, which: str) -> HttpResponse:
    """The issuing or root CA certificate in DER (AIA caIssuers, RFC 5280 §4.2.2.1)."""
    loaded = custody.ca_certificates_load()
    certificate = loaded.issuing if which == "issuing" else loaded.root
    return HttpResponse(
        certificate.public_bytes(serialization.Encoding.DER), content_type="application/pkix-cert"
    )


def _http_date(moment: datetime) -> str:
    return http_date(moment.timestamp())


def _stored_answer(der: bytes, *, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The stored answer for an OCSP request's CertID: DER body and HTTP headers.

    No key, no signing: the bytes were signed by a worker (``mycert.services.ocsp``).
    Never a 500: every failure is an OCSP error inside a 200 (RFC 6960 App. A.1.1).
    """
    try:
        query = parse_ocsp_request(der)
    except ValueError:
        return _ocsp_error_body(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    hash_name = query.hash_algorithm.name
    try:
        certificates = custody.ca_certificates_load()
    except custody.CustodyError:
        logger.exception("OCSP: the CA certificates cannot be read")
        return _ocsp_error_body(ocsp.OCSPResponseStatus.TRY_LATER)
    if hash_name not in PRESIGNED_HASHES:
        # A CertID form no answer is signed for: not authoritative (RFC 5019 §2.2.3).
        return _ocsp_error_body(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    if not issued_by(query, certificates.issuing):
        if issued_by(query, certificates.root):
            # The issuing CA's own status (whole-chain checking): the root's answer.
            return _ca_status_answer(query.serial_number, hash_name, now=now)
        # Not our CA: not authoritative (RFC 6960 §2.3, RFC 5019 §2.2.3 "unauthorized").
        return _ocsp_error_body(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    try:
        stored = ocsp_response_lookup(
            serial_number=query.serial_number, hash_name=hash_name, now=now
        )
    except DatabaseError:
        logger.exception("OCSP: the database cannot be read")
        return _ocsp_error_body(ocsp.OCSPResponseStatus.TRY_LATER)
    if stored is None:
        # A serial MyCert never issued: RFC 5019 §2.2.3 answers "unauthorized", and a
        # pre-signing responder has nothing signed to say "unknown" with.
        return _ocsp_error_body(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    if (
        stored.der is None
        or stored.next_update is None
        or stored.next_update <= now
        or (stored.revoked and stored.status != OcspResponse.Status.REVOKED)
    ):
        if stored.expired:
            # Past its end and no fresh answer: MyCert no longer speaks for it.
            return _ocsp_error_body(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        # Revoked and the revoked answer not stored yet (a worker signs it within
        # moments): never the stored "good". Or no fresh answer at all (workers down).
        return _ocsp_error_body(ocsp.OCSPResponseStatus.TRY_LATER)
    assert stored.this_update is not None  # noqa: S101 - stored with next_update
    max_age = max(int((stored.next_update - now).total_seconds()), 0)
    etag, last_modified, expires = _answer_headers(
        stored.der, stored.this_update, stored.next_update
    )
    headers = {
        # RFC 5019 §6.2: cacheable until nextUpdate, identified by a hash of the bytes.
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "ETag": etag,
        "Last-Modified": last_modified,
        "Expires": expires,
    }
    return stored.der, headers


# The headers that depend only on a stored answer, formatted once per answer (its DER,
# which carries thisUpdate and nextUpdate, is the key): ~10 µs of the fast path's
# Python time (issue 21 §3). Bounded: more keys than answers in use empty it.
_ANSWER_HEADERS: dict[bytes, tuple[str, str, str]] = {}
_ANSWER_HEADERS_MAX = 8192


def _answer_headers(
    der: bytes, this_update: datetime, next_update: datetime
) -> tuple[str, str, str]:
    """ETag, Last-Modified and Expires of a stored answer."""
    headers = _ANSWER_HEADERS.get(der)
    if headers is None:
        if len(_ANSWER_HEADERS) >= _ANSWER_HEADERS_MAX:
            _ANSWER_HEADERS.clear()
        headers = (
            f'"{hashlib.blake2b(der, digest_size=16).hexdigest()}"',
            _http_date(this_update),
            _http_date(next_update),
        )
        _ANSWER_HEADERS[der] = headers
    return headers


# How long a cache may keep the root's answer on the issuing CA. It is valid as long as
# the root CRL (a year), but an issuing CA revoked at a ceremony must reach relying
# services within the hour the operator then spends publishing (docs/deploy.md).
CA_STATUS_MAX_AGE = 3600


def _ca_status_answer(
    serial_number: int, hash_name: str, *, now: datetime
) -> tuple[bytes, dict[str, str]]:
    stored = ca_status_lookup(serial_number=serial_number, hash_name=hash_name)
    if stored is None:
        # Not an issuing CA certificate the root answered for (RFC 5019 §2.2.3).
        return _ocsp_error_body(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    if stored.next_update <= now:
        # The root's ceremony is overdue (its CRL has expired as well): /healthz says so.
        return _ocsp_error_body(ocsp.OCSPResponseStatus.TRY_LATER)
    max_age = min(int((stored.next_update - now).total_seconds()), CA_STATUS_MAX_AGE)
    return stored.der, {
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "ETag": f'"{hashlib.blake2b(stored.der, digest_size=16).hexdigest()}"',
        "Last-Modified": _http_date(stored.this_update),
    }


def _ocsp_error_body(status: ocsp.OCSPResponseStatus) -> tuple[bytes, dict[str, str]]:
    # OCSP errors travel inside a 200 response (RFC 6960 App. A.1.1 / RFC 5019 §5);
    # never cached: the next question may well get an answer.
    return _OCSP_ERRORS[status], {"Cache-Control": "no-cache, max-age=0"}


_OCSP_ERRORS: dict[ocsp.OCSPResponseStatus, bytes] = {
    status: error_response(status)
    for status in ocsp.OCSPResponseStatus
    if status is not ocsp.OCSPResponseStatus.SUCCESSFUL
}


def _decode_get_path(encoded: str) -> bytes | None:
    """The DER request of a GET path: base64, URL-encoded (RFC 6960 App. A.1)."""
    if len(encoded) > MAX_OCSP_REQUEST_BYTES:
        return None
    text = unquote(encoded)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _ocsp_reply(der: bytes | None, request: HttpRequest | None = None) -> HttpResponse:
    if der is None:
        body, headers = _ocsp_error_body(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    else:
        body, headers = _stored_answer(der, now=timezone.now())
    response: HttpResponse
    if (
        request is not None
        and "ETag" in headers
        and request.headers.get("If-None-Match") == headers["ETag"]
    ):
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(body, content_type=OCSP_RESPONSE_TYPE)
    for name, value in headers.items():
        response[name] = value
    return response


@csrf_exempt
@require_http_methods(["POST"])
def ocsp_post(request: HttpRequest) -> HttpResponse:
    """OCSP over HTTP POST (RFC 6960 App. A.1): the DER request is the body."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:  # "abc", "1e9": not a length (RFC 9110 §8.6), not a 500 either
        return _ocsp_reply(None)
    if length > MAX_OCSP_REQUEST_BYTES:
        return _ocsp_reply(None)
    return _ocsp_reply(request.body)


@require_GET
def ocsp_get(request: HttpRequest, encoded: str) -> HttpResponse:
    """OCSP over HTTP GET: base64 of the DER request, URL-encoded, in the path."""
    return _ocsp_reply(_decode_get_path(encoded), request)


# --- The same answers without Django's request cycle (gunicorn: config/wsgi.py) ---------------

_OCSP_PREFIX = "/pki/ocsp/"
_StartResponse = Callable[..., Any]


class OcspFastPath:
    """WSGI middleware answering ``/pki/ocsp/`` before Django's handler, like WhiteNoise.

    OCSP is the one address relying services hit at machine rate: the stored bytes are
    found in one query, and Django's request cycle (middleware for sessions, language,
    CSP, CSRF, authentication, OTP, messages; URL resolving) would cost several times
    that. None of it applies to a public, signed, cookie-less answer. The answers are
    exactly those of ``ocsp_post`` and ``ocsp_get`` (the same ``_stored_answer``); the
    Host header is not used, so ALLOWED_HOSTS has nothing to guard here.
    """

    def __init__(self, application: Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]):
        self.application = application

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(_OCSP_PREFIX):
            return self.application(environ, start_response)
        method = environ.get("REQUEST_METHOD", "")
        encoded = path[len(_OCSP_PREFIX) :]
        if method == "POST" and not encoded:
            der = self._body(environ)
        elif method == "GET" and encoded:
            der = _decode_get_path(encoded)
        else:
            return self.application(environ, start_response)  # Django's 405 and 404
        try:
            if der is None:
                body, headers = _ocsp_error_body(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
            else:
                body, headers = _stored_answer(der, now=timezone.now())
        finally:
            # What Django's request_finished signal does: drop a connection past
            # CONN_MAX_AGE or left unusable by an error.
            close_old_connections()
        status = "200 OK"
        if "ETag" in headers and environ.get("HTTP_IF_NONE_MATCH") == headers["ETag"]:
            status, body = "304 Not Modified", b""
        response_headers = [
            ("Content-Type", OCSP_RESPONSE_TYPE),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
            *headers.items(),
        ]
        start_response(status, response_headers)
        return [body]

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes | None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not 0 < length <= MAX_OCSP_REQUEST_BYTES:
            return None
        body: bytes = environ["wsgi.input"].read(length)
        return body
