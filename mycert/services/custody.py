"""Custody faults, said in words on ``/healthz``: the HSM refused the workers' PIN (a
person must mend it), or the HSM is out of reach (requests wait; it may mend itself).

A worker process whose login the token refused stops logging in with that PIN
(:mod:`mycert.pki.token`), so a stale PIN file cannot lock the HSM; until someone fixes
the PIN, nothing is signed: no certificate, no CRL, no OCSP answer. The refusal raises
one alert to the security officer (one an hour, however many processes meet it) and
leaves a mark in the shared cache that ``/healthz`` reports in words on every host; the
next key found after a login clears it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from mycert.models import OperatorAlert
from mycert.services.alerts import operator_alert_create

__all__ = [
    "connect_custody_signals",
    "custody_hsm_back",
    "custody_hsm_unavailable",
    "custody_pin_refused",
    "custody_problem",
    "custody_token_usable",
]

logger = logging.getLogger(__name__)

PIN_REFUSED_KEY = "mycert:custody:pin-refused"
_ALERT_KEY = "mycert:custody:pin-refused-alert"
#: At most one alert an hour about a refused PIN, whatever the number of processes.
ALERT_INTERVAL_SECONDS = 3600
HSM_UNAVAILABLE_KEY = "mycert:custody:hsm-unavailable"
#: How long an HSM outage a worker met stays on /healthz unless a later one renews it.
HSM_UNAVAILABLE_SECONDS = 900


def custody_pin_refused(*, token_label: str, now: datetime) -> None:
    """Record that the token refused a worker's PIN; alert the security officer once."""
    logger.critical(
        "the PKCS#11 token %r refused the PIN: this process stops logging in until the PIN "
        "changes; nothing is signed meanwhile",
        token_label,
    )
    cache.set(PIN_REFUSED_KEY, {"token": token_label, "at": now.isoformat()}, timeout=None)
    if cache.add(_ALERT_KEY, now.isoformat(), timeout=ALERT_INTERVAL_SECONDS):
        operator_alert_create(
            recipient=OperatorAlert.Recipient.SECURITY,
            kind=OperatorAlert.Kind.HSM_PIN_REFUSED,
            context={"token_label": token_label, "at": now},
        )


def custody_token_usable(*, token_label: str) -> None:
    """A key was found after a login: whatever refused the PIN is mended."""
    if cache.get(PIN_REFUSED_KEY) is not None:
        cache.delete(PIN_REFUSED_KEY)
        cache.delete(_ALERT_KEY)
        logger.warning("the PKCS#11 token %r accepts the PIN again", token_label)


def custody_hsm_unavailable(*, error: str, now: datetime) -> None:
    """A worker could not reach the HSM (token, session or module error); it retries."""
    cache.set(
        HSM_UNAVAILABLE_KEY,
        {"error": error[:300], "at": now.isoformat()},
        timeout=HSM_UNAVAILABLE_SECONDS,
    )


def custody_hsm_back() -> None:
    """A worker signed again: the outage it met is over."""
    if cache.get(HSM_UNAVAILABLE_KEY) is not None:
        cache.delete(HSM_UNAVAILABLE_KEY)
        logger.warning("the HSM is reachable again")


def custody_problem() -> tuple[str, str] | None:
    """What is wrong with custody: (code, words) for ``/healthz``; None: nothing known."""
    refused = cache.get(PIN_REFUSED_KEY)
    if refused is not None:
        return (
            "hsm_pin_refused",
            f"The HSM token {refused['token']!r} refused the workers' PIN at {refused['at']}. "
            "Each worker process stops logging in until the PIN changes (so the HSM does not "
            "lock it); until then no certificate, CRL or OCSP answer is signed. Fix "
            "MYCERT_PKCS11_PIN_FILE on the workers (docs/deploy.md, 'HSM PIN refused').",
        )
    unavailable = cache.get(HSM_UNAVAILABLE_KEY)
    if unavailable is not None:
        return (
            "hsm_unavailable",
            f"A worker could not reach the HSM at {unavailable['at']}: {unavailable['error']} "
            "Requests wait and are retried with back-off; nothing is lost. Check the HSM "
            "and its network (docs/deploy.md, 'HSM outage').",
        )
    return None


def connect_custody_signals() -> None:
    """Wire the token events of ``mycert.custody`` to the records above (``AppConfig.ready``)."""
    from mycert import custody

    def on_pin_refused(token_label: str, **kwargs: Any) -> None:
        custody_pin_refused(token_label=token_label, now=timezone.now())

    def on_key_found(token_label: str, **kwargs: Any) -> None:
        custody_token_usable(token_label=token_label)
        custody_hsm_back()

    custody.token_pin_refused.connect(
        on_pin_refused, dispatch_uid="mycert.custody.pin_refused", weak=False
    )
    custody.token_key_found.connect(
        on_key_found, dispatch_uid="mycert.custody.key_found", weak=False
    )
