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
    lookups = [s for s in _prepared() if "mycert_ocspresponse" in s]
    assert len(lookups) == 1, _prepared()
    # Django's own queries are not prepared (its setting is left as it was).
    assert connection.connection.prepare_threshold is None
    assert all("mycert_ocspresponse" in s for s in _prepared())
