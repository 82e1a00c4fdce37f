"""benchmarks/bulk_load.py: the growth figure's copies look like real issuances.

The growth figure (issue 24 §5) times real issuances on a database grown by copies of
real ones; a copy that breaks a unique column, a delivery's order or the audit chain
would measure a database MyCert never has.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bulk_load import clone_issuances
from mycert.models import AuditEvent, Certificate, CertificateRequest, Delivery, OcspResponse
from mycert.services.audit import audit_verify_chain
from tests.support.keystores import issue

pytestmark = pytest.mark.django_db


def test_copies_have_the_rows_of_an_issuance_and_the_chain_holds(ca: Any) -> None:
    template = issue(legacy=True).record  # with a vendor: four deliveries, two waiting
    assert template is not None
    events = list(AuditEvent.objects.values_list("pk", flat=True))
    deliveries = list(Delivery.objects.filter(certificate=template).order_by("pk"))
    answers = OcspResponse.objects.filter(certificate=template).count()

    written = clone_issuances([template.request_id], 3, events)

    assert written["certificates"] == 3
    assert Certificate.objects.count() == 4
    assert CertificateRequest.objects.filter(status=template.request.status).count() == 4
    assert len(set(Certificate.objects.values_list("serial", flat=True))) == 4
    assert OcspResponse.objects.count() == 4 * answers
    for copy in Certificate.objects.exclude(pk=template.pk):
        assert copy.professional_id != template.professional_id
        assert copy.pem == template.pem
        copied = list(Delivery.objects.filter(certificate=copy))

        def shape(rows: list[Delivery]) -> list[tuple[str, str, str, str | None]]:
            # A delivery that waits for another waits for the same kind of delivery of
            # its own certificate.
            return sorted(
                (
                    d.recipient,
                    d.content,
                    d.status,
                    None if d.after is None else f"{d.after.recipient}/{d.after.content}",
                )
                for d in rows
                if d.after is None or d.after.certificate_id == d.certificate_id
            )

        assert len(copied) == len(deliveries) == 4
        assert shape(copied) == shape(deliveries)
    assert AuditEvent.objects.count() == 4 * len(events)
    assert audit_verify_chain() == (4 * len(events), None)


@pytest.mark.django_db(transaction=True)
def test_the_load_is_vacuumed_before_the_next_batch(ca: Any) -> None:
    """The growth figure's second batch must not pay for the load: the loaded tables are
    VACUUMed before it (autovacuum may be off on a benchmark machine, as it is here)."""
    from django.db import connection

    from benchmarks.bulk_load import settle_after_load

    if connection.vendor != "postgresql":
        pytest.skip("VACUUM and CHECKPOINT are PostgreSQL's (DATABASE_URL=postgres://…)")
    template = issue().record
    assert template is not None
    clone_issuances([template.request_id], 3, list(AuditEvent.objects.values_list("pk", flat=True)))

    settle_after_load()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
            "AND last_vacuum IS NULL",
            [["mycert_certificate", "mycert_delivery", "mycert_auditevent"]],
        )
        assert cursor.fetchall() == []
