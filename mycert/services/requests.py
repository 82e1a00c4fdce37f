"""The professional's request: submit it, with their consent, one at a time."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.translation import gettext

from mycert.business_days import add_business_days
from mycert.models import AuditEvent, CertificateRequest, Professional, Vendor
from mycert.request_proof import token_digest
from mycert.services.audit import audit_record


class RequestRefused(Exception):
    """The request cannot be accepted; ``code`` says why (``in_progress``, ``vendor``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def request_submit(
    *,
    professional: Professional,
    vendor: Vendor | None,
    terms_accepted: bool,
    language: str,
    now: datetime,
    id_token: str,
) -> CertificateRequest:
    """Record a request and its consent, and queue its issuance once committed.

    ``id_token`` is the signed ID token of the login that submits it (kept in the
    session): the worker issues only what such a proof allows (``mycert.request_proof``).
    """
    from mycert.tasks.issuance import issue_certificate

    if not terms_accepted:
        raise RequestRefused(
            "terms",
            gettext("Please confirm that you have read the usage information before sending."),
        )
    if not id_token:
        # A session opened before proofs existed, or not through the portal: the worker
        # would refuse the request, so it is refused here, with what to do.
        raise RequestRefused(
            "proof",
            gettext(
                "Your login cannot be used to request a certificate. Log out, then log in again."
            ),
        )
    if vendor is not None and not vendor.is_active:
        raise RequestRefused(
            "vendor",
            gettext(
                "This vendor no longer receives copies. Choose another one, or “I have no vendor”."
            ),
        )
    try:
        with transaction.atomic():
            # The partial unique constraint settles races; this check gives the message.
            if CertificateRequest.objects.filter(professional=professional).in_progress().exists():
                raise RequestRefused("in_progress", gettext("A request is already in progress"))
            certificate_request = CertificateRequest.objects.create(
                professional=professional,
                vendor=vendor,
                key_type=settings.MYCERT_CERT_KEY_TYPE,
                language=language,
                terms_version=settings.MYCERT_TERMS_VERSION,
                terms_accepted_at=now,
                vendor_copy_consent=vendor is not None,
                due_at=add_business_days(now, settings.MYCERT_SLA_BUSINESS_DAYS),
                id_token=id_token,
            )
            audit_record(
                actor=f"user:{professional.user_id}",
                action=AuditEvent.Action.REQUEST_SUBMITTED,
                target=certificate_request,
                details={
                    "vendor_id": vendor.pk if vendor else None,
                    "terms_version": certificate_request.terms_version,
                    "vendor_copy_consent": certificate_request.vendor_copy_consent,
                    "key_type": certificate_request.key_type,
                    # The token is personal data: the trail names it by digest only.
                    "proof": token_digest(id_token),
                },
            )
            # Robust: a broker that is down must not turn a recorded request into an
            # error page; the request sweep queues it once the broker is back.
            transaction.on_commit(
                lambda: issue_certificate.delay(certificate_request.pk), robust=True
            )
    except IntegrityError as exc:
        raise RequestRefused("in_progress", gettext("A request is already in progress")) from exc
    return certificate_request
