"""Publish revocation status: sign the CRL from the database (RFC 5280 §5).

A revocation is one-way, whatever the database says later (issue 20 §2). Before it
signs, the worker takes the previous CRL as evidence: its signature must verify with the
issuing CA's key, its number must not be below the high-water mark this host keeps
outside the database (``mycert.crl_mark``), and every unexpired serial it lists is
listed again, even if its row no longer says revoked. A previous CRL that is missing,
forged or older than the mark stops publication and alerts ``MYCERT_SECURITY_EMAIL``;
a revocation cleared in the database is listed anyway and alerts too. The same
evidence keeps OCSP pre-signing from ever answering "good" again
(``mycert.services.ocsp``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from mycert import custody
from mycert.crl_mark import CrlMarkError, raise_mark, read_mark
from mycert.models import Certificate, Crl, OperatorAlert
from mycert.pki import RevokedEntry, build_crl
from mycert.pki.evidence import (
    EvidenceError,
    VerifiedCrl,
    certificate_expired,
    crl_authority_key_id,
    verify_crl,
)
from mycert.services.alerts import operator_alert_create

__all__ = [
    "PublicationRefused",
    "RevocationEvidence",
    "crl_publish",
    "revocation_alert",
    "revocation_evidence",
]

logger = logging.getLogger(__name__)
_CRL_LOCK_ID = 0x6D79_6372_6C00


class PublicationRefused(Exception):
    """The previous CRL is missing, forged or older than this host's high-water mark."""


@dataclass
class RevocationEvidence:
    """What the CA signed before: the serials its latest verified CRL lists."""

    number: int
    this_update: datetime | None
    #: Never changed once built (a set the publication made, not copied: 100k entries).
    serials: AbstractSet[int]
    _verified: VerifiedCrl | None = field(default=None, repr=False)
    _signed: list[RevokedEntry] | None = field(default=None, repr=False)
    _by_serial: dict[int, RevokedEntry] | None = field(default=None, repr=False)

    def entry(self, serial_number: int) -> RevokedEntry | None:
        """The signed entry (date, reason) of a listed serial number."""
        if serial_number not in self.serials:
            return None
        if self._signed is not None:
            if self._by_serial is None:
                self._by_serial = {entry.serial_number: entry for entry in self._signed}
            return self._by_serial.get(serial_number)
        return self._verified.entry(serial_number) if self._verified is not None else None


_NO_CRL = RevocationEvidence(number=0, this_update=None, serials=frozenset())
# The latest CRL this process signed or verified, by the SHA-256 of its DER: re-signing
# (every revocation, hourly) then costs one digest, not a 100k-entry parse and check.
_evidence_cache: dict[bytes, RevocationEvidence] = {}


