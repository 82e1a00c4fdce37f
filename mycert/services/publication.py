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

A re-publication copies the previous CRL's entries as signed bytes and reads in full
only the rows it lacks (none, when PostgreSQL's digest of the listed rows is the one
recorded with the previous CRL), whichever process signed that CRL: what it lists comes
from this process's memory, else from the record another worker process of this host left
(``mycert.crl_state``), else from the stored CRL verified and walked for its serials and
keyCompromise dates; never from the database. The first CRL of an issuing CA is built
from every row (docs/architecture.md « Publishing the CRL »).
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from mycert import custody
from mycert.crl_mark import CrlMarkError, raise_mark, read_mark
from mycert.crl_state import pack, read_state, unpack, write_state
from mycert.models import Certificate, Crl, OperatorAlert
from mycert.pki import RevokedEntry, build_crl, build_next_crl
from mycert.pki.crl import crl_key_compromises
from mycert.pki.evidence import (
    EvidenceError,
    certificate_expired,
    crl_authority_key_id,
    crl_entry,
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


class _Listed:
    """What a CRL lists and the rows it was signed from: its serial numbers, the serial
    (as stored) of each row it was signed from (``None`` for a CRL with no rows of its
    own), and the compromise date of the keyCompromise ones.

    Read back from the host's record (``mycert.crl_state``), they stay packed until first
    used: the hourly re-publication over the same rows (PostgreSQL's digest of them is the
    recorded one) needs none of them and records them again as they were read (~5% of a
    1,000-entry re-publication went to decoding them). The record passed its SHA-256 and
    was packed by :meth:`packed`: decoding it cannot fail but for a defect.
    """

    __slots__ = ("_compromised", "_packed", "_rows", "_serials", "count")

    def __init__(
        self,
        serials: AbstractSet[int],
        rows: AbstractSet[str] | None = None,
        compromised: Mapping[str, datetime | None] | None = None,
    ) -> None:
        self._serials: AbstractSet[int] | None = serials
        self._rows = rows
        self._compromised: Mapping[str, datetime | None] = compromised or {}
        self._packed: bytes | None = None
        #: How many serials the CRL lists.
        self.count = len(serials)

    @classmethod
    def recorded(cls, packed: bytes, count: int) -> _Listed:
        """As read back from the host's record: decoded on first use."""
        listed = cls(frozenset())
        listed._serials, listed._packed, listed.count = None, packed, count
        return listed

    def _decoded(self) -> AbstractSet[int]:
        if self._serials is None:
            if self._packed is None:
                raise AssertionError("neither decoded nor packed")
            serials, rows, compromised = unpack(self._packed)
            self._rows = set(rows)
            self._compromised = {
                serial: _from_micro(value) for serial, value in compromised.items()
            }
            self._serials = frozenset(serials)
        return self._serials

    @property
    def serials(self) -> AbstractSet[int]:
        return self._decoded()

    @property
    def rows(self) -> AbstractSet[str] | None:
        self._decoded()
        return self._rows

    @property
    def compromised(self) -> Mapping[str, datetime | None]:
        self._decoded()
        return self._compromised

    @property
    def has_rows(self) -> bool:
        """Whether it was signed from rows of its own (a record always was)."""
        return self._packed is not None or self._rows is not None

    def packed(self) -> bytes:
        """The record's form, packed once (kept: re-signed over the same rows, written
        again as is)."""
        if self._packed is None:
            rows = self.rows
            if rows is None:
                raise ValueError("a CRL with no rows of its own is not recorded")
            self._packed = pack(
                (
                    list(self.serials),
                    list(rows),
                    {serial: _to_micro(date) for serial, date in self.compromised.items()},
                )
            )
        return self._packed


@dataclass
class RevocationEvidence:
    """What the CA signed before: the serials its latest verified CRL lists."""

    number: int
    this_update: datetime | None
    #: Its serials and the rows it was signed from. Never changed once built (sets the
    #: publication made, not copied: 100k entries).
    listed: _Listed
    #: The CRL itself, signed by the issuing CA in use (verified, or signed by this
    #: process): the next CRL copies its entries. ``None`` when there is none of its
    #: own (no CRL yet, or the previous issuing CA's after a rollover).
    der: bytes | None = field(default=None, repr=False)
    #: Serials it lists without a revoked, unexpired row (tampering, carried forward).
    carried: AbstractSet[int] = field(default=frozenset(), repr=False)
    #: SHA-256 of the rows and their compromise dates (:func:`_rows_digest`): the rows
    #: the next publication finds unchanged when PostgreSQL's digest of them is this one.
    rows_digest: bytes | None = field(default=None, repr=False)
    _crl: x509.CertificateRevocationList | None = field(default=None, repr=False)

    @property
    def serials(self) -> AbstractSet[int]:
        return self.listed.serials

    @property
    def rows(self) -> AbstractSet[str] | None:
        """The serial (as stored) of each row it was signed from: a row not here is new.
        For a CRL only verified (another process signed it), every serial it lists."""
        return self.listed.rows

    @property
    def compromised(self) -> Mapping[str, datetime | None]:
        """Of those, the compromise date of each keyCompromise row: the one change a
        listed revocation may still see (migration 0010, RFC 5280 §5.3.1)."""
        return self.listed.compromised

    def entry(self, serial_number: int) -> RevokedEntry | None:
        """The signed entry (date, reason) of a listed serial number."""
        if serial_number not in self.serials or self.der is None:
            return None
        if self._crl is None:
            self._crl = x509.load_der_x509_crl(self.der)
        return crl_entry(self._crl, serial_number)


_NO_CRL = RevocationEvidence(number=0, this_update=None, listed=_Listed(frozenset()))
# The latest CRL this process signed or verified, by the SHA-256 of its DER: re-signing
# (every revocation, hourly) then costs one digest, not a 100k-entry parse and check.
_evidence_cache: dict[bytes, RevocationEvidence] = {}


def _key_id(issuer: x509.Certificate) -> str:
    return issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def _latest_stored(
    rows_digest_at: datetime | None = None, *, lock: bool = False
) -> tuple[int, int, bytes, bytes | None] | None:
    """``(id, number, SHA-256 of the DER, rows' digest)`` of the stored CRL with the
    highest number.

    On PostgreSQL in one query, the digest computed by the server (no 5 MB transfer);
    with ``rows_digest_at``, the same query also has PostgreSQL compute
    :func:`_rows_digest` of the rows listed at that time (``_listed_digest_sql``: one
    snapshot), else the rows' digest is ``None``, as on other databases. With ``lock``
    (PostgreSQL), the publication lock is taken first, in the same round trip.
    """
    if connection.vendor == "postgresql":
        if rows_digest_at is None:
            sql, params = _LATEST_STORED.format(rows_digest="NULL"), []
        else:
            digest_sql, digest_params = _listed_digest_sql()
            sql = _LATEST_STORED.format(rows_digest=f"({digest_sql})")
            params = _at(rows_digest_at, digest_params)
        if lock:
            # Two statements in one message (the simple query protocol: Django's cursor
            # binds on the client): PostgreSQL runs the SELECT once the lock is held,
            # with a snapshot of its own (READ COMMITTED), so every CRL committed before
            # is seen. One round trip where there were two.
            sql, params = f"SELECT pg_advisory_xact_lock(%s); {sql}", [_CRL_LOCK_ID, *params]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if lock:
                cursor.nextset()
            row = cursor.fetchone()
        if row is None:
            return None
        return row[0], row[1], bytes(row[2]), None if row[3] is None else bytes(row[3])
    latest = Crl.objects.order_by("-number").values_list("pk", "number").first()
    if latest is None:
        return None
    return latest[0], latest[1], hashlib.sha256(_stored_der(latest[0])).digest(), None


# S608: the table's name, from the model; the digest's SQL is _listed_digest_sql().
_LATEST_STORED = f"SELECT id, number, sha256(der), {{rows_digest}} FROM {Crl._meta.db_table} "  # noqa: S608
_LATEST_STORED += "ORDER BY number DESC LIMIT 1"


def _stored_der(crl_id: int) -> bytes:
    return bytes(Crl.objects.filter(pk=crl_id).values_list("der", flat=True).get())


def revocation_evidence(issuer: x509.Certificate) -> RevocationEvidence:
    """The latest stored CRL, verified; raise :class:`PublicationRefused` if it is not evidence.

    Refused: no CRL while this host's mark says one was signed (deleted), a CRL whose
    signature does not verify or whose stored number is not its signed one (forged),
    a signed number below the mark (an older CRL put back).
    """
    return _evidence_and_rows_digest(issuer, None)[0]


def _evidence_and_rows_digest(
    issuer: x509.Certificate, rows_digest_at: datetime | None, *, lock: bool = False
) -> tuple[RevocationEvidence, bytes | None]:
    """:func:`revocation_evidence`, and PostgreSQL's digest of the rows listed at
    ``rows_digest_at`` read with it (``None`` when not asked, without a stored CRL, or
    on other databases); with ``lock``, the latest CRL is read under the publication
    lock (PostgreSQL, in a transaction)."""
    key_id = _key_id(issuer)
    try:
        mark = read_mark(key_id)
    except CrlMarkError as exc:
        raise PublicationRefused(str(exc)) from exc
    # The mark first, as without the lock: a CRL committed between the two reads is
    # then above the mark read, never below it.
    row = _latest_stored(rows_digest_at, lock=lock)
    if row is None:
        if mark is not None:
            raise PublicationRefused(
                f"no CRL is stored, but this worker has signed or verified CRL #{mark}: "
                "the CRLs were deleted from the database"
            )
        return _NO_CRL, None
    crl_id, stored_number, digest, rows_digest = row
    evidence = _evidence_cache.get(digest)
    if evidence is None:
        # Another process on this host signed or verified it: what it recorded.
        evidence = _recorded_evidence(key_id, digest)
        if evidence is not None:
            _evidence_cache.clear()
            _evidence_cache[digest] = evidence
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
            first = RevocationEvidence(
                number=stored_number, this_update=None, listed=_Listed(frozenset())
            )
            return first, rows_digest
        try:
            verified = verify_crl(der, issuer)
        except EvidenceError as exc:
            raise PublicationRefused(
                f"the latest stored CRL #{stored_number} is forged: {exc}"
            ) from exc
        # Signed by another process (or before this one started): the comparison state
        # comes from the verified CRL itself, never from the database. Every serial it
        # lists counts as a row it was signed from (one without a row is then looked
        # at as gone: expired, or carried forward), and its keyCompromise entries'
        # invalidityDate is the date the rows are compared with (RFC 5280 §5.3.1, §5.3.2).
        evidence = RevocationEvidence(
            number=verified.number,
            this_update=verified.this_update,
            listed=_Listed(
                verified.serials,
                {format(serial, "x") for serial in verified.serials},
                {format(serial, "x"): date for serial, date in crl_key_compromises(der).items()},
            ),
            der=der,
            _crl=verified.crl,
        )
        _evidence_cache.clear()
        _evidence_cache[digest] = evidence
        if mark is None or evidence.number >= mark:
            _record_evidence(key_id, digest, evidence)
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
    return evidence, rows_digest


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _to_micro(date: datetime | None) -> int | None:
    return None if date is None else (date - _EPOCH) // _MICROSECOND


def _from_micro(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MICROSECOND


def _record_evidence(key_id: str, digest: bytes, evidence: RevocationEvidence) -> None:
    """Leave what the CRL lists for the other worker processes of this host
    (``mycert.crl_state``): they re-publish over it without parsing it again."""
    if evidence.der is None or not evidence.listed.has_rows:
        return
    write_state(
        key_id,
        evidence.der,
        digest,
        {
            "number": evidence.number,
            "this_update": _to_micro(evidence.this_update),
            "rows_record": evidence.listed.packed(),
            "entries": evidence.listed.count,
            "carried": list(evidence.carried),
            "rows_digest": evidence.rows_digest,
        },
    )


def _recorded_evidence(key_id: str, digest: bytes) -> RevocationEvidence | None:
    """The evidence this host recorded for the CRL whose SHA-256 is ``digest``: a CRL
    one of its worker processes signed or verified, so no signature to verify again.
    Its DER comes from the record too, never from the database."""
    recorded = read_state(key_id, digest)
    if recorded is None:
        return None
    der, state = recorded
    try:
        packed, entries = state["rows_record"], state["entries"]
        if not isinstance(packed, bytes) or not isinstance(entries, int):
            raise TypeError("rows_record or entries")
        return RevocationEvidence(
            number=state["number"],
            this_update=_from_micro(state["this_update"]),
            listed=_Listed.recorded(packed, entries),
            der=der,
            carried=frozenset(state["carried"]),
            rows_digest=state["rows_digest"],
        )
    except (KeyError, TypeError, AttributeError, ValueError, EOFError):
        logger.warning("the recorded state of this CRL is not usable: verifying it")
        return None


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


_Row = tuple[str, datetime | None, str, datetime | None]


def _revoked_rows(now: datetime, serials: Iterable[str] | None = None) -> list[_Row]:
    """``(serial, revoked_at, reason, compromised_at)`` of every row the CRL lists (or of
    those of ``serials`` it lists), in the order the CRL lists them."""
    listed = Certificate.objects.for_crl(now)
    if serials is not None:
        listed = listed.filter(serial__in=list(serials))
    rows = listed.order_by("revoked_at", "serial").values_list(
        "serial", "revoked_at", "revocation_reason", "compromised_at"
    )
    if connection.vendor != "postgresql":
        return list(rows.iterator(chunk_size=5000))
    # Django loads text-format timestamptz values with a Python loader (it pins the time
    # zone), one call per value: two thirds of the time at 100k rows. psycopg's binary
    # loader is C and gives the same aware datetimes in the session's zone (UTC, set by
    # Django), so the same query is read through a binary cursor.
    return _fetch_binary(rows)


def _listed_rows(now: datetime) -> Any:
    return (
        Certificate.objects.for_crl(now)
        .order_by()  # a set: the model's ordering would only add a sort
        .annotate(
            key_compromise=ExpressionWrapper(
                Q(revocation_reason=Certificate.RevocationReason.KEY_COMPROMISE),
                output_field=BooleanField(),
            )
        )
        .values_list("serial", "key_compromise", "compromised_at")
    )


# Compiled once per process with a stand-in for ``now`` (Django's compiler costs more than
# the query itself at 1k rows); the stand-in parameter is replaced on every publication.
_NOW_STAND_IN = datetime(1970, 1, 1, tzinfo=UTC)


@functools.cache
def _listed_sql() -> tuple[str, tuple[Any, ...]]:
    sql, params = _listed_rows(_NOW_STAND_IN).query.sql_with_params()
    if sum(param == _NOW_STAND_IN for param in params) != 1:
        raise AssertionError("the CRL's row query does not take the time once")
    return sql, tuple(params)


def _at(now: datetime, params: tuple[Any, ...]) -> list[Any]:
    """The parameters of a query compiled by :func:`_listed_sql`, with ``now`` in place."""
    return [now if param == _NOW_STAND_IN else param for param in params]


def _listed(now: datetime) -> tuple[set[str], dict[str, datetime | None]]:
    """The serial, as stored, of every row the CRL lists, and the compromise date of the
    keyCompromise ones: one query, no date to load for the others."""
    fetched: list[tuple[str, bool, datetime | None]]
    if connection.vendor == "postgresql":
        sql, params = _listed_sql()
        with _server_bound_cursor() as cursor:
            cursor.execute(sql, _at(now, params), binary=True)
            fetched = cursor.fetchall()
    else:
        fetched = list(_listed_rows(now))
    return (
        {serial for serial, _, _ in fetched},
        {serial: date for serial, key_compromise, date in fetched if key_compromise},
    )


def _rows_digest(rows: Iterable[str], compromised: Mapping[str, datetime | None]) -> bytes:
    """SHA-256 of the listed rows as :func:`_listed` reads them, in the encoding
    :func:`_latest_stored` has PostgreSQL compute: the serials in byte order, each
    keyCompromise one followed by its compromise date in whole seconds (what the CRL's
    invalidityDate keeps, RFC 5280 §5.3.2), joined by commas."""
    parts = []
    for serial in sorted(rows):
        if serial not in compromised:
            parts.append(serial)
            continue
        date = compromised[serial]
        parts.append(f"{serial}:{'' if date is None else calendar.timegm(date.utctimetuple())}")
    return hashlib.sha256(",".join(parts).encode()).digest()


# _rows_digest's encoding, over the rows of _listed_sql(): C collation sorts the hex
# serials as Python's sorted() does, and epoch seconds are what timegm() gives. The rows
# come sorted from the subquery, read in that order from the revoked rows' own index
# (migration 0019), and string_agg joins them as they come, as PostgreSQL documents for
# a sorted subquery (« Aggregate Expressions »): an ORDER BY inside string_agg would sort
# them again (PostgreSQL 15), half the statement's time at 1,000 rows. Should they ever
# come in another order, the digest differs from the recorded one and the rows are read
# (_rows_changed): slower, never wrong.
_DIGEST_OF_LISTED = (
    "SELECT sha256(convert_to(coalesce(string_agg(ordered.part, ','), ''), 'UTF8')) "
    "FROM (SELECT listed.serial || CASE WHEN listed.key_compromise THEN ':' || coalesce("
    "floor(extract(epoch FROM listed.compromised_at))::bigint::text, '') ELSE '' END "
    "FROM ({listed}) AS listed(serial, key_compromise, compromised_at) "
    'ORDER BY listed.serial COLLATE "C") AS ordered(part)'
)


@functools.cache
def _listed_digest_sql() -> tuple[str, tuple[Any, ...]]:
    sql, params = _listed_sql()
    return _DIGEST_OF_LISTED.format(listed=sql), params


def _compromised_of(rows: Iterable[_Row]) -> dict[str, datetime | None]:
    return {
        serial: compromised
        for serial, _, reason, compromised in rows
        if reason == Certificate.RevocationReason.KEY_COMPROMISE
    }


def _fetch_binary(rows: Any) -> list[Any]:
    sql, params = rows.query.sql_with_params()
    with _server_bound_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        fetched: list[Any] = cursor.fetchall()
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

    Adds to ``entries`` and ``listed``; returns the hex serials carried forward
    (tampering).
    """
    _expired, kept = _unlisted(evidence.serials - listed, issuer, now)
    carried: list[str] = []
    for serial in sorted(kept):
        entry = evidence.entry(serial)
        if entry is not None:
            entries.append(entry)
            listed.add(serial)
            carried.append(format(serial, "x"))
    return carried


def _unlisted(
    missing: AbstractSet[int], issuer: x509.Certificate, now: datetime
) -> tuple[set[int], set[int]]:
    """Split the serials the previous CRL lists and the rows no longer do: ``(expired,
    kept)``.

    A serial leaves the CRL only once its certificate has expired (RFC 5280 §3.3), and
    only the CA-signed certificate says when: a row whose ``revoked_at`` or
    ``not_after`` was changed, or which was deleted, keeps its entry (tampering).
    """
    if not missing:
        return set(), set()
    pems = dict(
        Certificate.objects.filter(
            serial__in=[format(serial, "x") for serial in missing]
        ).values_list("serial", "pem")
    )
    expired = set()
    for serial in missing:
        pem = pems.get(format(serial, "x"))
        if pem is not None and certificate_expired(pem, issuer, serial, now):
            expired.add(serial)  # expired: its entry may go (RFC 5280 §3.3)
    return expired, set(missing) - expired


@dataclass
class _Signed:
    """A CRL signed and not yet stored."""

    der: bytes
    this_update: datetime
    listed: _Listed
    #: Serials listed without a revoked, unexpired row (tampering, carried forward).
    carried: AbstractSet[int]
    rows_digest: bytes


def _full_crl(
    ca: custody.LoadedCa,
    evidence: RevocationEvidence,
    number: int,
    now: datetime,
) -> _Signed:
    """Every row encoded again, and what the previous CRL lists that they do not."""
    rows = _revoked_rows(now)
    entries = [
        _entry(serial, revoked_at, reason, compromised_at)
        for serial, revoked_at, reason, compromised_at in rows
        if revoked_at is not None  # always true for for_crl(); narrows the type
    ]
    listed = {entry.serial_number for entry in entries}
    carried = _carry_forward(evidence, entries, listed, ca.issuing.certificate, now)
    # From the rows actually listed, not a separate query: a revocation committed
    # between two statements is either in both or in neither.
    this_update = _this_update(now, evidence, entries)
    crl = build_crl(
        issuer=ca.issuing,
        entries=entries,
        crl_number=number,
        this_update=this_update,
        next_update=this_update + settings.MYCERT_CRL_VALIDITY,
    )
    row_serials = frozenset(serial for serial, *_ in rows)
    compromised = _compromised_of(rows)
    return _Signed(
        der=crl.public_bytes(serialization.Encoding.DER),
        this_update=this_update,
        listed=_Listed(listed, row_serials, compromised),
        carried={int(serial, 16) for serial in carried},
        rows_digest=_rows_digest(row_serials, compromised),
    )


def _next_crl(
    ca: custody.LoadedCa,
    evidence: RevocationEvidence,
    previous_der: bytes,
    number: int,
    now: datetime,
    listed_digest: bytes | None,
) -> _Signed:
    """The previous CRL's entries as signed, minus the expired, plus what the rows say
    that it does not: a new revocation, a reason raised to keyCompromise.

    A listed revocation never changes otherwise (its date is one-way, migration 0010):
    of the rows the previous CRL was signed from, only the serial is read (and the
    compromise date of the keyCompromise ones). The new or changed rows are read in
    full; the serials the previous CRL lists without an unexpired row are looked at
    (expired: dropped; otherwise carried forward, tampering, as in the full rebuild).
    When PostgreSQL's digest of the rows is the one recorded with the previous CRL, not
    even the serials are read, nor what the previous CRL lists decoded (:class:`_Listed`).
    """
    digest = listed_digest if evidence.rows_digest is not None else None
    added: list[RevokedEntry] = []
    re_read: set[int] = set()
    gone: set[int] = set()
    if digest is not None and digest == evidence.rows_digest:
        # The hourly case: the rows are those the previous CRL was signed from (the
        # same serials, the same compromise dates), so none is read and none is new.
        # Any row added, removed or changed, by the services or behind them, changes
        # the digest and takes the path below.
        listed = evidence.listed
        rows_digest = digest
    else:
        previous_rows = evidence.rows
        if previous_rows is None:
            raise AssertionError("a CRL with no rows of its own is rebuilt in full")
        rows, compromised, added, gone = _rows_changed(evidence, previous_rows, now)
        re_read = {entry.serial_number for entry in added}
        rows_digest = _rows_digest(rows, compromised)
        listed = _Listed(evidence.serials, rows, compromised)
    # Serials without their row (none, unless rows went or were tampered with).
    suspects = gone | evidence.carried
    expired, carried = _unlisted(
        suspects & (evidence.serials - re_read) if suspects else set(),
        ca.issuing.certificate,
        now,
    )
    this_update = _this_update(now, evidence, added)
    der = build_next_crl(
        issuer=ca.issuing,
        previous_der=previous_der,
        dropped=expired | (re_read & evidence.serials) if re_read else expired,
        added=added,
        crl_number=number,
        this_update=this_update,
        next_update=this_update + settings.MYCERT_CRL_VALIDITY,
    )
    if expired or added:
        listed = _Listed((evidence.serials - expired) | re_read, listed.rows, listed.compromised)
    return _Signed(
        der=der,
        this_update=this_update,
        listed=listed,
        carried=carried,
        rows_digest=rows_digest,
    )


def _rows_changed(
    evidence: RevocationEvidence, previous_rows: AbstractSet[str], now: datetime
) -> tuple[set[str], dict[str, datetime | None], list[RevokedEntry], set[int]]:
    """Read the listed rows: ``(rows, compromised, added, gone)``, the entries to add
    (new rows, reasons raised to keyCompromise) and the serials of the rows the previous
    CRL was signed from that no longer list."""
    rows, compromised = _listed(now)
    previous_compromised = evidence.compromised
    new = rows - previous_rows
    # Without a new row and as many rows, the rows are the previous ones.
    gone_rows = previous_rows - rows if new or len(rows) != len(previous_rows) else set()
    changed = sorted(
        new
        | {
            serial
            for serial, date in compromised.items()
            if serial not in previous_compromised
            or _to_the_second(previous_compromised[serial]) != _to_the_second(date)
        }
    )
    fetched = [row for chunk in _chunks(changed, 5000) for row in _revoked_rows(now, chunk)]
    added = [
        _entry(serial, revoked_at, reason, compromised_at)
        for serial, revoked_at, reason, compromised_at in fetched
        if revoked_at is not None
    ]
    if len(changed) > 5000:
        added.sort(key=lambda entry: entry.revoked_at)  # stable: each chunk is in order
    # What the next publication compares with: the rows as read; a changed row that
    # the second read missed is left out, so that the next publication reads it again.
    read = {serial for serial, *_ in fetched}
    lost = set(changed) - read
    if lost:
        rows -= lost
        gone_rows |= lost & previous_rows
    for serial in read:
        compromised.pop(serial, None)
    compromised.update(_compromised_of(fetched))
    return rows, compromised, added, {int(serial, 16) for serial in gone_rows}


def _to_the_second(date: datetime | None) -> datetime | None:
    """A compromise date as the CRL's invalidityDate carries it: whole seconds (RFC 5280
    §4.1.2.5.2), so that a date read from a verified CRL compares equal to its row's."""
    return None if date is None else date.replace(microsecond=0)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _this_update(
    now: datetime, evidence: RevocationEvidence, entries: Iterable[RevokedEntry]
) -> datetime:
    """Never earlier than a listed revocation nor than the previous CRL's (RFC 5280
    §5.1.2.4): the previous CRL's entries are not after its own thisUpdate."""
    this_update = max([now, *(entry.revoked_at for entry in entries)])
    if evidence.this_update is not None:
        this_update = max(this_update, evidence.this_update)
    return this_update


def crl_publish(*, now: datetime | None = None, full_rebuild: bool = False) -> Crl:
    """Sign a fresh CRL over every revoked, unexpired certificate and store it.

    CRL numbers only increase (RFC 5280 §5.2.3): the number is taken under a lock. The
    clock is read as the lock is asked for (unless the caller passes ``now``), and
    thisUpdate is never earlier than a listed revocation nor than the previous CRL's:
    a revocation time written by a web host whose clock runs a little ahead of
    this worker's still gets into this CRL, instead of failing it (RFC 5280 §5.1.2.4,
    §5.3.2: an entry's revocationDate is not after the CRL's thisUpdate).

    The previous CRL is the evidence of what was revoked (see the module's docstring):
    :class:`PublicationRefused` when it is missing, forged or older than the mark, after
    alerting security. Its entries are copied as signed, and only the rows it lacks are
    read in full (docs/architecture.md « Publishing the CRL »); ``full_rebuild`` reads
    and encodes every row instead, as the first CRL of an issuing CA does.
    """
    ca = custody.ca_load()
    issuer = ca.issuing.certificate
    try:
        return _publish(ca, issuer, now, full_rebuild=full_rebuild)
    except PublicationRefused as exc:
        logger.error("CRL not published: %s", exc)
        revocation_alert(
            OperatorAlert.Kind.CRL_PUBLICATION_REFUSED,
            {"problem": str(exc)},
            now=now or timezone.now(),
        )
        raise


def _publish(
    ca: custody.LoadedCa, issuer: x509.Certificate, now: datetime | None, *, full_rebuild: bool
) -> Crl:
    postgresql = connection.vendor == "postgresql"
    if now is None:
        # Read as the lock is asked for, in the same round trip as the latest CRL: a
        # publication that waited for the lock still signs a thisUpdate not before the
        # CRL signed meanwhile (_this_update).
        now = timezone.now()
    with transaction.atomic():
        # The lock, the latest CRL and, for the hourly case, the rows' digest: one
        # round trip.
        evidence, listed_digest = _evidence_and_rows_digest(
            issuer, None if full_rebuild else now, lock=postgresql
        )
        number = evidence.number + 1
        if evidence.der is None or not evidence.listed.has_rows or full_rebuild:
            signed = _full_crl(ca, evidence, number, now)
        else:
            signed = _next_crl(ca, evidence, evidence.der, number, now, listed_digest)
        der = signed.der
        next_update = signed.this_update + settings.MYCERT_CRL_VALIDITY
        if postgresql:
            # Django binds parameters on the client: 5 MB of CRL (100k entries) become a
            # 10 MB hex literal that the server parses back. psycopg sends the bytes as
            # one binary parameter instead, in the same transaction.
            record = Crl(
                number=number,
                this_update=signed.this_update,
                next_update=next_update,
                entries=signed.listed.count,
                der=der,
                created_at=timezone.now(),
            )
            with _server_bound_cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {Crl._meta.db_table} "  # noqa: S608
                    "(number, this_update, next_update, entries, der, created_at) "
                    "VALUES (%s, %s, %s, %s, %b, %s) RETURNING id",
                    [
                        number,
                        record.this_update,
                        record.next_update,
                        record.entries,
                        der,
                        record.created_at,
                    ],
                )
                (record.pk,) = cursor.fetchone()
        else:
            record = Crl.objects.create(
                number=number,
                this_update=signed.this_update,
                next_update=next_update,
                entries=signed.listed.count,
                der=der,
            )
        if signed.carried:
            revocation_alert(
                OperatorAlert.Kind.REVOCATION_CLEARED,
                {
                    "serials": [format(serial, "x") for serial in sorted(signed.carried)],
                    "crl_number": number,
                    "previous_number": evidence.number,
                },
                now=now,
            )
    # After commit only: a rolled-back CRL must not leave a mark the database never reaches.
    digest = hashlib.sha256(der).digest()
    evidence = RevocationEvidence(
        number=number,
        this_update=signed.this_update,
        # Re-signed over the same rows (the hourly case): as they were, packed or not.
        listed=signed.listed,
        der=der,
        carried=frozenset(signed.carried),
        rows_digest=signed.rows_digest,
    )
    _evidence_cache.clear()
    _evidence_cache[digest] = evidence
    key_id = _key_id(issuer)
    _raise_mark(key_id, number)
    _record_evidence(key_id, digest, evidence)
    logger.info("CRL %s published with %s entries", record.number, record.entries)
    return record
