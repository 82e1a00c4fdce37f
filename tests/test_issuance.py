"""Issuance: one certificate per request whatever happens, the right profile, supersede."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from django.db import connection
from django.utils import timezone

from mycert.models import AuditEvent, Certificate, CertificateRequest, Delivery
from mycert.outbox.content import password_payload_open
from mycert.pki import KeystoreEncryption
from mycert.sealing import unseal
from mycert.services.issuance import request_issue, request_mark_sent
from mycert.services.revocation import certificate_revoke, certificates_supersede
from tests.factories import CertificateRequestFactory, VendorFactory


def _keystore_and_password(certificate: Certificate) -> tuple[bytes, str]:
    rows = {
        d.content: d
        for d in Delivery.objects.filter(
            certificate=certificate, recipient=Delivery.Recipient.PROFESSIONAL
        )
    }
    keystore = unseal(bytes(rows[Delivery.Content.KEYSTORE].sealed_payload or b""))
    payload = unseal(bytes(rows[Delivery.Content.PASSWORD].sealed_payload or b""))
    password, _revocation_code = password_payload_open(payload)
    return keystore, password


def _issued(request_id: int) -> int:
    """Issue the request's certificate; return its id."""
    certificate_id = request_issue(request_id=request_id, now=timezone.now()).certificate_id
    assert certificate_id is not None
    return certificate_id


@pytest.mark.django_db
def test_issue_makes_certificate_keystore_and_outbox(ca) -> None:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    certificate = Certificate.objects.get(pk=outcome.certificate_id)
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENDING
    assert Delivery.objects.filter(certificate=certificate).count() == 2
    assert len(outcome.ready_delivery_ids) == 1  # the password waits for the keystore

    keystore, password = _keystore_and_password(certificate)
    key, leaf, chain = pkcs12.load_key_and_certificates(keystore, password.encode())
    assert key is not None
    assert leaf is not None
    assert format(leaf.serial_number, "x") == certificate.serial
    assert leaf.serial_number.bit_length() <= 159
    assert len(chain) == 2
    professional = request.professional
    assert (
        leaf.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
        == professional.professional_id
    )
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name) == [professional.email]
    assert AuditEvent.objects.filter(
        action="certificate.issued", object_id=str(certificate.pk)
    ).exists()


@pytest.mark.django_db
def test_issuing_twice_issues_once(ca) -> None:
    request = CertificateRequestFactory.create()
    first = request_issue(request_id=request.pk, now=timezone.now())
    second = request_issue(request_id=request.pk, now=timezone.now())
    assert second.already_done
    assert second.certificate_id == first.certificate_id
    assert second.ready_delivery_ids == ()
    assert Certificate.objects.count() == 1
    assert Delivery.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_issue_one_certificate(ca) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks across connections need PostgreSQL (SQLite serialises writers)")
    request = CertificateRequestFactory.create()
    outcomes = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(request_issue(request_id=request.pk, now=timezone.now()))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 2
    assert sorted(o.already_done for o in outcomes) == [False, True]
    assert Certificate.objects.filter(request=request).count() == 1


@pytest.mark.django_db
def test_legacy_vendor_gets_a_3des_keystore(ca) -> None:
    vendor = VendorFactory.create(legacy_keystore=True)
    request = CertificateRequestFactory.create(vendor=vendor, vendor_copy_consent=True)
    certificate_id = _issued(request.pk)
    event = AuditEvent.objects.get(action="certificate.issued", object_id=str(certificate_id))
    assert event.details["keystore_encryption"] == KeystoreEncryption.LEGACY_3DES.value
    assert Delivery.objects.filter(certificate_id=certificate_id).count() == 4


def _delivered(certificate: Certificate, *, at: datetime) -> None:
    Delivery.objects.filter(certificate=certificate).update(
        status=Delivery.Status.SENT, sealed_payload=None
    )
    assert request_mark_sent(certificate_id=certificate.pk, now=at)


@pytest.mark.django_db
def test_a_delivered_certificate_supersedes_the_previous_one_after_the_grace_period(
    ca, eager_tasks, settings
) -> None:
    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 14
    now = timezone.now()
    first_request = CertificateRequestFactory.create()
    professional = first_request.professional
    first = Certificate.objects.get(pk=_issued(first_request.pk))
    _delivered(first, at=now)
    first_request.refresh_from_db()
    assert first_request.status == CertificateRequest.Status.SENT

    second_request = CertificateRequestFactory.create(professional=professional)
    second = Certificate.objects.get(pk=_issued(second_request.pk))
    # Not yet delivered: the old certificate stays valid, whenever the beat runs.
    assert not request_mark_sent(certificate_id=second.pk, now=now)
    assert certificates_supersede(now=now + timedelta(days=30)) == []

    _delivered(second, at=now)
    # Delivered, but the vendor has 14 days to install it: the old one still works.
    assert certificates_supersede(now=now + timedelta(days=13)) == []
    first.refresh_from_db()
    assert first.revoked_at is None

    assert certificates_supersede(now=now + timedelta(days=14)) == [first.pk]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revocation_reason == Certificate.RevocationReason.SUPERSEDED
    assert first.revoked_via == Certificate.RevokedVia.SUPERSEDED
    assert second.revoked_at is None
    assert certificates_supersede(now=now + timedelta(days=15)) == []


@pytest.mark.django_db
def test_nothing_is_superseded_by_a_revoked_certificate(ca, eager_tasks, settings) -> None:
    settings.MYCERT_SUPERSEDE_AFTER_DAYS = 0
    now = timezone.now()
    first_request = CertificateRequestFactory.create()
    first = Certificate.objects.get(pk=_issued(first_request.pk))
    _delivered(first, at=now)
    second_request = CertificateRequestFactory.create(professional=first_request.professional)
    second = Certificate.objects.get(pk=_issued(second_request.pk))
    _delivered(second, at=now)
    certificate_revoke(
        certificate_id=second.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=now,
    )

    assert certificates_supersede(now=now + timedelta(days=1)) == []
    first.refresh_from_db()
    assert first.revoked_at is None, "the old keystore is the only one still working"
