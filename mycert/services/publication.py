"""Publish revocation status: sign the CRL from the database (RFC 5280 §5)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connection, transaction

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


def crl_publish(*, now: datetime) -> Crl:
    """Sign a fresh CRL over every revoked, unexpired certificate and store it.

    CRL numbers only increase (RFC 5280 §5.2.3): the number is taken under a lock.
    """
    ca = ca_store.load_ca()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CRL_LOCK_ID])
        last_number = Crl.objects.order_by("-number").values_list("number", flat=True).first() or 0
        rows = Certificate.objects.for_crl(now).values_list(
            "serial", "revoked_at", "revocation_reason", "compromised_at"
        )
        entries = [
            _entry(serial, revoked_at, reason, compromised_at)
            for serial, revoked_at, reason, compromised_at in rows.iterator(chunk_size=5000)
            if revoked_at is not None  # always true for for_crl(); narrows the type
        ]
        crl = build_crl(
            issuer=ca.issuing,
            entries=entries,
            crl_number=last_number + 1,
            this_update=now,
            next_update=now + settings.MYCERT_CRL_VALIDITY,
        )
        record = Crl.objects.create(
            number=last_number + 1,
            this_update=now,
            next_update=now + settings.MYCERT_CRL_VALIDITY,
            entries=len(entries),
            der=crl.public_bytes(serialization.Encoding.DER),
        )
    logger.info("CRL %s published with %s entries", record.number, record.entries)
    return record
