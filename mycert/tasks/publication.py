"""Keep the CRL fresh: on every revocation and before it ages."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mycert.ca_store import renew_ocsp_responder_if_due
from mycert.services.publication import crl_publish

__all__ = ["publish_crl", "renew_ocsp_responder"]


@shared_task(acks_late=True)
def publish_crl() -> int:
    """Sign and store a new CRL; return its number."""
    return crl_publish(now=timezone.now()).number


@shared_task(acks_late=True)
def renew_ocsp_responder() -> bool:
    """Give the OCSP responder a fresh certificate before the current one ends."""
    return renew_ocsp_responder_if_due(now=timezone.now())
