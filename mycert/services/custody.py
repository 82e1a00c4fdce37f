"""Custody faults a person must mend: the HSM refused the workers' PIN.

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
    "custody_pin_refused",
    "custody_problem",
    "custody_token_usable",
]

logger = logging.getLogger(__name__)

PIN_REFUSED_KEY = "mycert:custody:pin-refused"
_ALERT_KEY = "mycert:custody:pin-refused-alert"
#: At most one alert an hour about a refused PIN, whatever the number of processes.
ALERT_INTERVAL_SECONDS = 3600


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
            kind="hsm_pin_refused",
            context={"token_label": token_label, "at": now},
        )


def custody_token_usable(*, token_label: str) -> None:
    """A key was found after a login: whatever refused the PIN is mended."""
    if cache.get(PIN_REFUSED_KEY) is not None:
        cache.delete(PIN_REFUSED_KEY)
        cache.delete(_ALERT_KEY)
        logger.warning("the PKCS#11 token %r accepts the PIN again", token_label)


def custody_problem() -> str | None:
    """What is wrong with custody, in words for ``/healthz`` (None: nothing known)."""
    refused = cache.get(PIN_REFUSED_KEY)
    if refused is None:
        return None
    return (
        f"The HSM token {refused['token']!r} refused the workers' PIN at {refused['at']}. "
        "Each worker process stops logging in until the PIN changes (so the HSM does not "
        "lock it); until then no certificate, CRL or OCSP answer is signed. Fix "
        "MYCERT_PKCS11_PIN_FILE on the workers (docs/deploy.md, 'HSM PIN refused')."
    )


def connect_custody_signals() -> None:
    """Wire the CA store's token events to the records above (``AppConfig.ready``)."""
    from mycert import ca_store

    def on_pin_refused(token_label: str, **kwargs: Any) -> None:
        custody_pin_refused(token_label=token_label, now=timezone.now())

    def on_key_found(token_label: str, **kwargs: Any) -> None:
        custody_token_usable(token_label=token_label)

    ca_store.token_pin_refused.connect(
        on_pin_refused, dispatch_uid="mycert.custody.pin_refused", weak=False
    )
    ca_store.token_key_found.connect(
        on_key_found, dispatch_uid="mycert.custody.key_found", weak=False
    )
