"""Reads for the professional's pages: only their own rows, ever, and the vendors offered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils.functional import Promise
from django.utils.translation import pgettext_lazy

from mycert.models import Certificate, CertificateRequest, Delivery, Professional, Vendor
from mycert.querysets import DeliveryQuerySet

# "request state" context: French agrees these with « la demande » (envoyée, révoquée…).
STATE_LABELS: dict[str, Promise] = {
    "submitted": pgettext_lazy("request state", "submitted"),
    "issuing": pgettext_lazy("request state", "issuing"),
    "sending": pgettext_lazy("request state", "sending"),
    "sent": pgettext_lazy("request state", "sent"),
    "failed": pgettext_lazy("request state", "failed — the helpdesk is informed"),
    "revoked": pgettext_lazy("request state", "revoked"),
    "expired": pgettext_lazy("request state", "expired"),
}


@dataclass(frozen=True)
class Overview:
    request_in_progress: CertificateRequest | None
    valid_certificate: Certificate | None


@dataclass(frozen=True)
class RequestRow:
    request_id: int
    submitted_at: datetime
    vendor_name: str
    state: str
    certificate_id: int | None
    serial: str
    not_before: datetime | None
    not_after: datetime | None
    revoked_at: datetime | None
    revocation_reason: str
    #: A valid certificate whose replacement has been delivered: the day it will be
    #: revoked as superseded (the form, the password e-mail and the admin say the same).
    replaced_on: datetime | None = None
    #: The professional's keystore e-mail has left: until then there is nothing to revoke
    #: that they hold, and revoking would only race the outbox.
    keystore_sent: bool = False

    @property
    def state_label(self) -> Promise:
        return STATE_LABELS[self.state]

    @property
    def in_progress(self) -> bool:
        return self.state in CertificateRequest.IN_PROGRESS

    @property
    def can_be_revoked(self) -> bool:
        return (
            self.certificate_id is not None
            and self.state in ("sending", "sent")
            and self.keystore_sent
        )

    @property
    def request_again(self) -> bool:
        """The request ended without a certificate to use: the page says to ask again."""
        return self.state == "failed"


def professional_overview(professional: Professional, *, now: datetime) -> Overview:
    """The request in progress (if any) and the newest valid certificate (if any)."""
    return Overview(
        request_in_progress=CertificateRequest.objects.filter(professional=professional)
        .in_progress()
        .first(),
        valid_certificate=Certificate.objects.filter(professional=professional)
        .valid(now)
        .order_by("-issued_at")
        .first(),
    )


def landing_page(professional: Professional, *, now: datetime) -> str:
    """Where a login without a ``next`` ends (a URL name): the form for a first
    certificate, « My certificates » for a professional who holds a valid one or is
    waiting for one (the form would only say a request is in progress)."""
    overview = professional_overview(professional, now=now)
    if overview.valid_certificate is not None or overview.request_in_progress is not None:
        return "my-certificates"
    return "request-certificate"


def replaced_on(certificate: Certificate, *, now: datetime) -> datetime | None:
    """When ``certificate``, still valid, will be revoked as superseded: its replacement's
    delivery plus MYCERT_SUPERSEDE_AFTER_DAYS (``certificates_supersede``, run by beat).

    ``certificate`` comes from ``.with_replacement_delivered_at()``.
    """
    return _replaced_on(certificate, getattr(certificate, "replacement_delivered_at", None), now)


def _replaced_on(
    certificate: Certificate | None, delivered: datetime | None, now: datetime
) -> datetime | None:
    if certificate is None or delivered is None:
        return None
    if certificate.revoked_at is not None or certificate.not_after <= now:
        return None
    return delivered + timedelta(days=settings.MYCERT_SUPERSEDE_AFTER_DAYS)


def keystore_delivered(certificate: Certificate) -> bool:
    """Whether the professional's keystore e-mail of ``certificate`` has left."""
    return _keystores_sent().filter(certificate=certificate).exists()


def _keystores_sent() -> DeliveryQuerySet:
    return Delivery.objects.filter(
        recipient=Delivery.Recipient.PROFESSIONAL,
        content=Delivery.Content.KEYSTORE,
        status=Delivery.Status.SENT,
    )


def _state(request: CertificateRequest, certificate: Certificate | None, now: datetime) -> str:
    if certificate is not None:
        if certificate.revoked_at is not None:
            return "revoked"
        if certificate.not_after <= now:
            return "expired"
    return str(request.status)


def request_progress(professional: Professional, *, now: datetime) -> list[RequestRow]:
    """The professional's requests, newest first, each with its certificate's state."""
    requests = (
        CertificateRequest.objects.filter(professional=professional)
        .select_related("vendor", "certificate")
        .order_by("-submitted_at", "-pk")
    )
    replacements: dict[int, datetime | None] = {
        certificate.pk: getattr(certificate, "replacement_delivered_at", None)
        for certificate in Certificate.objects.filter(professional=professional)
        .with_replacement_delivered_at()
        .only("pk")
    }
    keystores_sent = set(
        _keystores_sent()
        .filter(certificate__professional=professional)
        .values_list("certificate_id", flat=True)
    )
    rows = []
    for request in requests:
        certificate = getattr(request, "certificate", None)
        rows.append(
            RequestRow(
                request_id=request.pk,
                submitted_at=request.submitted_at,
                vendor_name=request.vendor.name if request.vendor else "",
                state=_state(request, certificate, now),
                certificate_id=certificate.pk if certificate else None,
                serial=certificate.serial if certificate else "",
                not_before=certificate.not_before if certificate else None,
                not_after=certificate.not_after if certificate else None,
                revoked_at=certificate.revoked_at if certificate else None,
                revocation_reason=certificate.get_revocation_reason_display()
                if certificate
                else "",
                keystore_sent=certificate is not None and certificate.pk in keystores_sent,
                replaced_on=_replaced_on(
                    certificate, replacements.get(certificate.pk) if certificate else None, now
                ),
            )
        )
    return rows


def vendors_offered(*, now: datetime) -> QuerySet[Vendor]:
    """Vendors a professional may choose on the form (docs/architecture.md « The request's life »).

    With ``MYCERT_VENDOR_COPY_REQUIRES_PGP`` (the default), only vendors whose copies
    can be encrypted: a copy in clear would put the keystore and its password in the
    same mailbox, which undoes the two-e-mail split.
    """
    vendors = Vendor.objects.filter(is_active=True)
    if settings.MYCERT_VENDOR_COPY_REQUIRES_PGP:
        vendors = vendors.exclude(pgp_fingerprint="").filter(
            Q(pgp_expires_at__isnull=True) | Q(pgp_expires_at__gt=now)
        )
    return vendors.order_by("name")
