"""Issue a request's certificate in the background."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from mycert import custody
from mycert.request_proof import RequestUnproven
from mycert.services.custody import custody_hsm_back, custody_hsm_unavailable
from mycert.services.issuance import (
    IssuanceRefused,
    request_fail,
    request_fail_unproven,
    request_issue,
    request_mark_issuing,
    requests_stuck_ids,
)
from mycert.tasks.delivery import send_deliveries_now

__all__ = ["issue_certificate", "sweep_requests"]

logger = logging.getLogger(__name__)

#: Errors that say nothing about the request: the database or the CA's storage (a key
#: file, the HSM) is unreachable for a moment. Anything else fails the request for good.
TEMPORARY_ERRORS = (OperationalError, InterfaceError, OSError)


def _temporary(exc: BaseException) -> bool:
    """The database, a key file or the HSM is out of reach: the request is not at fault.

    HSM outages (token, session, module errors; a PIN the operator is replacing) are
    waited out like a database or broker outage (``custody.is_temporary``).
    """
    return isinstance(exc, TEMPORARY_ERRORS) or custody.is_temporary(exc)


@shared_task(
    name="mycert.tasks.issuance.issue_certificate", bind=True, acks_late=True, max_retries=20
)
def issue_certificate(self, request_id: int) -> None:  # type: ignore[no-untyped-def]
    """Issue the certificate of request ``request_id``, then send its e-mails."""
    try:
        request_mark_issuing(request_id=request_id)
        outcome = request_issue(request_id=request_id, now=timezone.now(), send_now=True)
    except RequestUnproven as exc:
        # No proof of a LuxTrust login by this professional: no key, no retry (the
        # token will not become valid), and the security officer is told.
        request_fail_unproven(request_id=request_id, check=exc.check, now=timezone.now())
        return
    except IssuanceRefused as exc:
        # The profile refuses the data (a name too long for the CN, an internationalised
        # address): a new key every few minutes would change nothing.
        request_fail(
            request_id=request_id, reason=f"refused by the profile: {exc}", now=timezone.now()
        )
        return
    except Exception as exc:
        if not _temporary(exc):
            # A bug, or data the checks above did not foresee: ended, the helpdesk told,
            # and the professional free to submit again, rather than a request stuck
            # « issuing ».
            logger.exception("request %s: issuance failed", request_id)
            request_fail(
                request_id=request_id,
                reason=f"internal error: {type(exc).__name__}",
                now=timezone.now(),
            )
            return
        if custody.is_hsm_outage(exc):
            # /healthz says it in words on every host sharing the cache.
            custody_hsm_unavailable(error=str(exc), now=timezone.now())
        if self.request.retries >= self.max_retries:
            request_fail(
                request_id=request_id,
                reason=f"still failing after {self.max_retries} retries: {type(exc).__name__}",
                now=timezone.now(),
            )
            return
        # A dropped connection, a lock timeout, the HSM restarting: the request is
        # untouched, try again.
        logger.warning("request %s: temporary error, retrying (%s)", request_id, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(5 * 2**self.request.retries, 300)) from exc
    if custody.uses_token():
        custody_hsm_back()  # signed: an outage met before is over
    # Sent here rather than queued behind every issuance waiting in the broker: the
    # professional's e-mails leave as soon as the certificate exists. A worker lost
    # now leaves unsent rows, leased to it, which the outbox sweep sends once the lease
    # ends.
    try:
        send_deliveries_now(outcome.ready_delivery_ids, leased=outcome.leased)
    except (OperationalError, InterfaceError) as exc:
        # The certificate is issued and its e-mails are in the outbox: issuing again would
        # do nothing, so no retry of this task; the sweep sends them once their lease ends.
        logger.warning(
            "request %s: database error while sending, left to the outbox sweep (%s)",
            request_id,
            type(exc).__name__,
        )


@shared_task(name="mycert.tasks.sweep_requests", acks_late=True, ignore_result=True)
def sweep_requests() -> int:
    """Queue the issuance of requests whose task was lost (broker restart, killed worker)."""
    older_than = timedelta(seconds=settings.MYCERT_REQUEST_SWEEP_AFTER_SECONDS)
    stuck = requests_stuck_ids(now=timezone.now(), older_than=older_than)
    for request_id in stuck:
        issue_certificate.delay(request_id)
    if stuck:
        logger.warning("request sweep queued %s stuck requests again", len(stuck))
    return len(stuck)