def _key_id(issuer: x509.Certificate) -> str:
    return issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def _stored_digest(crl_id: int) -> bytes:
    """SHA-256 of a stored CRL's DER, computed by PostgreSQL (no 5 MB transfer)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT sha256(der) FROM {Crl._meta.db_table} WHERE id = %s",  # noqa: S608
                [crl_id],
            )
            return bytes(cursor.fetchone()[0])
    return hashlib.sha256(_stored_der(crl_id)).digest()


def _stored_der(crl_id: int) -> bytes:
    return bytes(Crl.objects.filter(pk=crl_id).values_list("der", flat=True).get())


def revocation_evidence(issuer: x509.Certificate) -> RevocationEvidence:
    """The latest stored CRL, verified; raise :class:`PublicationRefused` if it is not evidence.

    Refused: no CRL while this host's mark says one was signed (deleted), a CRL whose
    signature does not verify or whose stored number is not its signed one (forged),
    a signed number below the mark (an older CRL put back).
    """
    key_id = _key_id(issuer)
    try:
        mark = read_mark(key_id)
    except CrlMarkError as exc:
        raise PublicationRefused(str(exc)) from exc
    row = Crl.objects.order_by("-number").values_list("pk", "number").first()
    if row is None:
        if mark is not None:
            raise PublicationRefused(
                f"no CRL is stored, but this worker has signed or verified CRL #{mark}: "
                "the CRLs were deleted from the database"
            )
        return _NO_CRL
    crl_id, stored_number = row
    digest = _stored_digest(crl_id)
    evidence = _evidence_cache.get(digest)
    if evidence is None:
        der = _stored_der(crl_id)
        claimed = crl_authority_key_id(der)
        if mark is None and claimed is not None and claimed.hex() != key_id:
            # The previous issuing CA's last CRL (a rollover, docs/deploy.md §7): this CA
            # has signed nothing yet, so there is nothing of its own to carry forward.
            # Once it has (the mark), another CA's CRL on top is refused below.
            logger.warning(
                "CRL #%s is another issuing CA's: the first CRL of this CA starts empty",
                stored_number,
            )
            return RevocationEvidence(number=stored_number, this_update=None, serials=frozenset())
        try:
            verified = verify_crl(der, issuer)
        except EvidenceError as exc:
            raise PublicationRefused(
                f"the latest stored CRL #{stored_number} is forged: {exc}"
            ) from exc
        evidence = RevocationEvidence(
            number=verified.number,
            this_update=verified.this_update,
            serials=verified.serials,
            _verified=verified,
        )
        _evidence_cache.clear()
        _evidence_cache[digest] = evidence
    if evidence.number != stored_number:
        raise PublicationRefused(
            f"the CRL stored as #{stored_number} is the signed CRL #{evidence.number}: "
            "an older CRL was put back"
        )
    if mark is not None and evidence.number < mark:
        raise PublicationRefused(
            f"the latest stored CRL is #{evidence.number}, but this worker has signed or "
            f"verified CRL #{mark}: later CRLs were removed from the database"
        )
    if mark is None or evidence.number > mark:
        _raise_mark(key_id, evidence.number)
    return evidence


def _raise_mark(key_id: str, number: int) -> None:
    try:
        raise_mark(key_id, number)
    except CrlMarkError:
        # The CRL stands (it is signed and stored); the next publication reads the mark
        # again and refuses, with the reason, if it is still unusable.
        logger.exception("CRL #%s: the high-water mark could not be raised", number)


def revocation_alert(kind: OperatorAlert.Kind, context: dict[str, Any], *, now: datetime) -> None:
    """E-mail security about tampered revocation state, once a day per message.

    In the caller's transaction when there is one (the CRL that lists a cleared serial
    commits with its alert); the log line is written every time.
    """
    logger.error("revocation evidence: %s %s", kind, context)
    with transaction.atomic():
        alert = operator_alert_create(
            recipient=OperatorAlert.Recipient.SECURITY, kind=kind, context=context
        )
        if (
            OperatorAlert.objects.filter(
                kind=kind, body=alert.body, created_at__gte=now - timedelta(days=1)
            )
            .exclude(pk=alert.pk)
            .exists()
        ):
            # Reported already today: drop this one and its sending (on_commit callbacks
            # of a rolled-back block are discarded).
            transaction.set_rollback(True)


@functools.lru_cache(maxsize=2**17)
def _entry(
    serial: str, revoked_at: datetime, reason: str, compromised_at: datetime | None
) -> RevokedEntry:
    """The CRL entry of one revoked row; the same row gives the same (cached) entry.

    Revocation columns never change once set, and the CRL is re-signed over the same
    rows on every revocation and hourly: reusing the entry (and, in ``build_crl``, its
    DER object) keeps re-signing close to the cost of the signature itself.
    """
    return RevokedEntry(
        serial_number=int(serial, 16),
        revoked_at=revoked_at,
        reason=x509.ReasonFlags(reason) if reason else None,
        invalidity_date=compromised_at,
    )


def _revoked_rows(now: datetime) -> Iterable[tuple[str, datetime | None, str, datetime | None]]:
    """``(serial, revoked_at, reason, compromised_at)`` of every row the CRL lists."""
    rows = Certificate.objects.for_crl(now).values_list(
        "serial", "revoked_at", "revocation_reason", "compromised_at"
    )
    if connection.vendor != "postgresql":
        return rows.iterator(chunk_size=5000)
    # Django loads text-format timestamptz values with a Python loader (it pins the time
    # zone), one call per value: two thirds of the time at 100k rows. psycopg's binary
    # loader is C and gives the same aware datetimes in the session's zone (UTC, set by
    # Django), so the same query is read through a binary cursor.
    sql, params = rows.query.sql_with_params()
    with _server_bound_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        fetched: list[tuple[str, datetime | None, str, datetime | None]] = cursor.fetchall()
    return fetched


@contextlib.contextmanager
def _server_bound_cursor() -> Iterator[Any]:
    """A psycopg cursor on Django's PostgreSQL connection (and transaction) that binds
    parameters on the server: binary parameters and results, which Django's own
    client-binding cursors cannot carry."""
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _carry_forward(
    evidence: RevocationEvidence,
    entries: list[RevokedEntry],
    listed: set[int],
    issuer: x509.Certificate,
    now: datetime,
) -> list[str]:
    """Add back every unexpired serial the previous CRL listed and the rows no longer do.

    A serial leaves the CRL only once its certificate has expired (RFC 5280 §3.3), and
    only the CA-signed certificate says when: a row whose ``revoked_at`` or
    ``not_after`` was changed, or which was deleted, keeps its entry. Adds to
    ``entries`` and ``listed``; returns the hex serials carried forward (tampering).
    """
    missing = evidence.serials - listed
    if not missing:
        return []
    pems = dict(
        Certificate.objects.filter(
            serial__in=[format(serial, "x") for serial in missing]
        ).values_list("serial", "pem")
    )
    carried: list[str] = []
    for serial in sorted(missing):
        pem = pems.get(format(serial, "x"))
        if pem is not None and certificate_expired(pem, issuer, serial, now):
            continue  # expired: its entry may go (RFC 5280 §3.3)
        entry = evidence.entry(serial)
        if entry is not None:
            entries.append(entry)
            listed.add(serial)
            carried.append(format(serial, "x"))
    return carried


def crl_publish(*, now: datetime | None = None) -> Crl:
    """Sign a fresh CRL over every revoked, unexpired certificate and store it.

    CRL numbers only increase (RFC 5280 §5.2.3): the number is taken under a lock. The
    clock is read under that lock too (unless the caller passes ``now``), and
    thisUpdate is never earlier than a listed revocation nor than the previous CRL's:
    a revocation time written by a web host whose clock runs a little ahead of
    this worker's still gets into this CRL, instead of failing it (RFC 5280 §5.1.2.4,
    §5.3.2: an entry's revocationDate is not after the CRL's thisUpdate).

    The previous CRL is the evidence of what was revoked (see the module's docstring):
    :class:`PublicationRefused` when it is missing, forged or older than the mark, after
    alerting security.
    """
    ca = custody.ca_load()
    issuer = ca.issuing.certificate
    try:
        return _publish(ca, issuer, now)
    except PublicationRefused as exc:
        logger.error("CRL not published: %s", exc)
        revocation_alert(
            OperatorAlert.Kind.CRL_PUBLICATION_REFUSED,
            {"problem": str(exc)},
            now=now or timezone.now(),
        )
        raise


def _publish(ca: custody.LoadedCa, issuer: x509.Certificate, now: datetime | None) -> Crl:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CRL_LOCK_ID])
        if now is None:
            now = timezone.now()  # under the lock: after any CRL signed before this one
        evidence = revocation_evidence(issuer)
        entries = [
            _entry(serial, revoked_at, reason, compromised_at)
            for serial, revoked_at, reason, compromised_at in _revoked_rows(now)
            if revoked_at is not None  # always true for for_crl(); narrows the type
        ]
        listed = {entry.serial_number for entry in entries}
        carried = _carry_forward(evidence, entries, listed, issuer, now)
        # From the rows actually listed, not a separate query: a revocation committed
        # between two statements is either in both or in neither.
        this_update = max([now, *(entry.revoked_at for entry in entries)])
        if evidence.this_update is not None:
            this_update = max(this_update, evidence.this_update)
        number = evidence.number + 1
        crl = build_crl(
            issuer=ca.issuing,
            entries=entries,
            crl_number=number,
            this_update=this_update,
            next_update=this_update + settings.MYCERT_CRL_VALIDITY,
        )
        der = crl.public_bytes(serialization.Encoding.DER)
        postgresql = connection.vendor == "postgresql"
        record = Crl.objects.create(
            number=number,
            this_update=this_update,
            next_update=this_update + settings.MYCERT_CRL_VALIDITY,
            entries=len(entries),
            der=b"" if postgresql else der,
        )
        if postgresql:
            # Django binds parameters on the client: 5 MB of CRL (100k entries) become a
            # 10 MB hex literal that the server parses back, 65 of 77 ms. psycopg sends
            # the bytes as one binary parameter instead (same transaction, same row).
            with _server_bound_cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Crl._meta.db_table} SET der = %b WHERE id = %s",  # noqa: S608
                    [der, record.pk],
                )
            record.der = der
        if carried:
            revocation_alert(
                OperatorAlert.Kind.REVOCATION_CLEARED,
                {"serials": carried, "crl_number": number, "previous_number": evidence.number},
                now=now,
            )
    # After commit only: a rolled-back CRL must not leave a mark the database never reaches.
    signed = RevocationEvidence(
        number=number,
        this_update=this_update,
        serials=listed,
        _signed=entries,
    )
    _evidence_cache.clear()
    _evidence_cache[hashlib.sha256(der).digest()] = signed
    _raise_mark(_key_id(issuer), number)
    logger.info("CRL %s published with %s entries", record.number, record.entries)
    return record
