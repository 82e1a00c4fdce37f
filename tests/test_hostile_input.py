"""Hostile input through the web, as an attacker would send it: never a 500, never a trace.

- CSRF missing on the request form and on logout: 403, nothing recorded.
- Another professional's ids (the request-sent page, certificate addresses): 404.
- Forged vendor ids (negative, huge, non-numeric, inactive, control characters): 400
  with the form's message, nothing recorded.
- Oversized bodies (past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` to the form, past 8 KiB to
  OCSP): 4xx, OCSP ``malformedRequest``.
- OCSP, property-based: 10,000 random and mutated requests over POST and GET, always
  HTTP 200 with an OCSP response that parses.

Tampered login answers (state, nonce, audience, issuer, signature, expiry, alg none)
are covered by ``tests/test_oidc_login.py``.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from functools import cache
from urllib.parse import quote, unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycert import custody
from mycert.models import Certificate, CertificateRequest, Delivery
from mycert.services.issuance import request_issue
from tests.factories import CertificateRequestFactory, ProfessionalFactory, VendorFactory

pytestmark = pytest.mark.django_db

OCSP_URL = "/pki/ocsp/"
OCSP_REQUEST = "application/ocsp-request"
NOT_IN_LIST = "pas dans la liste"


@pytest.fixture(autouse=True)
def _no_rate_limit(settings) -> None:
    """Hundreds of hostile posts from one user: the rate limiter is not what is tested."""
    settings.MYCERT_RATELIMIT_ENABLED = False


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the ids sent to the issuance task instead of running it."""
    from mycert.tasks.issuance import issue_certificate

    sent: list[int] = []
    monkeypatch.setattr(issue_certificate, "delay", lambda request_id: sent.append(request_id))
    return sent


@pytest.fixture
def professional_client(client: Client) -> Client:
    professional = ProfessionalFactory.create()
    client.force_login(professional.user)
    return client


def _nothing_recorded(queued: list[int]) -> None:
    assert not CertificateRequest.objects.exists()
    assert not Delivery.objects.exists()
    assert mail.outbox == []
    assert queued == []


# --- CSRF --------------------------------------------------------------------------------


def test_request_form_without_csrf_token_is_forbidden(queued: list[int]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ProfessionalFactory.create().user)
    assert client.get(reverse("request-certificate")).status_code == 200  # the form itself
    response = client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 403
    _nothing_recorded(queued)


def test_request_form_with_a_forged_csrf_token_is_forbidden(queued: list[int]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ProfessionalFactory.create().user)
    client.get(reverse("request-certificate"))
    response = client.post(
        reverse("request-certificate"),
        {"vendor": "none", "terms_accepted": "on", "csrfmiddlewaretoken": "A" * 64},
    )
    assert response.status_code == 403
    _nothing_recorded(queued)


def test_logout_without_csrf_token_is_forbidden_and_keeps_the_session() -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ProfessionalFactory.create().user)
    assert client.post(reverse("oidc-logout")).status_code == 403
    assert client.get(reverse("my-certificates")).status_code == 200, "still logged in"


# --- Someone else's ids ----------------------------------------------------------------


def test_another_professionals_request_and_certificate_are_not_found(
    professional_client: Client, ca
) -> None:
    other = CertificateRequestFactory.create()
    issued = request_issue(request_id=other.pk, now=timezone.now()).certificate_id
    assert issued is not None
    certificate = Certificate.objects.get(pk=issued)

    for request_id in (other.pk, other.pk + 1000, 0):
        response = professional_client.get(reverse("request-sent", args=[request_id]))
        assert response.status_code == 404
        assert str(other.professional.family_name) not in response.content.decode()
    for path in (
        f"/request/sent/-{other.pk}/",
        f"/request/sent/{other.pk}abc/",
        f"/certificates/{certificate.pk}/",
        f"/certificates/{certificate.serial}/",
        f"/request/sent/{'9' * 40}/",
    ):
        assert professional_client.get(path).status_code == 404, path
    page = professional_client.get(reverse("my-certificates")).content.decode()
    status = professional_client.get(reverse("my-certificates-status")).json()
    assert certificate.serial not in page
    assert status["requests"] == []
    # The helpdesk's certificate page is not a professional's: the admin asks for a login.
    admin = professional_client.get(f"/admin/mycert/certificate/{certificate.pk}/change/")
    assert admin.status_code == 302
    assert "/admin/login/" in admin["Location"]


