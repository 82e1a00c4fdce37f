"""OCSP answers signed ahead by workers, served as stored bytes by web hosts (RFC 5019).

Web hosts hold no key (docs/architecture.md « Hosts and trust boundaries »): they cannot sign an
answer on demand, so every
certificate's answer is signed before anyone asks, for each CertID hash algorithm
clients use (``PRESIGNED_HASHES``), and stored in ``OcspResponse``:

- at issuance ("good"), in the issuing worker's transaction;
- once a revocation has committed ("revoked"), by a task: the revoking process may be
  a web host;
- by beat (``ocsp_responses_refresh``) before half a response's validity has passed,
  which also repairs a lost task (a certificate without an answer, a revoked one still
  answered "good").

The promise the web keeps with this (``ocsp_response_lookup``): once a revocation has
committed, "good" is never served again for that certificate. The stored status and
the certificate's ``revoked_at`` are read in one query; until the revoked answer is
stored the web answers ``tryLater``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.models import Exists, OuterRef, QuerySet

from mycert import custody
from mycert.models import Certificate, OcspResponse, OperatorAlert
from mycert.pki import CertificateStatus, StatusAnswer
from mycert.pki.evidence import revoked_answer
from mycert.pki.ocsp_presigned import PRESIGNED_HASHES, sign_presigned_response
from mycert.services.publication import (
    PublicationRefused,
    RevocationEvidence,
    revocation_alert,
    revocation_evidence,
)

__all__ = [
    "CaStatusAnswer",
    "StoredOcsp",
    "ca_status_lookup",
    "ocsp_alarm_margin",
    "ocsp_answers_earliest_next_update",
    "ocsp_response_lookup",
    "ocsp_response_sign_at_issuance",
    "ocsp_response_sign_on_commit",
    "ocsp_responses_due_ids",
    "ocsp_responses_refresh",
    "ocsp_responses_retire_expired",
    "ocsp_responses_sign",
]

logger = logging.getLogger(__name__)

# Rows signed (and locked) per transaction: a revocation waiting on the lock waits for
# one chunk at most (~0.1 s), and a bulk re-signing writes ~1 MB per statement.
CHUNK = 500
# How often beat runs ``refresh_ocsp_responses`` (config/settings.py): a response due
# is re-signed at most this much later.
REFRESH_EVERY = timedelta(minutes=5)


def _refresh_age(validity: timedelta) -> timedelta:
    """Age from which a stored response is re-signed.

    Early enough that a run every ``REFRESH_EVERY`` (plus its own duration) re-signs it
    before half its validity has passed, so relying parties always get an answer with at
    least half its life ahead (RFC 5019 §6.2: caches keep it until nextUpdate).
    """
    return max(validity / 2 - 2 * REFRESH_EVERY, validity / 4)


# --- Signing (workers: they hold the OCSP responder's key) ----------------------------------


def _answer(revoked_at: datetime | None, reason: str) -> StatusAnswer:
    if revoked_at is None:
        return StatusAnswer(CertificateStatus.GOOD)
    return StatusAnswer(
        CertificateStatus.REVOKED,
        revoked_at=revoked_at,
        reason=x509.ReasonFlags(reason) if reason else None,
    )


def _signed(
    *, certificate_id: int, serial: str, answer: StatusAnswer, now: datetime
) -> OcspResponse:
    """The certificate's answer signed for every CertID hash (an unsaved row)."""
    responder = custody.ocsp_responder_load()  # once per process (custody's cache)
    issuer = custody.ca_certificates_load().issuing
    this_update = now.astimezone(UTC).replace(microsecond=0)  # what the DER carries
    next_update = this_update + settings.MYCERT_OCSP_VALIDITY
    signed = {
        name: sign_presigned_response(
            serial_number=int(serial, 16),
            issuer_certificate=issuer,
            responder=responder,
            answer=answer,
            hash_name=name,
            this_update=this_update,
            next_update=next_update,
        )
        for name in PRESIGNED_HASHES
    }
    return OcspResponse(
        certificate_id=certificate_id,
        status=answer.status.value,
        this_update=this_update,
        next_update=next_update,
        der_sha1=signed["sha1"],
        der_sha256=signed["sha256"],
    )


