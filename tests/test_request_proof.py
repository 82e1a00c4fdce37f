"""Issue 20 §1: every certificate traces to a LuxTrust login the worker verified itself.

A database writer (a compromised web host, anyone with the database's credentials) can
insert a request row or change a professional's e-mail. The worker issues only for a
request carrying a signed ID token of that professional's LuxTrust login, verified
against the keys it reads from the provider; the certificate and the mail follow the
token, not the rows. The provider here is real HTTP on loopback
(tests/support/id_tokens.py), the tasks run eagerly, the alerts are real rows.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from django.utils import timezone
from joserfc.jwk import RSAKey

from mycert import request_proof
from mycert.models import AuditEvent, Certificate, CertificateRequest, Delivery, OperatorAlert
from mycert.request_proof import (
    ProofUnavailable,
    RequestUnproven,
    token_digest,
    verify_request_proof,
)
from mycert.services.issuance import request_issue
from mycert.tasks.issuance import TEMPORARY_ERRORS, issue_certificate
from tests.factories import CertificateRequestFactory, ProfessionalFactory
from tests.support.id_tokens import SigningProvider, claims_for, id_token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_mail_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the issuance task to issuing: the e-mails stay in the outbox, unsent."""
    monkeypatch.setattr("mycert.tasks.delivery.send_deliveries_now", lambda *_args, **_kwargs: None)
    monkeypatch.setattr("mycert.tasks.alerts.send_operator_alert.delay", lambda *a: None)


def _run_issuance(request_id: int) -> CertificateRequest:
    issue_certificate.apply(args=(request_id,))
    return CertificateRequest.objects.get(pk=request_id)


def _assert_refused_unproven(request_id: int, check: str) -> None:
    """Failed « unproven », no key made, nothing to mail, the security officer alerted."""
    request = CertificateRequest.objects.get(pk=request_id)
    assert request.status == CertificateRequest.Status.FAILED
    assert request.last_error.startswith("unproven: "), request.last_error
    assert check in request.last_error
    assert request.id_token == ""  # personal data, wiped when the request ends
    assert not Certificate.objects.filter(request_id=request_id).exists()
    assert not Delivery.objects.exists()
    alert = OperatorAlert.objects.get(kind="request_unproven")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert f"n° {request_id}" in alert.subject
    event = AuditEvent.objects.get(action="request.unproven", object_id=str(request_id))
    assert event.details["check"] == check


# --- What a database writer tries -------------------------------------------------------


def test_a_request_row_without_a_token_gets_no_certificate(ca, no_mail_sending) -> None:
    request = CertificateRequestFactory.create(id_token="")

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, "missing")


def test_a_request_with_another_professionals_token_gets_no_certificate(
    ca, no_mail_sending
) -> None:
    victim = ProfessionalFactory.create()
    attacker = ProfessionalFactory.create()
    request = CertificateRequestFactory.create(professional=victim, id_token=id_token_for(attacker))

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, "another professional's login")


def test_a_token_signed_by_another_key_gets_no_certificate(ca, no_mail_sending) -> None:
    professional = ProfessionalFactory.create()
    forger = RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)
    request = CertificateRequestFactory.create(
        professional=professional, id_token=id_token_for(professional, key=forger)
    )

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, "signature")


def test_a_replayed_token_gets_no_second_certificate(ca, no_mail_sending) -> None:
    """One login, one certificate: the token of a delivered request cannot serve again."""
    first = CertificateRequestFactory.create()
    token = first.id_token
    assert _run_issuance(first.pk).status == CertificateRequest.Status.SENDING
    CertificateRequest.objects.filter(pk=first.pk).update(status="sent")
    again = CertificateRequestFactory.create(professional=first.professional, id_token=token)

    _run_issuance(again.pk)

    request = CertificateRequest.objects.get(pk=again.pk)
    assert request.status == CertificateRequest.Status.FAILED
    assert request.last_error == "unproven: login already used"
    assert Certificate.objects.count() == 1
    assert OperatorAlert.objects.filter(kind="request_unproven").count() == 1


