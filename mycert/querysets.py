"""QuerySet vocabulary (after django-ca): ``.valid()``, ``.revoked()``, ``.for_crl()``…"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from django.db import models
from django.db.models import OuterRef, Q, Subquery

if TYPE_CHECKING:
    from mycert.models import Certificate, CertificateRequest, Delivery  # noqa: F401


class CertificateRequestQuerySet(models.QuerySet["CertificateRequest"]):
    def in_progress(self) -> CertificateRequestQuerySet:
        return self.filter(status__in=self.model.IN_PROGRESS)

    def overdue(self, now: datetime) -> CertificateRequestQuerySet:
        """Requests still in progress past their due date (5 business days)."""
        return self.in_progress().filter(due_at__lt=now)


class CertificateQuerySet(models.QuerySet["Certificate"]):
    def revoked(self) -> CertificateQuerySet:
        return self.filter(revoked_at__isnull=False)

    def not_revoked(self) -> CertificateQuerySet:
        return self.filter(revoked_at__isnull=True)

    def valid(self, now: datetime) -> CertificateQuerySet:
        return self.not_revoked().filter(not_before__lte=now, not_after__gt=now)

    def expired(self, now: datetime) -> CertificateQuerySet:
        return self.not_revoked().filter(not_after__lte=now)

    def expiring_within(self, now: datetime, days: int) -> CertificateQuerySet:
        return self.valid(now).filter(not_after__lte=now + timedelta(days=days))

    def with_replacement_delivered_at(self) -> CertificateQuerySet:
        """Annotate ``replacement_delivered_at``: when the first newer certificate of the
        same professional that is not revoked was delivered (its request « sent »), or
        None. ``certificates_supersede`` revokes this one MYCERT_SUPERSEDE_AFTER_DAYS
        after that moment; :func:`mycert.selectors.replaced_on` says the date."""
        # The request model through the relation: models import this module, not the reverse.
        request_model = cast(
            "type[CertificateRequest]", self.model._meta.get_field("request").related_model
        )
        newer = (
            self.model.objects.filter(
                professional_id=OuterRef("professional_id"),
                issued_at__gt=OuterRef("issued_at"),
                revoked_at__isnull=True,
                request__status=request_model.Status.SENT,
                request__completed_at__isnull=False,
            )
            .order_by("request__completed_at")
            .values("request__completed_at")[:1]
        )
        return self.annotate(replacement_delivered_at=Subquery(newer))

    def for_crl(self, now: datetime) -> CertificateQuerySet:
        """Revoked certificates a CRL must list: revoked and not yet expired (RFC 5280 §3.3)."""
        return self.revoked().filter(not_after__gt=now)


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def unsent(self) -> DeliveryQuerySet:
        Status = self.model.Status
        return self.filter(status__in=[Status.PENDING, Status.RETRYING])

    def professional_issuance_not_sent(self, certificate_ids: Iterable[int]) -> DeliveryQuerySet:
        """The professional's own keystore and password e-mails not yet accepted by the
        relay: only these decide that a request is sent, never a vendor copy."""
        Delivery = self.model
        return self.filter(
            certificate_id__in=list(certificate_ids),
            recipient=Delivery.Recipient.PROFESSIONAL,
            content__in=Delivery.ISSUANCE,
        ).exclude(status=Delivery.Status.SENT)

    def due(self, now: datetime) -> DeliveryQuerySet:
        """Unsent deliveries whose turn has come (no back-off pending)."""
        return self.unsent().filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
