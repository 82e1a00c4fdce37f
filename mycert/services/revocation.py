"""Revoke a certificate (helpdesk, the professional, or superseded by a new one)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from mycert.models import Certificate
from mycert.services.audit import actor_label, audit_record
from mycert.services.notices import revocation_notices_create
from mycert.services.ocsp import ocsp_response_sign_on_commit

logger = logging.getLogger(__name__)


class AlreadyRevoked(Exception):
    """The certificate was revoked before; a revocation is never changed."""


def certificate_revoke(
    *,
    certificate_id: int,
    reason: str,
    via: str,
    actor: AbstractBaseUser | None,
    now: datetime,
    compromised_at: datetime | None = None,
    comment: str = "",
) -> Certificate:
    """Revoke one certificate with an RFC 5280 §5.3.1 reason; refuse a second revocation.

    In the same transaction: the audit event and the e-mail notices to the professional
    and the request's vendor (sent on commit); the CRL is re-signed once on commit.
    """
    if reason not in Certificate.RevocationReason.values:
        raise ValueError(f"Unknown revocation reason {reason!r}.")
    if compromised_at is not None and compromised_at > now:
        raise ValueError("The compromise date cannot be in the future.")
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate_id)
        if certificate.revoked_at is not None:
            raise AlreadyRevoked(f"Certificate {certificate.serial} was already revoked.")
        certificate.revoked_at = now
        certificate.revocation_reason = reason
        certificate.revoked_via = via
        certificate.revoked_by_id = (
            actor.pk if actor is not None and actor.is_authenticated else None
        )
        certificate.compromised_at = compromised_at
        certificate.revocation_comment = comment
        certificate.save(
            update_fields=[
                "revoked_at",
                "revocation_reason",
                "revoked_via",
                "revoked_by",
                "compromised_at",
                "revocation_comment",
            ]
        )
        audit_record(
            actor=actor_label(actor),
            action="certificate.revoked",
            target=certificate,
            details={
                "serial": certificate.serial,
                "reason": reason,
                "via": via,
                "compromised_at": compromised_at.isoformat() if compromised_at else None,
                "comment": comment,
            },
        )
        # First in the worker's queue on commit: until the revoked answer is stored the
        # web answers tryLater, never "good".
        ocsp_response_sign_on_commit(certificate_id=certificate.pk)
        revocation_notices_create(certificate=certificate)
        _publish_once_after_commit()
    logger.info("certificate %s revoked (%s, via %s)", certificate.pk, reason, via)
    return certificate


def _publish_crl() -> None:
    from mycert.tasks.publication import publish_crl

    publish_crl.delay()


def _publish_once_after_commit() -> None:
    """Re-sign the CRL once the transaction commits (RFC 5280 §3.3; ETSI).

    A bulk revocation of N certificates in one transaction signs one CRL, not N;
    a rolled-back transaction drops its callbacks, and with them this one.
    """
    pending = transaction.get_connection().run_on_commit
    if not any(callback is _publish_crl for _, callback, _ in pending):
        transaction.on_commit(_publish_crl)