def test_the_certificate_and_the_mail_follow_the_token_not_the_rows(ca) -> None:
    """Dr X's e-mail and name changed in the database: the worker ignores the rows."""
    request = CertificateRequestFactory.create()
    professional = request.professional
    verified_email, verified_family = professional.email, professional.family_name
    professional.__class__.objects.filter(pk=professional.pk).update(
        email="attacker@evil.example", family_name="Attacker"
    )

    outcome = request_issue(request_id=request.pk, now=timezone.now())

    assert outcome.certificate_id is not None
    certificate = Certificate.objects.get(pk=outcome.certificate_id)
    leaf = x509.load_pem_x509_certificate(certificate.pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [verified_email]
    surname = leaf.subject.get_attributes_for_oid(x509.NameOID.SURNAME)[0].value
    assert surname == verified_family
    professional_rows = Delivery.objects.filter(recipient=Delivery.Recipient.PROFESSIONAL)
    assert set(professional_rows.values_list("to_email", flat=True)) == {verified_email}


def test_issuance_keeps_the_digest_and_wipes_the_token(ca) -> None:
    request = CertificateRequestFactory.create()
    digest = token_digest(request.id_token)

    outcome = request_issue(request_id=request.pk, now=timezone.now())

    assert outcome.certificate_id is not None
    certificate = Certificate.objects.get(pk=outcome.certificate_id)
    assert certificate.proof_digest == digest
    request.refresh_from_db()
    assert request.id_token == ""
    event = AuditEvent.objects.get(action="certificate.issued", object_id=str(certificate.pk))
    assert event.details["proof"] == digest


# --- The token's claims -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"acr": "urn:esante:loa:password"}, "weak_acr"),
        ({"aud": "another-client"}, "aud"),
        ({"iss": "https://another-provider.example"}, "iss"),
        ({"email_verified": False}, "email"),
        ({"email": None}, "email"),
        ({"given_name": None}, "given_name"),
        ({"professional_id": None}, "not_a_professional"),
        ({"sub": None}, "sub"),
        ({"iat": None}, "iat"),
    ],
)
def test_a_token_with_a_wrong_claim_gets_no_certificate(
    ca, no_mail_sending, overrides: dict[str, Any], check: str
) -> None:
    professional = ProfessionalFactory.create()
    request = CertificateRequestFactory.create(
        professional=professional, id_token=id_token_for(professional, **overrides)
    )

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, check)


def test_an_unsigned_token_gets_no_certificate(ca, no_mail_sending) -> None:
    """``alg: none`` (and anything but the provider's asymmetric algorithms) is refused."""
    professional = ProfessionalFactory.create()
    signed = id_token_for(professional)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    unsigned = f"{header}.{signed.split('.')[1]}."
    request = CertificateRequestFactory.create(professional=professional, id_token=unsigned)

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, "signature")


def test_a_token_older_than_the_maximum_age_gets_no_certificate(
    ca, no_mail_sending, settings
) -> None:
    settings.MYCERT_REQUEST_PROOF_MAX_AGE = 24 * 3600
    professional = ProfessionalFactory.create()
    issued = int(time.time()) - 24 * 3600 - 120
    request = CertificateRequestFactory.create(
        professional=professional,
        id_token=id_token_for(professional, iat=issued, exp=issued + 300),
    )

    _run_issuance(request.pk)

    _assert_refused_unproven(request.pk, "iat too old")


def test_a_worker_outage_of_hours_does_not_fail_requests(ca, settings) -> None:
    """A token 23 h old, long expired (``exp``), is still a proof within the maximum age."""
    settings.MYCERT_REQUEST_PROOF_MAX_AGE = 24 * 3600
    professional = ProfessionalFactory.create()
    issued = int(time.time()) - 23 * 3600
    request = CertificateRequestFactory.create(
        professional=professional,
        id_token=id_token_for(professional, iat=issued, exp=issued + 300),
    )

    outcome = request_issue(request_id=request.pk, now=timezone.now())

    assert outcome.certificate_id is not None


