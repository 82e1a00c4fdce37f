"""An issuance and its e-mails read as many rows with 10 × the certificates (issue 24 §5).

The growth figure (``population.growth.ec-p256``) asks that the time per certificate at
10 × N issued stays within 1.1 × the time at N. Its timing is the machine's; this is the
shape behind it: every statement the worker's task runs for one request (issuance,
sealed outbox rows, the e-mails to a relay, the request closed), on the real PostgreSQL, read
through the cheapest plan that reads rows by index (``tests/test_scale_queries.py``),
must read a handful of rows of each table once the database holds ten times the
issuances. A statement that counts, sorts or filters a growing table would read more.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from benchmarks.bulk_load import clone_issuances
from mycert.models import AuditEvent, CertificateRequest
from mycert.tasks.issuance import issue_certificate
from tests.factories import CertificateRequestFactory
from tests.test_scale_queries import _plan_nodes

pytestmark = pytest.mark.django_db

#: As tests/test_scale_queries.py, but bitmap scans allowed: PostgreSQL reads
#: ``id IN (…) OR after_id IN (…)`` (the outbox's batch) through a BitmapOr of two
#: indexes, the only index path for an OR.
_PLANNER_METHODS_OFF = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")

#: What one issuance may read of any table: its own rows (a request, a certificate, its
#: deliveries, the chain's head), a handful. The grown database holds ~200 issuances:
#: 200 certificates, 400 deliveries, 1,000 audit events.
ROWS_PER_TABLE_AT_MOST = 20

#: Statements whose plan reads rows (INSERTs only add one, checking unique indexes).
_READING = ("SELECT", "UPDATE", "DELETE", "WITH")


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's (DATABASE_URL=postgres://…)")


def _rows_read(sql: str) -> Counter[str]:
    """Rows of each table the statement reads from the heap, run once more and undone."""
    read: Counter[str] = Counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        document = cursor.fetchone()[0]
        transaction.set_rollback(True)  # an UPDATE's EXPLAIN ANALYZE writes
    plan = (json.loads(document) if isinstance(document, str) else document)[0]
    for node in _plan_nodes(plan["Plan"]):
        table = node.get("Relation Name")
        if table is None or node["Node Type"] in ("Index Only Scan", "ModifyTable"):
            continue
        read[table] += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node[
            "Actual Loops"
        ]
    return read


def _one_issuance_reads() -> tuple[Counter[str], int]:
    """Issue and send one request as a worker does; rows read per table, statements."""
    request = CertificateRequestFactory.create()
    with CaptureQueriesContext(connection) as captured:
        issue_certificate.apply(args=(request.pk,))
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.SENT
    read: Counter[str] = Counter()
    with connection.cursor() as cursor:
        for method in _PLANNER_METHODS_OFF:
            cursor.execute(f"SET {method} = off")
    try:
        for query in captured.captured_queries:
            if query["sql"].lstrip().split(None, 1)[0].upper() in _READING:
                read += _rows_read(query["sql"])
    finally:
        with connection.cursor() as cursor:
            for method in _PLANNER_METHODS_OFF:
                cursor.execute(f"RESET {method}")
    return read, len(captured.captured_queries)


def _grow(template_request_ids: list[int], events: list[int], count: int) -> None:
    clone_issuances(template_request_ids, count, events)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh statistics, as autovacuum keeps them


def test_an_issuance_reads_as_many_rows_with_ten_times_the_certificates(
    ca: Any, smtp_settings: Any
) -> None:
    first_event = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    templates = [CertificateRequestFactory.create() for _ in range(2)]
    for template in templates:
        issue_certificate.apply(args=(template.pk,))
    events = list(AuditEvent.objects.filter(pk__gt=first_event).values_list("pk", flat=True))
    template_ids = [t.pk for t in templates]

    _grow(template_ids, events, 18)
    _small, small_statements = _one_issuance_reads()
    _grow(template_ids, events, 180)
    large, large_statements = _one_issuance_reads()

    # On a table of a few dozen rows PostgreSQL may read an index whole, as it should;
    # what must not happen is a statement reading more as the tables grow.
    assert large_statements == small_statements
    assert {t: n for t, n in large.items() if n > ROWS_PER_TABLE_AT_MOST} == {}, (
        f"rows read per table with ~200 issuances: {dict(large)}"
    )
