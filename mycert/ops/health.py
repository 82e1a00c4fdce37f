"""Health of what MyCert depends on, for ``/healthz`` (load balancers, probes, on-call).

Each check answers ``ok`` or ``error`` with its latency. An error names the exception's
type or the custody error's code, never its message: messages may carry URLs with passwords,
paths or addresses. The database is asked on every call (one ``SELECT 1``); the SMTP
relay and the broker cost a connection each, so their answers are reused for
``MYCERT_HEALTH_CACHE_SECONDS`` within the process and a 10 s probe stays cheap.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from django.conf import settings
from django.db import connection

from mycert import custody

__all__ = ["CheckResult", "check_all", "clear_cache"]

logger = logging.getLogger(__name__)

#: Cap on the SMTP and broker waits, whatever EMAIL_TIMEOUT says: probes time out at 10 s.
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_ms: float
    error: str = ""
    detail: dict[str, str] | None = None

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "status": "ok" if self.ok else "error",
            "latency_ms": round(self.latency_ms, 1),
        }
        if self.error:
            data["error"] = self.error
        if self.detail:
            data.update(self.detail)
        return data


class CheckFailed(Exception):
    """A check's own refusal, with a code safe to show."""


_cache: dict[str, tuple[float, CheckResult]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget the reused SMTP and broker answers."""
    with _cache_lock:
        _cache.clear()


def _run(check: Callable[[], dict[str, str] | None]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = check()
    except custody.CustodyError as exc:
        error = f"ca_{exc.code}"
    except CheckFailed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer, reported by type only
        error = type(exc).__name__
    else:
        return CheckResult(True, (time.perf_counter() - started) * 1000, detail=detail)
    logger.warning("health check %s failed: %s", check.__name__.removeprefix("_check_"), error)
    return CheckResult(False, (time.perf_counter() - started) * 1000, error=error)


def _cached(name: str, check: Callable[[], dict[str, str] | None]) -> CheckResult:
    ttl: float = settings.MYCERT_HEALTH_CACHE_SECONDS
    with _cache_lock:
        hit = _cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
    result = _run(check)
    with _cache_lock:
        _cache[name] = (time.monotonic(), result)
    return result


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=int(PROBE_TIMEOUT_SECONDS))
        # Opening a channel is what talks to the server (Redis answers a PING here).
        conn.default_channel  # noqa: B018


#: Deadlines of files a web host only holds a copy of and never uses.
_WARN_ONLY_WHEN_EXPIRED = frozenset({"ocsp_responder"})


def _check_ca() -> dict[str, str]:
    """The CA certificates, the responder and the root CRL: public files, no key.

    Each of the root CRL's nextUpdate, the responder's and the issuing CA's notAfter
    is reported. Within 30 days of the root CRL's or the issuing CA's end (9 days for
    the responder, which beat renews at 10), the check stays ``ok`` (the service still works;
    a 503 would take every web host out of the load balancer) and adds ``warnings``
    naming it, so the on-call has a month for the ceremony (docs/deploy.md). Past it,
    the check fails, except for the responder: web hosts serve stored answers and never
    use ``ocsp.pem`` (workers sign with it), so its end is the warning
    ``ocsp_responder_expired``, never a 503 that would drain every web host.
    """
    deadlines = custody.ceremony_deadlines()
    certificates = custody.ca_certificates_load()
    now = datetime.now(tz=UTC)
    for certificate in (certificates.issuing,):
        if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
            raise CheckFailed("ca_expired")
    detail = {f"{d.name}_not_after": d.expires.isoformat() for d in deadlines}
    warnings = []
    for deadline in deadlines:
        if deadline.expires <= now:
            if deadline.name not in _WARN_ONLY_WHEN_EXPIRED:
                raise CheckFailed(f"{deadline.name}_expired")
            warnings.append(f"{deadline.name}_expired")
            logger.warning("the copied %s certificate has expired", deadline.name)
    expiring = sorted(d.name for d in deadlines if d.due(now) and d.expires > now)
    if expiring:
        warnings.extend(f"{name}_expires_soon" for name in expiring)
        logger.warning("CA ceremony due within 30 days: %s", ", ".join(expiring))
    if _root_ocsp_missing(certificates.issuing):
        # Whole-chain OCSP clients get "unauthorized" on the issuing CA and refuse everyone.
        warnings.append("root_ocsp_missing")
        logger.warning("No root-signed OCSP answer on the issuing CA: run sign_root_crl")
    if warnings:
        detail["warnings"] = ",".join(sorted(warnings))
    return detail


def _root_ocsp_missing(issuing: x509.Certificate) -> bool:
    from mycert.services.ocsp import ca_status_lookup

    return ca_status_lookup(serial_number=issuing.serial_number, hash_name="sha1") is None


def _check_ocsp() -> dict[str, str]:
    """The stored OCSP answers: what the web serves must not run out.

    Workers and beat re-sign them (``mycert.services.ocsp``); if they stop, the answers
    expire one after another and the responder says tryLater, so relying services that
    hard-fail refuse every professional. Within ``ocsp_alarm_margin`` of the nearest
    nextUpdate the check stays ``ok`` with a warning (docs/deploy.md §13, the margin);
    past it, it fails: this host can no longer answer for every certificate.
    """
    from mycert.services.ocsp import ocsp_alarm_margin, ocsp_answers_earliest_next_update

    now = datetime.now(tz=UTC)
    earliest = ocsp_answers_earliest_next_update(now=now)
    if earliest is None:
        return {}
    detail = {"ocsp_earliest_next_update": earliest.isoformat()}
    if earliest <= now:
        raise CheckFailed("ocsp_answers_expired")
    if earliest - now < ocsp_alarm_margin(settings.MYCERT_OCSP_VALIDITY):
        detail["warnings"] = "ocsp_answers_expire_soon"
        logger.warning("OCSP answers expire at %s: are beat and the workers running?", earliest)
    return detail


def _check_custody() -> dict[str, str] | None:
    """A custody fault the workers met (the HSM refused their PIN), said in words.

    Never an error: web hosts still serve stored OCSP answers and CRLs, and a 503 would
    only take them out of the load balancer. The words tell the on-call what to fix.
    """
    from mycert.services.custody import custody_problem

    problem = custody_problem()
    if problem is None:
        return None
    code, reason = problem
    return {"warnings": code, "reason": reason}


def _check_smtp() -> None:
    """EHLO and NOOP at the relay, as the SMTP backend would connect (no mail sent)."""
    timeout = min(float(settings.EMAIL_TIMEOUT or PROBE_TIMEOUT_SECONDS), PROBE_TIMEOUT_SECONDS)
    host: str = settings.EMAIL_HOST
    port: int = settings.EMAIL_PORT
    smtp: smtplib.SMTP
    if settings.EMAIL_USE_SSL:
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        smtp.ehlo()
        if settings.EMAIL_USE_TLS:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        code, _message = smtp.noop()
        if code != 250:
            raise CheckFailed(f"smtp_noop_{code}")
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def check_all() -> dict[str, CheckResult]:
    """Run every check; reused answers for the SMTP relay and the broker."""
    return {
        "database": _run(_check_database),
        "broker": _cached("broker", _check_broker),
        "ca": _run(_check_ca),
        "ocsp": _cached("ocsp", _check_ocsp),  # one aggregate over every answer
        "custody": _run(_check_custody),
        "smtp": _cached("smtp", _check_smtp),
    }