def test_the_age_is_counted_when_the_worker_checks(ca) -> None:
    request = CertificateRequestFactory.create()
    later = timezone.now() + timedelta(hours=25)

    with pytest.raises(RequestUnproven, match="iat too old"):
        request_issue(request_id=request.pk, now=later)
    assert not Certificate.objects.exists()


# --- The provider's keys ----------------------------------------------------------------


def test_the_worker_reads_the_keys_once_then_from_its_cache(
    request_proof_issuer: SigningProvider,
) -> None:
    professional = ProfessionalFactory.build(oidc_subject="sub-cache", professional_id="LU-1")
    request_proof.reset_provider_keys()
    before = request_proof_issuer.requests_served

    for _ in range(5):
        verify_request_proof(id_token_for(professional), now=time.time())

    # Discovery and JWKS: two requests for five verifications.
    assert request_proof_issuer.requests_served - before == 2


def test_a_forged_signature_refetches_the_keys_at_most_once_a_minute(
    request_proof_issuer: SigningProvider,
) -> None:
    professional = ProfessionalFactory.build(oidc_subject="sub-forged", professional_id="LU-2")
    forger = RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)
    verify_request_proof(id_token_for(professional), now=time.time())
    before = request_proof_issuer.requests_served

    for _ in range(3):
        with pytest.raises(RequestUnproven, match="signature"):
            verify_request_proof(id_token_for(professional, key=forger), now=time.time())

    assert request_proof_issuer.requests_served - before <= 2


def test_a_token_without_kid_is_checked_against_each_of_the_providers_keys(
    request_proof_issuer: SigningProvider,
) -> None:
    """Mid-rotation the JWKS holds two keys; a token without ``kid`` still verifies."""
    professional = ProfessionalFactory.build(oidc_subject="sub-nokid", professional_id="LU-4")
    next_key = RSAKey.generate_key(2048, parameters={"kid": "test-2"}, private=True)
    request_proof_issuer.extra_keys = [next_key]
    request_proof.reset_provider_keys()
    try:
        for key in (request_proof_issuer.key, next_key):
            token = request_proof_issuer.sign(claims_for(professional), key=key, kid=False)
            assert verify_request_proof(token, now=time.time()).sub == "sub-nokid"
        forger = RSAKey.generate_key(2048, private=True)
        forged = request_proof_issuer.sign(claims_for(professional), key=forger, kid=False)
        with pytest.raises(RequestUnproven, match="signature"):
            verify_request_proof(forged, now=time.time())
    finally:
        request_proof_issuer.extra_keys = []
        request_proof.reset_provider_keys()


def test_keys_are_never_read_over_plain_http_from_a_remote_host(settings) -> None:
    """HTTPS, or http on loopback only (the demo's and the tests' provider)."""
    settings.OIDC_ISSUER = "http://portal.example.lu"
    request_proof.reset_provider_keys()
    token = "e30.e30.sig"  # never decoded: the keys are refused first

    with pytest.raises(ProofUnavailable, match="insecure"):
        verify_request_proof(token, now=time.time())


def test_an_unreachable_provider_retries_instead_of_failing(ca, settings) -> None:
    """No keys is no verdict: a temporary error the task retries; the request waits."""
    request = CertificateRequestFactory.create()
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # discard: nothing listens
    request_proof.reset_provider_keys()

    with pytest.raises(ProofUnavailable) as raised:
        request_issue(request_id=request.pk, now=timezone.now())

    assert isinstance(raised.value, TEMPORARY_ERRORS)
    request.refresh_from_db()
    assert request.is_in_progress
    assert request.id_token
    assert not Certificate.objects.exists()
    assert not OperatorAlert.objects.exists()


def test_claims_for_matches_what_the_login_keeps() -> None:
    """The test provider's tokens carry what the portal's do (names, verified e-mail)."""
    professional = ProfessionalFactory.build(oidc_subject="sub-x", professional_id="LU-3")
    claims = claims_for(professional)
    assert claims["email_verified"] is True
    assert {"given_name", "family_name", "email", "acr", "iat"} <= set(claims)
