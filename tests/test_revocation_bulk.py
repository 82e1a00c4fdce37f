"""Several certificates revoked at once (the helpdesk's bulk action): all or none.

The transaction is the revocation service's, not the admin's (issue 25 §3): the batch
commits as one, an error on any row leaves every certificate as it was, a certificate
revoked meanwhile is only counted as skipped, and the CRL is re-signed once for the
whole batch. The CA is real (conftest); the database is the test's.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from mycert.models import AuditEvent, Certificate
from mycert.services.issuance import request_issue
from mycert.services.revocation import certificate_revoke, certificates_revoke
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db


def _issue() -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _bulk(ids: list[int]) -> Any:
    return certificates_revoke(
        certificate_ids=ids,
        reason=Certificate.RevocationReason.AFFILIATION_CHANGED,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
        comment="Left the practice, ticket 4711",
    )


def test_a_batch_is_revoked_and_the_already_revoked_are_skipped(ca: Any) -> None:
    first, second, earlier = _issue(), _issue(), _issue()
    certificate_revoke(
        certificate_id=earlier.pk,
        reason=Certificate.RevocationReason.SUPERSEDED,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )

    revoked, skipped = _bulk([first.pk, earlier.pk, second.pk])

    assert [c.pk for c in revoked] == [first.pk, second.pk]
    assert skipped == 1
    earlier.refresh_from_db()
    assert earlier.revocation_reason == Certificate.RevocationReason.SUPERSEDED  # unchanged
    for certificate in (first, second):
        certificate.refresh_from_db()
        assert certificate.revocation_reason == Certificate.RevocationReason.AFFILIATION_CHANGED
        assert AuditEvent.objects.filter(
            action="certificate.revoked", object_id=str(certificate.pk)
        ).exists()


def test_a_batch_re_signs_the_crl_once(ca: Any, django_capture_on_commit_callbacks: Any) -> None:
    certificates = [_issue() for _ in range(3)]

    with django_capture_on_commit_callbacks() as callbacks:
        revoked, _ = _bulk([c.pk for c in certificates])

    assert len(revoked) == 3
    # One CRL for the batch, not one per certificate (RFC 5280 §3.3).
    publishes = [c for c in callbacks if getattr(c, "__name__", "") == "_publish_crl"]
    assert len(publishes) == 1


def test_an_error_on_one_row_leaves_the_whole_batch_unrevoked(ca: Any) -> None:
    first, second = _issue(), _issue()
    missing = max(first.pk, second.pk) + 1000

    with pytest.raises(Certificate.DoesNotExist):
        _bulk([first.pk, missing, second.pk])

    assert not Certificate.objects.filter(pk__in=[first.pk, second.pk]).revoked().exists()
    assert not AuditEvent.objects.filter(action="certificate.revoked").exists()
