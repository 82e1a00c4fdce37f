"""Keep the CRL fresh: on every revocation and before it ages."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mycert.services.publication import crl_publish

__all__ = ["publish_crl"]


@shared_task(acks_late=True)
def publish_crl() -> int:
    """Sign and store a new CRL; return its number."""
    return crl_publish(now=timezone.now()).number
