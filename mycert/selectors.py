"""Reads for the professional's pages: only their own rows, ever."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils.functional import Promise
from django.utils.translation import pgettext_lazy

from mycert.models import Certificate, CertificateRequest, Professional

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

    @property
    def state_label(self) -> Promise:
        return STATE_LABELS[self.state]

    @property
    def in_progress(self) -> bool:
        return self.state in ("submitted", "issuing", "sending")

    @property
    def can_be_revoked(self) -> bool:
        return self.certificate_id is not None and self.state in ("sending", "sent")


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
            )
        )
    return rows
