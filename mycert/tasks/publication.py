"""Keep the CRL and the stored OCSP answers fresh: on every revocation and before they age."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mycert.custody import ocsp_responder_renew
from mycert.services.ocsp import ocsp_responses_refresh, ocsp_responses_sign
from mycert.services.publication import PublicationRefused, crl_publish

__all__ = ["publish_crl", "refresh_ocsp_responses", "renew_ocsp_responder", "sign_ocsp_responses"]


# A revocation's CRL must not wait for the hourly run because of a passing failure (a
# database restart, a lock timeout): retried with back-off, well below the broker's
# visibility timeout (docs/architecture.md « Known pitfalls »).
@shared_task(
    name="mycert.tasks.publish_crl",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
)
def publish_crl() -> int | None:
    """Sign and store a new CRL (clock read under the CRL lock); return its number.

    A refusal (the previous CRL missing, forged or older than the high-water mark) is
    not retried: security was alerted, and only a person can restore the evidence.
    """
    try:
        return crl_publish().number
    except PublicationRefused:
        return None


@shared_task(name="mycert.tasks.renew_ocsp_responder", acks_late=True)
def renew_ocsp_responder() -> bool:
    """Give the OCSP responder a fresh certificate before the current one ends."""
    return ocsp_responder_renew(now=timezone.now())


@shared_task(name="mycert.tasks.sign_ocsp_responses", acks_late=True, ignore_result=True)
def sign_ocsp_responses(certificate_ids: list[int]) -> int:
    """Sign and store these certificates' OCSP answers as their rows say now."""
    return ocsp_responses_sign(certificate_ids=certificate_ids, now=timezone.now())


@shared_task(name="mycert.tasks.refresh_ocsp_responses", acks_late=True, ignore_result=True)
def refresh_ocsp_responses() -> int:
    """Re-sign the stored OCSP answers due (beat, every 5 minutes)."""
    return ocsp_responses_refresh(now=timezone.now())


# The names these two tasks had before every task was named ``mycert.tasks.<name>``:
# messages queued by an older release (a revocation's CRL, beat's last run) still run.
@shared_task(name="mycert.tasks.publication.publish_crl", acks_late=True)
def publish_crl_previous_name() -> int | None:
    """``publish_crl`` under its former name."""
    try:
        return crl_publish().number
    except PublicationRefused:
        return None


@shared_task(name="mycert.tasks.publication.renew_ocsp_responder", acks_late=True)
def renew_ocsp_responder_previous_name() -> bool:
    """``renew_ocsp_responder`` under its former name."""
    return ocsp_responder_renew(now=timezone.now())
