"""Publish revocation status: sign the CRL from the database (RFC 5280 §5)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from mycert import ca_store
from mycert.models import Certificate, Crl
from mycert.pki import RevokedEntry, build_crl

logger = logging.getLogger(__name__)
_CRL_LOCK_ID = 0x6D79_6372_6C00


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


def crl_publish(*, now: datetime | None = None) -> Crl:
    """Sign a fresh CRL over every revoked, unexpired certificate and store it.

    CRL numbers only increase (RFC 5280 §5.2.3): the number is taken under a lock. The
    clock is read under that lock too (unless the caller passes ``now``), and
    thisUpdate is never earlier than a listed revocation nor than the previous CRL's:
    a revocation time written by a web host whose clock runs a little ahead of
    this worker's still gets into this CRL, instead of failing it (RFC 5280 §5.1.2.4,
    §5.3.2: an entry's revocationDate is not after the CRL's thisUpdate).
    """
    ca = ca_store.load_ca()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CRL_LOCK_ID])
        if now is None:
            now = timezone.now()  # under the lock: after any CRL signed before this one
        last = Crl.objects.order_by("-number").values_list("number", "this_update").first()
        last_number = last[0] if last else 0
        entries = [
            _entry(serial, revoked_at, reason, compromised_at)
            for serial, revoked_at, reason, compromised_at in _revoked_rows(now)
            if revoked_at is not None  # always true for for_crl(); narrows the type
        ]
        # From the rows actually listed, not a separate query: a revocation committed
        # between two statements is either in both or in neither.
        this_update = max([now, *(entry.revoked_at for entry in entries)])
        if last is not None:
            this_update = max(this_update, last[1])
        crl = build_crl(
            issuer=ca.issuing,
            entries=entries,
            crl_number=last_number + 1,
            this_update=this_update,
            next_update=this_update + settings.MYCERT_CRL_VALIDITY,
        )
        der = crl.public_bytes(serialization.Encoding.DER)
        postgresql = connection.vendor == "postgresql"
        record = Crl.objects.create(
            number=last_number + 1,
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
    logger.info("CRL %s published with %s entries", record.number, record.entries)
    return record
