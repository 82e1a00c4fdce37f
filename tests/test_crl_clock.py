"""The CRL's clock: a revocation stamped by a web host whose clock runs ahead still gets in.

A real CA, real rows; the "web host ahead" is a revocation time a few seconds in the
worker's future, as a web host with a fast clock writes it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from django.utils import timezone

from mycert.models import Certificate, Crl
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from mycert.tasks.publication import publish_crl
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db


def _revoked(*, ahead: timedelta) -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    certificate = Certificate.objects.get(pk=outcome.certificate_id)
    Certificate.objects.filter(pk=certificate.pk).update(
        revoked_at=timezone.now() + ahead,
        revocation_reason=Certificate.RevocationReason.KEY_COMPROMISE,
        revoked_via=Certificate.RevokedVia.HELPDESK,
    )
    certificate.refresh_from_db()
    return certificate


def test_a_revocation_stamped_ahead_of_the_workers_clock_is_listed(ca: Any) -> None:
    certificate = _revoked(ahead=timedelta(seconds=30))

    record = crl_publish(now=timezone.now())

    crl = x509.load_der_x509_crl(bytes(record.der))
    assert certificate.revoked_at is not None
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    assert crl.last_update_utc >= certificate.revoked_at.replace(microsecond=0)
    assert record.this_update >= certificate.revoked_at


def test_this_update_never_goes_back_from_one_crl_to_the_next(ca: Any) -> None:
    first = crl_publish(now=timezone.now() + timedelta(minutes=5))

    second = crl_publish(now=timezone.now())

    assert second.number == first.number + 1
    assert second.this_update >= first.this_update


def test_the_task_reads_the_clock_itself_and_retries_a_failure(ca: Any) -> None:
    _revoked(ahead=timedelta(seconds=30))

    number = publish_crl.apply().get()

    assert Crl.objects.latest().number == number
    assert getattr(publish_crl, "autoretry_for", ()) == (Exception,)
    assert (publish_crl.max_retries or 0) > 0