# --- Forged vendor ids -----------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    ["-1", "0", "99999999999999999999999999", "abc", "1.0", " 1", "0x1", "1 OR 1=1", "ñ", "\x00"],
)
def test_forged_vendor_id_is_refused_with_a_clear_message(
    professional_client: Client, queued: list[int], forged: str
) -> None:
    VendorFactory.create()
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": forged, "terms_accepted": "on"}
    )
    assert response.status_code == 400
    assert NOT_IN_LIST in response.content.decode()
    _nothing_recorded(queued)


def test_inactive_vendor_id_is_refused_with_a_clear_message(
    professional_client: Client, queued: list[int]
) -> None:
    inactive = VendorFactory.create(is_active=False)
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": str(inactive.pk), "terms_accepted": "on"}
    )
    assert response.status_code == 400
    assert NOT_IN_LIST in response.content.decode()
    _nothing_recorded(queued)


def test_vendor_given_twice_is_refused_or_takes_one(
    professional_client: Client, queued: list[int]
) -> None:
    """Django reads the last of repeated fields; a forged second one is still checked."""
    vendor = VendorFactory.create()
    response = professional_client.post(
        reverse("request-certificate"),
        {"vendor": [str(vendor.pk), "-5"], "terms_accepted": "on"},
    )
    assert response.status_code == 400
    _nothing_recorded(queued)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(forged=st.text(max_size=40).filter(lambda s: s.strip() not in ("none", "")))
def test_any_vendor_text_is_a_clear_400(
    professional_client: Client, queued: list[int], forged: str
) -> None:
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": forged, "terms_accepted": "on"}
    )
    assert response.status_code == 400
    _nothing_recorded(queued)


# --- Oversized bodies ------------------------------------------------------------------


def test_oversized_form_body_is_a_400(
    professional_client: Client, queued: list[int], settings
) -> None:
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    urlencoded = professional_client.post(
        reverse("request-certificate"),
        f"vendor=none&terms_accepted=on&pad={padding}",
        content_type="application/x-www-form-urlencoded",
    )
    multipart = professional_client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on", "pad": padding}
    )
    assert urlencoded.status_code == 400
    assert multipart.status_code == 400
    _nothing_recorded(queued)


def _ocsp_status(response) -> ocsp.OCSPResponseStatus:
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content).response_status


def test_oversized_ocsp_requests_are_malformed(client: Client, ca) -> None:
    big = b"\x30\x82\x20\x01" + b"\x00" * (8 * 1024 + 1)
    post = client.post(OCSP_URL, big, content_type=OCSP_REQUEST)
    get = client.get(OCSP_URL + quote(base64.b64encode(big).decode(), safe=""))
    very_big = client.post(OCSP_URL, b"\x00" * (1024 * 1024), content_type=OCSP_REQUEST)
    for response in (post, get, very_big):
        assert _ocsp_status(response) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("length", ["abc", "-1", "1e9", "", "99999999999999999999"])
def test_ocsp_with_a_lying_content_length_is_not_a_500(client: Client, ca, length: str) -> None:
    response = client.post(
        OCSP_URL, b"\x30\x03\x02\x01\x01", content_type=OCSP_REQUEST, CONTENT_LENGTH=length
    )
    assert _ocsp_status(response) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# --- OCSP, property-based: 10,000 requests ------------------------------------------------


@cache
def _valid_requests() -> tuple[bytes, ...]:
    """Well-formed requests for a certificate of our issuing CA (SHA-1 and SHA-256, nonce)."""
    issuing = custody.ca_load().issuing
    now = timezone.now()
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fuzz Target")]))
        .issuer_name(issuing.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(issuing.private_key, hashes.SHA256())
    )
    built = []
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303 - RFC 6960 CertIDs use SHA-1
        builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing.certificate, algorithm)
        built.append(builder.build().public_bytes(Encoding.DER))
        with_nonce = builder.add_extension(x509.OCSPNonce(b"\x01" * 16), critical=False)
        built.append(with_nonce.build().public_bytes(Encoding.DER))
    return tuple(built)