def _answer_from_evidence(
    serial: str, stored_der: bytes | None, evidence: RevocationEvidence
) -> StatusAnswer | None:
    """The revocation the CA already signed for a serial whose row says "not revoked".

    A CRL entry of the latest verified CRL, or the stored answer itself when it is a
    "revoked" answer whose signature verifies: once signed, "revoked" is never followed
    by "good" (issue 20 §2), whatever the row says now.
    """
    serial_number = int(serial, 16)
    entry = evidence.entry(serial_number)
    if entry is None and stored_der is not None:
        entry = revoked_answer(stored_der, custody.ca_certificates_load().issuing, serial_number)
    if entry is None:
        return None
    return StatusAnswer(CertificateStatus.REVOKED, revoked_at=entry.revoked_at, reason=entry.reason)


def _stored_der(certificate_id: int) -> bytes | None:
    der = (
        OcspResponse.objects.filter(pk=certificate_id).values_list("der_sha256", flat=True).first()
    )
    return bytes(der) if der is not None else None


def _sign_chunk(
    ids: Sequence[int],
    *,
    now: datetime,
    evidence: _Evidence,
    cleared: list[str],
) -> int:
    with transaction.atomic():
        # Locked until commit: a revocation (SELECT … FOR UPDATE) of one of these rows
        # waits, and its own signing task then runs after this chunk has committed, so
        # a "good" answer signed before the revocation never overwrites the revoked one.
        rows = list(
            Certificate.objects.filter(pk__in=ids)
            .select_for_update(no_key=True, of=("self",))
            .values_list("pk", "serial", "revoked_at", "revocation_reason", "ocsp_response__status")
        )
        responses = []
        for pk, serial, revoked_at, reason, stored_status in rows:
            answer = _answer(revoked_at, reason)
            if answer.status is CertificateStatus.GOOD:
                verified = evidence.get()
                if verified is None:
                    continue  # nothing to sign "good" against: left to expire (tryLater)
                # The stored answer is read only when it says "revoked": one who also
                # put back an old "good" answer is caught by the CRL, not by this.
                stored = _stored_der(pk) if stored_status == OcspResponse.Status.REVOKED else None
                from_evidence = _answer_from_evidence(serial, stored, verified)
                if from_evidence is not None:
                    answer = from_evidence
                    cleared.append(serial)
            responses.append(_signed(certificate_id=pk, serial=serial, answer=answer, now=now))
        OcspResponse.objects.bulk_create(
            responses,
            update_conflicts=True,
            unique_fields=["certificate"],
            update_fields=["status", "this_update", "next_update", "der_sha1", "der_sha256"],
        )
    return len(responses)


