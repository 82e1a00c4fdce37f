"""Keep the CRL fresh: on every revocation and before it ages."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mycert.ca_store import renew_ocsp_responder_if_due
from mycert.services.publication import crl_publish

__all__ = ["publish_crl", "renew_ocsp_responder"]


# A revocation's CRL must not wait for the hourly run because of a passing failure (a
# database restart, a lock timeout): retried with back-off, well below the broker's
# visibility timeout (DESIGN.md §7).
@shared_task(
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
)
def publish_crl() -> int:
    """Sign and store a new CRL (clock read under the CRL lock); return its number."""
    return crl_publish().number


@shared_task(acks_late=True)
def renew_ocsp_responder() -> bool:
    """Give the OCSP responder a fresh certificate before the current one ends."""
    return renew_ocsp_responder_if_due(now=timezone.now())
