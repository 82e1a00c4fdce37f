"""Beat's frequent queries and the admin's list read what they need, not whole tables.

Issue 24 §5: at 100,000 certificates, a query that reads every certificate (PEMs
included) every few minutes is a defect. On the real PostgreSQL only: the plans are
PostgreSQL's. The planner is told not to use sequential scans, so a plan still reading
every row has no index path; the rows each plan reads from the certificates' table are
counted (``EXPLAIN (ANALYZE, FORMAT JSON)``), which does not depend on the machine's speed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mycert.models import Certificate, OcspResponse, Professional
from mycert.services.ocsp import (
    ocsp_answers_earliest_next_update,
    ocsp_responses_due_ids,
    ocsp_responses_retire_expired,
)
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db

CERTIFICATES = 60
_PLANNER_METHODS_OFF = (
    "enable_seqscan",
    "enable_bitmapscan",
    "enable_hashjoin",
    "enable_mergejoin",
)


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's (DATABASE_URL=postgres://…)")


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def rows_read_from(table: str, run: Callable[[], object]) -> int:
    """Rows of ``table`` that ``run``'s SELECTs read from the heap (index-only reads of
    an index excluded), through the cheapest plan that reads rows by index."""
    with CaptureQueriesContext(connection) as captured:
        run()
    read = 0
    with connection.cursor() as cursor:
        # A test's tables are tiny: PostgreSQL would read them whole whatever the query,
        # as it should. With these off, it reads them whole only when the query leaves
        # no other way, which is what is tested (the query's shape, not the planner's
        # choice at this size). A fresh table also has no visibility map yet: a bitmap
        # scan would read the heap where a vacuumed primary key is read alone.
        for method in _PLANNER_METHODS_OFF:
            cursor.execute(f"SET {method} = off")
        try:
            for query in captured.captured_queries:
                if not query["sql"].lstrip().upper().startswith("SELECT"):
                    continue  # savepoints, the session's own writes
                cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query['sql']}")
                document = cursor.fetchone()[0]
                plan = (json.loads(document) if isinstance(document, str) else document)[0]
                for node in _plan_nodes(plan["Plan"]):
                    if node.get("Relation Name") != table or node["Node Type"] == (
                        "Index Only Scan"
                    ):
                        continue
                    read += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * (
                        node["Actual Loops"]
                    )
        finally:
            for method in _PLANNER_METHODS_OFF:
                cursor.execute(f"RESET {method}")
    return read


def _certificates(count: int, *, ended: bool = False) -> list[Certificate]:
    """Certificates with a fresh stored answer each (rows only: no signing needed); past
    their end if ``ended``, their last answer then signed before it."""
    now = timezone.now() - timedelta(days=2) if ended else timezone.now()
    made = []
    for _ in range(count):
        request = CertificateRequestFactory.create(status="sent")
        serial = format(secrets.randbits(159) | (1 << 158), "x")
        made.append(
            Certificate.objects.create(
                request=request,
                professional=request.professional,
                serial=serial,
                subject="CN=Test",
                issuer="CN=Test CA",
                key_type="ec-p256",
                not_before=now - timedelta(days=700),
                not_after=now + (timedelta(hours=1) if ended else timedelta(days=700)),
                fingerprint_sha256=format(int(serial, 16), "064x"),
                pem="-----BEGIN CERTIFICATE-----\n" + "A" * 1500,
            )
        )
    OcspResponse.objects.bulk_create(
        OcspResponse(
            certificate=certificate,
            status=OcspResponse.Status.GOOD,
            this_update=now,
            next_update=now + timedelta(hours=4),
            der_sha1=b"answer",
            der_sha256=b"answer",
        )
        for certificate in made
    )
    _analyze()
    return made


def _analyze() -> None:
    """Fresh statistics, as autovacuum keeps them."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mycert_certificate")
        cursor.execute("ANALYZE mycert_ocspresponse")


def test_the_ocsp_refresh_reads_the_certificates_due_not_all_of_them() -> None:
    certificates = _certificates(CERTIFICATES)
    ended = _certificates(CERTIFICATES // 2, ended=True)
    ageing, unanswered = certificates[0], certificates[1]
    OcspResponse.objects.filter(certificate=ageing).update(
        this_update=timezone.now() - timedelta(hours=3)
    )
    OcspResponse.objects.filter(certificate=unanswered).delete()
    now = timezone.now()
    # What the refresh does first: the answers of ended certificates leave its index.
    assert ocsp_responses_retire_expired(now=now) == len(ended)
    assert ocsp_responses_retire_expired(now=now) == 0
    _analyze()

    assert ocsp_responses_due_ids(now=now) == sorted([ageing.pk, unanswered.pk])
    # Each due certificate is read once or twice (found, then checked for its end date);
    # before issue 24 one OR across the join read all of them, and the answers of every
    # certificate that ever ended stayed in the ageing range.
    assert rows_read_from("mycert_certificate", lambda: ocsp_responses_due_ids(now=now)) <= 4


def test_the_health_probe_reads_the_nearest_answer_not_all_of_them() -> None:
    certificates = _certificates(CERTIFICATES)
    ended = _certificates(CERTIFICATES // 2, ended=True)
    nearest = certificates[3]
    OcspResponse.objects.filter(certificate=nearest).update(
        next_update=timezone.now() + timedelta(minutes=90)
    )
    now = timezone.now()
    ocsp_responses_retire_expired(now=now)
    _analyze()

    expected = OcspResponse.objects.get(certificate=nearest).next_update
    assert ocsp_answers_earliest_next_update(now=now) == expected
    # The probe runs every few seconds: before issue 24 it joined every answer to its
    # certificate; now it reads the nearest live answer's certificate.
    read = rows_read_from("mycert_certificate", lambda: ocsp_answers_earliest_next_update(now=now))
    assert read <= 5 < len(ended)


def test_the_admin_search_reads_the_certificates_it_finds_not_all_of_them(
    helpdesk: Client,
) -> None:
    certificates = _certificates(CERTIFICATES)
    wanted = certificates[7]
    Professional.objects.filter(pk=wanted.professional_id).update(
        email="dr.weber@cabinet.lu", family_name="Weber"
    )
    changelist = reverse("admin:mycert_certificate_changelist")

    def search() -> Any:
        return helpdesk.get(changelist, {"q": "dr.weber@cabinet.lu"})

    response = search()
    assert [row.pk for row in response.context["cl"].result_list] == [wanted.pk]
    # The page, its count and its filters read the one certificate found (a few reads
    # each); before issue 24 the search's OR across the join to professionals, the
    # list of years and the vendor filter each read every certificate.
    assert rows_read_from("mycert_certificate", search) <= 6


def test_the_admin_search_still_finds_by_name_parts_serial_prefix_and_fingerprint(
    helpdesk: Client,
) -> None:
    first, second = _certificates(2)
    Professional.objects.filter(pk=first.professional_id).update(
        given_name="Claire", family_name="Weber-Kieffer"
    )
    changelist = reverse("admin:mycert_certificate_changelist")

    def found(term: str) -> set[int]:
        response = helpdesk.get(changelist, {"q": term})
        return {row.pk for row in response.context["cl"].result_list}

    assert found("kieff") == {first.pk}
    assert found("claire weber") == {first.pk}
    assert found("claire schmit") == set()
    assert found(second.serial[:16].upper()) == {second.pk}
    fingerprint = second.fingerprint_sha256
    spaced = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    assert found(spaced) == {second.pk}