class _Evidence:
    """The latest verified CRL, read once per signing run and only if a "good" answer is
    due (a revocation's own answer needs none); ``None`` (security alerted) when the
    stored CRL is not evidence."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.loaded = False
        self.value: RevocationEvidence | None = None

    def get(self) -> RevocationEvidence | None:
        if not self.loaded:
            self.loaded = True
            try:
                self.value = revocation_evidence(custody.ca_certificates_load().issuing)
            except PublicationRefused as exc:
                logger.error('OCSP: no "good" answer is signed: %s', exc)
                revocation_alert(
                    OperatorAlert.Kind.CRL_PUBLICATION_REFUSED, {"problem": str(exc)}, now=self.now
                )
        return self.value


def ocsp_responses_sign(*, certificate_ids: Sequence[int], now: datetime) -> int:
    """Sign and store the current answer of these certificates; return how many.

    Each answer follows the certificate row as it is when signed (ids only: a task
    run late, or twice, signs the truth of that moment), except that a row no longer
    revoked keeps the revoked answer the CA signed before (``_answer_from_evidence``;
    security is alerted). Without usable evidence (the latest CRL missing, forged or
    older than the high-water mark) only "revoked" answers are signed. The responder is
    loaded once per process (``mycert.custody``); rows go in chunks of ``CHUNK``, one
    transaction each.
    """
    ids = sorted(set(certificate_ids))
    if not ids:
        return 0
    evidence = _Evidence(now)
    cleared: list[str] = []
    signed = 0
    for start in range(0, len(ids), CHUNK):
        signed += _sign_chunk(
            ids[start : start + CHUNK], now=now, evidence=evidence, cleared=cleared
        )
    if cleared:
        revocation_alert(
            OperatorAlert.Kind.REVOCATION_CLEARED, {"serials": cleared, "crl_number": None}, now=now
        )
    return signed


def ocsp_responses_due_ids(*, now: datetime) -> list[int]:
    """Unexpired certificates whose stored answer is missing, ageing, or not yet revoked.

    Beat asks every ``REFRESH_EVERY``: each of the three cases is its own query, read
    through an index, so a run reads the rows that are due and not every certificate
    (issue 24 §5; one OR across the join read the whole table, PEMs included):

    - ageing: the live answers' ``this_update`` index (``ocsp_responses_retire_expired``
      takes the answers of certificates past their end out of it);
    - revoked, still answered "good": the certificates' ``revoked_at`` index;
    - no answer at all: an anti-join of the two primary keys (index-only), the few
      found then checked for their end date.
    """
    threshold = now - _refresh_age(settings.MYCERT_OCSP_VALIDITY)
    # Read first, then checked for their end date by primary key: the ageing answers are
    # few, and the join would let the planner read the certificates the other way round.
    ageing_ids = list(_live_ageing(threshold).values_list("certificate_id", flat=True))
    ageing = (
        Certificate.objects.filter(pk__in=ageing_ids, not_after__gt=now)
        .order_by()
        .values_list("pk", flat=True)
    )
    revoked_answered_good = (
        Certificate.objects.filter(
            revoked_at__isnull=False,
            not_after__gt=now,
            ocsp_response__status=OcspResponse.Status.GOOD,
        )
        .order_by()
        .values_list("pk", flat=True)
    )
    unanswered = (
        Certificate.objects.filter(
            pk__in=Certificate.objects.filter(
                ~Exists(OcspResponse.objects.filter(certificate_id=OuterRef("pk")))
            )
            .order_by()
            .values("pk"),
            not_after__gt=now,
        )
        .order_by()
        .values_list("pk", flat=True)
    )
    return sorted({*ageing, *revoked_answered_good, *unanswered})


def _live_ageing(threshold: datetime) -> QuerySet[OcspResponse]:
    return OcspResponse.objects.filter(certificate_expired=False, this_update__lte=threshold)


def ocsp_responses_retire_expired(*, now: datetime) -> int:
    """Mark the ageing answers of certificates past their end; return how many.

    Beat stops re-signing them, so without the mark they would stay in the ageing range
    of the refresh's index for good, ~a third of the population every year. Each is
    marked once, when it first ages after its certificate's end.
    """
    threshold = now - _refresh_age(settings.MYCERT_OCSP_VALIDITY)
    return (
        _live_ageing(threshold)
        .filter(certificate__not_after__lte=now)
        .update(certificate_expired=True)
    )


def ocsp_responses_refresh(*, now: datetime) -> int:
    """Re-sign every answer that is due (beat); return how many were signed."""
    ocsp_responses_retire_expired(now=now)
    due = ocsp_responses_due_ids(now=now)
    signed = ocsp_responses_sign(certificate_ids=due, now=now)
    if signed:
        logger.info("OCSP: %s responses signed", signed)
    return signed


def ocsp_response_sign_at_issuance(*, certificate: Certificate, now: datetime) -> None:
    """Store a new certificate's "good" answer in its issuing transaction (one INSERT).

    The answer commits with the certificate: OCSP knows it before its keystore leaves,
    and no certificate is ever without an answer to fix later. A responder that cannot
    sign (expired, unreadable) does not stop the issuance: beat's refresh signs it.
    """
    try:
        response = _signed(
            certificate_id=certificate.pk,
            serial=certificate.serial,
            answer=StatusAnswer(CertificateStatus.GOOD),
            now=now,
        )
    except (custody.CustodyError, ValueError):
        logger.exception("OCSP: certificate %s issued without an answer", certificate.pk)
        return
    response.save(force_insert=True)


class _SignAfterCommit:
    """One signing task per transaction for every certificate it touched (bulk revocation)."""

    def __init__(self) -> None:
        self.certificate_ids: list[int] = []

    def __call__(self) -> None:
        from mycert.tasks.publication import sign_ocsp_responses

        sign_ocsp_responses.delay(self.certificate_ids)


def ocsp_response_sign_on_commit(*, certificate_id: int) -> None:
    """Have a worker sign the certificate's answer once the current transaction commits.

    For revocation: the revoking process may be a web host, which holds no key. Robust:
    a broker down at that moment is logged, and beat's refresh signs it within minutes
    (meanwhile the web answers tryLater, never "good").
    """
    pending = transaction.get_connection().run_on_commit
    for _, callback, _ in pending:
        if isinstance(callback, _SignAfterCommit):
            callback.certificate_ids.append(certificate_id)
            return
    callback = _SignAfterCommit()
    callback.certificate_ids.append(certificate_id)
    transaction.on_commit(callback, robust=True)


# --- Serving (web hosts: bytes only) --------------------------------------------------------------


@dataclass(frozen=True)
class StoredOcsp:
    """What the web needs to answer for one serial number, read in one query."""

    revoked: bool
    expired: bool
    #: None when no answer is stored yet (or none for this hash algorithm).
    status: str | None
    this_update: datetime | None
    next_update: datetime | None
    der: bytes | None


_LOOKUP_SQL: dict[tuple[str, str], str] = {}


def _lookup_sql(hash_name: str, placeholder: str = "%s") -> str:
    # Raw SQL, built once: this is the hottest path of the service, and compiling the
    # same ORM query on every request costs more than the database's answer.
    if (hash_name, placeholder) not in _LOOKUP_SQL:
        certificates = Certificate._meta.db_table
        responses = OcspResponse._meta.db_table
        column = {"sha1": "der_sha1", "sha256": "der_sha256"}[hash_name]
        _LOOKUP_SQL[hash_name, placeholder] = (
            f"SELECT c.revoked_at, c.not_after, o.status, o.this_update, o.next_update, o.{column} "  # noqa: S608 - names from the models
            f"FROM {certificates} c LEFT JOIN {responses} o ON o.certificate_id = c.id "
            f"WHERE c.serial = {placeholder}"
        )
    return _LOOKUP_SQL[hash_name, placeholder]


def _aware(value: datetime | str | None) -> datetime | None:
    # PostgreSQL gives aware datetimes; SQLite (raw cursor) gives UTC text or naive values.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


#: The lookup's prepared statements on each psycopg connection (they live as long as the
#: server session: a ROLLBACK keeps them, a new connection has none, a pooler's DISCARD
#: ALL between transactions drops them).
_prepared_on: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
# SQLSTATE invalid_sql_statement_name: the session lost it (DISCARD ALL by a pooler).
_NO_SUCH_STATEMENT = "26000"


def _postgresql_row(db: Any, hash_name: str, serial: str) -> tuple[object, ...] | None:
    """The lookup's row, through libpq's PQexecPrepared on Django's own connection.

    A server-side prepared statement (PostgreSQL neither parses nor plans it again) run
    by one libpq call with binary results, loaded by psycopg's C loaders. Not through a
    psycopg cursor: its Python generators and wait loop cost ~4x the query's own client
    time here (issue 21 §3), and Django opens connections with ``prepare_threshold=None``
    (no preparing), which its own queries keep.
    """
    from psycopg import errors, pq
    from psycopg.adapt import Transformer

    db.ensure_connection()
    raw = db.connection
    name = f"mycert_ocsp_lookup_{hash_name}".encode()
    with db.wrap_database_errors, raw.lock:
        pgconn = raw.pgconn
        prepared = _prepared_on.setdefault(raw, set())
        for attempt in (1, 2):
            if name not in prepared:
                done = pgconn.prepare(name, _lookup_sql(hash_name, "$1").encode())
                if done.status != pq.ExecStatus.COMMAND_OK:
                    raise _query_error(done, pgconn)
                prepared.add(name)
            result = pgconn.exec_prepared(name, [serial.encode()], result_format=pq.Format.BINARY)
            if result.status == pq.ExecStatus.TUPLES_OK:
                break
            error = _query_error(result, pgconn)
            if (
                attempt == 1
                and isinstance(error, errors.InvalidSqlStatementName)
                and pgconn.transaction_status == pq.TransactionStatus.IDLE
            ):
                # Outside a transaction (the responder's case) nothing was aborted.
                prepared.discard(name)
                continue
            raise error
        if result.ntuples == 0:
            return None
        loader = Transformer(raw)
        loader.set_pgresult(result)
        row: tuple[object, ...] = loader.load_row(0, tuple)
        return row


def _query_error(result: Any, pgconn: Any) -> Exception:
    """The psycopg error a failed libpq call stands for (Django wraps it as its own)."""
    import psycopg
    from psycopg import errors, pq

    if pgconn.status == pq.ConnStatus.BAD:
        message = pgconn.error_message.decode(errors="replace")
        return psycopg.OperationalError(f"the connection is broken: {message}")
    return errors.error_from_result(result)


def ocsp_response_lookup(*, serial_number: int, hash_name: str, now: datetime) -> StoredOcsp | None:
    """The certificate's revocation state and stored answer; None if MyCert never issued it.

    One indexed query (serial, then the answer by primary key). Outside a transaction it
    skips Django's per-request health check (``CONN_HEALTH_CHECKS``: a ``SELECT 1``, as
    many round trips again) and asks once more on a fresh connection if the kept one
    turns out to be broken (a restarted or failed-over database).
    """
    serial = format(serial_number, "x")
    # The thread's connection, looked up once: each ``connection.x`` goes through
    # asgiref's thread-local storage again (~1 µs each, a handful per request).
    db = connections[DEFAULT_DB_ALIAS]

    def ask() -> tuple[object, ...] | None:
        if db.vendor == "postgresql":
            return _postgresql_row(db, hash_name, serial)
        row: tuple[object, ...] | None
        with db.cursor() as cursor:
            cursor.execute(_lookup_sql(hash_name), [serial])
            row = cursor.fetchone()
        return row

    if db.in_atomic_block:
        row = ask()
    else:
        db.health_check_done = True  # type: ignore[attr-defined]  # Django's own flag
        try:
            row = ask()
        except (InterfaceError, OperationalError):
            logger.warning("OCSP: database connection broken, asking again on a new one")
            db.close()
            row = ask()
    if row is None:
        return None
    revoked_at, not_after, status, this_update, next_update, der = row
    not_after_value = _aware(not_after)  # type: ignore[arg-type]
    return StoredOcsp(
        revoked=revoked_at is not None,
        expired=not_after_value is not None and not_after_value <= now,
        status=status if isinstance(status, str) else None,
        this_update=_aware(this_update),  # type: ignore[arg-type]
        next_update=_aware(next_update),  # type: ignore[arg-type]
        der=bytes(der) if der is not None else None,  # type: ignore[call-overload]
    )


# --- The issuing CA's own status (whole-chain checking), signed by the root ---------------------


@dataclass(frozen=True)
class CaStatusAnswer:
    """The root's stored answer on one issuing CA certificate (``custody.root_ocsp_path``)."""

    der: bytes
    this_update: datetime
    next_update: datetime