def _mutate(valid: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply byte edits: 0 overwrite, 1 insert, 2 delete, 3 truncate, 4 duplicate a slice."""
    data = bytearray(valid)
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == 0:
            data[at : at + len(chunk)] = chunk
        elif kind == 1:
            data[at:at] = chunk
        elif kind == 2:
            del data[at : at + max(len(chunk), 1)]
        elif kind == 3:
            del data[at:]
        else:
            data[at:at] = data[at : at + 1 + len(chunk) * 4]
    return bytes(data)


_EDITS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 4096), st.binary(min_size=1, max_size=6)),
    min_size=1,
    max_size=4,
)
_MUTATED = st.tuples(st.integers(0, 3), _EDITS).map(
    lambda chosen: _mutate(_valid_requests()[chosen[0]], chosen[1])
)
_RANDOM = st.binary(max_size=600)
_FUZZ = settings(
    max_examples=2500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ANSWERS = {
    ocsp.OCSPResponseStatus.SUCCESSFUL,
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    ocsp.OCSPResponseStatus.UNAUTHORIZED,
}


def _check_ocsp(response) -> None:
    if response.request["PATH_INFO"] == OCSP_URL and response.request["REQUEST_METHOD"] == "GET":
        # An empty GET request is the POST-only address itself: 405, a plain HTTP refusal.
        assert response.status_code == 405
        return
    status = _ocsp_status(response)
    assert status in _ANSWERS
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        parsed = ocsp.load_der_ocsp_response(response.content)
        assert parsed.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def _get_path(der: bytes) -> str:
    return OCSP_URL + quote(base64.b64encode(der).decode(), safe="")


@pytest.mark.slow
@_FUZZ
@given(der=_RANDOM)
def test_ocsp_post_random_bytes(client: Client, ca, der: bytes) -> None:
    _check_ocsp(client.post(OCSP_URL, der, content_type=OCSP_REQUEST))


@pytest.mark.slow
@_FUZZ
@given(der=_MUTATED)
def test_ocsp_post_mutated_requests(client: Client, ca, der: bytes) -> None:
    _check_ocsp(client.post(OCSP_URL, der, content_type=OCSP_REQUEST))


@pytest.mark.slow
@_FUZZ
@given(der=_MUTATED)
def test_ocsp_get_mutated_requests(client: Client, ca, der: bytes) -> None:
    _check_ocsp(client.get(_get_path(der)))


@pytest.mark.slow
@_FUZZ
@given(
    path=st.one_of(
        _RANDOM.map(_get_path),
        st.text(max_size=200).map(lambda t: OCSP_URL + quote(t, safe="/+=%")),
    )
)
def test_ocsp_get_random_paths(client: Client, ca, path: str) -> None:
    response = client.get(path)
    if response.status_code == 404:
        # Only a path that is no OCSP address may miss the responder: ".." segments that
        # leave the prefix, or a line break (Django's <path:> stops at one). Never an error.
        segments = unquote(path).split("/")
        assert ".." in segments or "\n" in unquote(path), path
        return
    _check_ocsp(response)


def test_valid_ocsp_requests_are_answered_and_leave_nothing(client: Client, ca) -> None:
    """The fuzz templates themselves are well-formed requests: answered, no side effect.

    Their serial was never issued by MyCert: ``unauthorized`` (RFC 5019 §2.2.3), not
    ``malformedRequest``."""
    for der in _valid_requests():
        post = client.post(OCSP_URL, der, content_type=OCSP_REQUEST)
        get = client.get(_get_path(der))
        for response in (post, get):
            assert _ocsp_status(response) is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert not CertificateRequest.objects.exists()
    assert not Delivery.objects.exists()
    assert mail.outbox == []
