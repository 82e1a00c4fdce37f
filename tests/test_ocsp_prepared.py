"""The web's OCSP lookup is a server-side prepared statement on PostgreSQL (issue 21 §3).

Django opens psycopg connections with ``prepare_threshold=None``, which turns preparing
off, ``prepare=True`` included: PostgreSQL would parse and plan the lookup on every OCSP
request, several times the cost of running it. The lookup enables preparing for itself
only; Django's own queries stay unprepared (a pooler in transaction mode, a migration,
must not meet prepared statements they did not expect).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from mycert.services.ocsp import ocsp_response_lookup
from tests.support import keystores

pytestmark = pytest.mark.django_db


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [str(row[0]) for row in cursor.fetchall()]


def test_the_lookup_is_prepared_once_per_connection_and_nothing_else_is(ca: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements: PostgreSQL only (SQLite has no server)")
    issued = keystores.issue()
    serial = issued.certificate.serial_number
    for _ in range(3):
        stored = ocsp_response_lookup(serial_number=serial, hash_name="sha1", now=timezone.now())
        assert stored is not None
        assert stored.status == "good"
    # One statement per CertID hash: an earlier test on this kept connection may have
    # prepared the SHA-256 one as well.
    lookups = [s for s in _prepared() if "o.der_sha1 " in s]
    assert len(lookups) == 1, _prepared()
    # Django's own queries are not prepared (its setting is left as it was).
    assert connection.connection.prepare_threshold is None
    assert all("mycert_ocspresponse" in s for s in _prepared())


def _skip_unless_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements: PostgreSQL only (SQLite has no server)")


@pytest.mark.django_db(transaction=True)
def test_a_session_that_lost_the_statement_prepares_it_again(ca: Any) -> None:
    # A pooler's DISCARD ALL between transactions empties the session's statements
    # without a new connection: the lookup prepares its own again, once.
    _skip_unless_postgresql()
    serial = keystores.issue().certificate.serial_number
    assert ocsp_response_lookup(serial_number=serial, hash_name="sha1", now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("DISCARD ALL")
    stored = ocsp_response_lookup(serial_number=serial, hash_name="sha1", now=timezone.now())
    assert stored is not None
    assert stored.status == "good"
    assert len([s for s in _prepared() if "mycert_ocspresponse" in s]) == 1


def test_the_row_is_read_as_the_orm_reads_it(ca: Any) -> None:
    from mycert.models import Certificate, OcspResponse

    issued = keystores.issue()
    record = Certificate.objects.get(serial=format(issued.certificate.serial_number, "x"))
    answer = OcspResponse.objects.get(pk=record.pk)
    for hash_name, der in (("sha1", answer.der_sha1), ("sha256", answer.der_sha256)):
        stored = ocsp_response_lookup(
            serial_number=issued.certificate.serial_number, hash_name=hash_name, now=timezone.now()
        )
        assert stored is not None
        assert (stored.revoked, stored.expired, stored.status) == (False, False, "good")
        assert stored.this_update == answer.this_update
        assert stored.next_update == answer.next_update
        assert stored.der == bytes(der)
    assert ocsp_response_lookup(serial_number=1, hash_name="sha1", now=timezone.now()) is None


@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_is_replaced_and_the_answer_given(
    ca: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A restarted or failed-over database: the kept connection is dead; one more try
    # on a new connection answers (outside a transaction, as the responder asks).
    _skip_unless_postgresql()
    import psycopg

    serial = keystores.issue().certificate.serial_number
    assert ocsp_response_lookup(serial_number=serial, hash_name="sha1", now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    with caplog.at_level("WARNING", logger="mycert.services.ocsp"):
        stored = ocsp_response_lookup(serial_number=serial, hash_name="sha1", now=timezone.now())
    assert stored is not None
    assert stored.status == "good"
    assert "connection broken" in caplog.text