_ca_status_cache: dict[tuple[str, int], CaStatusAnswer] = {}


def ca_status_lookup(*, serial_number: int, hash_name: str) -> CaStatusAnswer | None:
    """The root-signed answer on an issuing CA certificate; None if the root signed none.

    Signed at the root's ceremony (``sign_root_crl``) and copied to web hosts with the
    root CRL: a file, no database. Read once per process and file version.
    """
    path = custody.root_ocsp_path(custody.ca_paths(), serial_number, hash_name)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(path), stamp)
    cached = _ca_status_cache.get(key)
    if cached is not None:
        return cached
    try:
        der = path.read_bytes()
        response = x509_ocsp.load_der_ocsp_response(der)
        this_update = response.this_update_utc
        next_update = response.next_update_utc
    except (OSError, ValueError):
        logger.exception("OCSP: the root's answer at %s is unreadable", path)
        return None
    if next_update is None:
        return None
    answer = CaStatusAnswer(der=der, this_update=this_update, next_update=next_update)
    if len(_ca_status_cache) > 64:  # old versions of replaced files
        _ca_status_cache.clear()
    _ca_status_cache[key] = answer
    return answer


# --- The margin: how long the stored answers carry the service without beat -------------------


def ocsp_alarm_margin(validity: timedelta) -> timedelta:
    """Alarm when the nearest nextUpdate of a stored answer is closer than this.

    In the steady state every answer is re-signed by the age ``_refresh_age`` plus one
    beat period, so at least ``validity - _refresh_age - REFRESH_EVERY`` of it is left
    (125 min with the default 240). The alarm goes off when three more runs have been
    missed (15 min late), and leaves what is left of that margin to mend the workers or
    beat before the answers expire and the responder says tryLater, which relying services
    that hard-fail (the kit's nginx, Apache) turn into refusing every professional.
    """
    return max(validity - _refresh_age(validity) - 4 * REFRESH_EVERY, validity / 4)


def ocsp_answers_earliest_next_update(*, now: datetime) -> datetime | None:
    """The nearest nextUpdate among the stored answers MyCert must keep serving.

    Unexpired certificates only (a certificate past its end is answered unauthorized);
    None when none has an answer. The health probe and /metrics ask every few seconds:
    the live answers' ``next_update`` index is walked from the nearest, each checked for
    its certificate's end by primary key, until one still counts (only the few ended in
    the last hours, not yet marked ``certificate_expired``, come before it).
    """
    earliest: datetime | None = (
        OcspResponse.objects.filter(certificate_expired=False, certificate__not_after__gt=now)
        .order_by("next_update")
        .values_list("next_update", flat=True)
        .first()
    )
    return earliest
