"""PostgreSQL's own guards for revocations and the record (issue 20 §2, defence in depth).

On the real PostgreSQL only (``DATABASE_URL=postgres://…``): the trigger of migration 0009
and the roles of ``deploy/postgres/roles.sql``, applied as an operator would, under role
names of this test's own (roles belong to the whole cluster).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from mycert.models import AuditEvent, Certificate, Crl
from mycert.services.audit import audit_record
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from mycert.services.revocation import certificate_revoke
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db

ROLES_SQL = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "roles.sql"


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's triggers and roles need PostgreSQL (DATABASE_URL=postgres://…)")


def _revoked(ca: object) -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    certificate_revoke(
        certificate_id=outcome.certificate_id,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now(),
    )
    return Certificate.objects.get(pk=outcome.certificate_id)


def test_the_trigger_refuses_to_clear_change_or_delete_a_revocation(ca: object) -> None:
    record = _revoked(ca)
    for change in ({"revoked_at": None}, {"revoked_at": timezone.now()}):
        with pytest.raises(IntegrityError, match="a revocation is one-way"), transaction.atomic():
            Certificate.objects.filter(pk=record.pk).update(**change)
    with (
        pytest.raises(IntegrityError, match="never deleted"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM mycert_certificate WHERE id = %s", [record.pk])
    record.refresh_from_db()
    assert record.revoked_at is not None
    # What the trigger does not stand in the way of: another column, a raised reason.
    Certificate.objects.filter(pk=record.pk).update(
        expiry_reminders_sent=[7], revocation_reason=Certificate.RevocationReason.KEY_COMPROMISE
    )


@pytest.fixture
def roles() -> Iterator[dict[str, str]]:
    """deploy/postgres/roles.sql applied with role names of this test's own."""
    suffix = secrets.token_hex(4)
    names = {role: f"{role}_t{suffix}" for role in ("mycert_owner", "mycert_web", "mycert_worker")}
    sql = ROLES_SQL.read_text()
    for role, name in names.items():
        sql = sql.replace(role, name)
    with connection.cursor() as cursor:
        cursor.execute(sql)
    try:
        yield names
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            for name in names.values():
                cursor.execute(f"DROP OWNED BY {name}")  # the grants
                cursor.execute(f"DROP ROLE {name}")


def _as(role: str, sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute(sql)


def test_the_web_role_cannot_delete_the_record_nor_write_signatures(
    ca: object, roles: dict[str, str]
) -> None:
    record = _revoked(ca)
    crl_publish()
    audit_record(actor="system", action=AuditEvent.Action.CERTIFICATE_ISSUED)
    web, worker = roles["mycert_web"], roles["mycert_worker"]

    for sql in (
        "DELETE FROM mycert_certificate",
        "DELETE FROM mycert_auditevent",
        "DELETE FROM mycert_crl",
        "DELETE FROM mycert_ocspresponse",
        "UPDATE mycert_auditevent SET details = '{}'",
        "UPDATE mycert_crl SET der = ''",
        "TRUNCATE mycert_auditevent",
        "ALTER TABLE mycert_certificate DISABLE TRIGGER USER",
    ):
        for role in (web, worker):
            if role == worker and sql.startswith("UPDATE mycert_crl"):
                continue  # the worker writes the DER of the CRL it just stored
            with pytest.raises(DatabaseError, match=r"permission denied|must be owner"):
                _as(role, sql)

    # What the pages and the workers need still works.
    _as(web, "SELECT count(*) FROM mycert_certificate")
    _as(web, "UPDATE mycert_professional SET email = email")
    _as(web, "DELETE FROM django_session")
    _as(worker, "UPDATE mycert_ocspresponse SET status = status")
    assert AuditEvent.objects.exists()
    assert Crl.objects.exists()
    assert Certificate.objects.filter(pk=record.pk, revoked_at__isnull=False).exists()
