"""The two ways ``crl_publish`` signs a CRL list the same entries, in the same bytes.

A re-publication copies the previous CRL's entries as signed and reads in full only the
rows it lacks; a full rebuild (the first CRL of an issuing CA, a CRL another process
signed) reads and encodes every row. Real CA, real rows, pyca and the DER itself.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from mycert import crl_state
from mycert.models import Certificate, Crl, OperatorAlert
from mycert.pki.crl import _tbs_fields
from mycert.services import publication
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from mycert.services.revocation import certificate_revoke
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db


def _issue() -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _revoke(record: Certificate, reason: str, seconds_ago: int) -> None:
    now = timezone.now()
    certificate_revoke(
        certificate_id=record.pk,
        reason=reason,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=now - timedelta(seconds=seconds_ago),
        compromised_at=(
            now - timedelta(days=1)
            if reason == Certificate.RevocationReason.KEY_COMPROMISE
            else None
        ),
    )


def _revoked_bytes(crl: Crl) -> bytes:
    """The DER of the CRL's revokedCertificates (RFC 5280 §5.1.2.6), b"" when absent."""
    der = bytes(crl.der)
    _, revoked, _ = _tbs_fields(der)
    return b"" if revoked is None else der[revoked[0] : revoked[1]]


def _listed(crl: Crl) -> set[int]:
    return {entry.serial_number for entry in x509.load_der_x509_crl(bytes(crl.der))}


def test_a_re_publication_lists_what_a_full_rebuild_lists_byte_for_byte(ca: Any) -> None:
    first, second, third, fourth = (_issue() for _ in range(4))
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 30)
    _revoke(second, Certificate.RevocationReason.KEY_COMPROMISE, 20)
    crl_publish()
    _revoke(third, Certificate.RevocationReason.UNSPECIFIED, 10)
    _revoke(fourth, Certificate.RevocationReason.KEY_COMPROMISE, 5)

    republished = crl_publish()
    rebuilt = crl_publish(full_rebuild=True)

    assert _listed(republished) == {r.serial_number for r in (first, second, third, fourth)}
    assert _revoked_bytes(republished) == _revoked_bytes(rebuilt)
    assert republished.entries == rebuilt.entries == 4
    # Nothing new since: the same entries again, copied.
    assert _revoked_bytes(crl_publish()) == _revoked_bytes(rebuilt)


def test_a_crl_another_process_signed_is_verified_and_rebuilt_from_the_rows(ca: Any) -> None:
    first, second = _issue(), _issue()
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 10)
    signed_here = crl_publish()
    # Another worker process signed it: this one has only the stored CRL to verify.
    publication._evidence_cache.clear()
    _revoke(second, Certificate.RevocationReason.SUPERSEDED, 5)

    after = crl_publish()

    assert after.number == signed_here.number + 1
    assert _listed(after) == {first.serial_number, second.serial_number}
    assert _revoked_bytes(crl_publish()) == _revoked_bytes(after)


def _raise_to_key_compromise(record: Certificate, *, days_ago: int) -> datetime:
    """The reason of a revoked row raised to keyCompromise (RFC 5280 §5.3.1; migration
    0010 lets the reason change, never the date); returns the compromise date."""
    compromised_at = timezone.now() - timedelta(days=days_ago)
    Certificate.objects.filter(pk=record.pk).update(
        revocation_reason=Certificate.RevocationReason.KEY_COMPROMISE,
        compromised_at=compromised_at,
    )
    return compromised_at


def _invalidity_date(entry: x509.RevokedCertificate) -> datetime:
    return entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc


def test_a_reason_raised_to_key_compromise_is_listed_again(ca: Any) -> None:
    first, second = _issue(), _issue()
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 10)
    _revoke(second, Certificate.RevocationReason.SUPERSEDED, 5)
    crl_publish()
    compromised_at = _raise_to_key_compromise(first, days_ago=2)

    crl = x509.load_der_x509_crl(bytes(crl_publish().der))

    entry = crl.get_revoked_certificate_by_serial_number(first.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert _invalidity_date(entry) == compromised_at.replace(microsecond=0)
    assert len(list(crl)) == 2
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()


def test_a_deleted_row_stays_listed_on_every_re_publication(ca: Any) -> None:
    record, other = _issue(), _issue()
    _revoke(record, Certificate.RevocationReason.KEY_COMPROMISE, 10)
    crl_publish()
    # Behind the services, as a superuser who switched migration 0010's trigger off.
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    Certificate.objects.filter(pk=record.pk).update(revoked_at=None, revocation_reason="")
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")

    assert record.serial_number in _listed(crl_publish())
    _revoke(other, Certificate.RevocationReason.SUPERSEDED, 1)
    assert _listed(crl_publish()) == {record.serial_number, other.serial_number}
    assert OperatorAlert.objects.filter(kind="revocation_cleared").exists()


def _another_process() -> None:
    """What a worker that did not sign the previous CRL has in memory: nothing of it."""
    publication._evidence_cache.clear()
    publication._entry.cache_clear()


def _another_host() -> None:
    """A worker on another host: nothing in memory, no state recorded on its disk."""
    _another_process()
    for recorded in Path(settings.MYCERT_CRL_HIGH_WATER_FILE).parent.glob("crl-state-*"):
        recorded.unlink()


@pytest.mark.parametrize("elsewhere", [_another_process, _another_host])
def test_another_process_re_publishes_over_the_verified_crl_without_a_full_rebuild(
    ca: Any, monkeypatch: pytest.MonkeyPatch, elsewhere: Callable[[], None]
) -> None:
    first, second, third, fourth = (_issue() for _ in range(4))
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 30)
    _revoke(second, Certificate.RevocationReason.KEY_COMPROMISE, 20)
    _revoke(third, Certificate.RevocationReason.KEY_COMPROMISE, 15)
    crl_publish()
    _revoke(fourth, Certificate.RevocationReason.UNSPECIFIED, 5)
    elsewhere()
    read_in_full: list[int] = []
    real_revoked_rows = publication._revoked_rows

    def revoked_rows(now: Any, serials: Any = None) -> Any:
        rows = real_revoked_rows(now, serials)
        read_in_full.extend(int(serial, 16) for serial, *_ in rows)
        return rows

    with monkeypatch.context() as patched:
        patched.setattr(publication, "_full_crl", None)  # calling it fails the test
        patched.setattr(publication, "_revoked_rows", revoked_rows)
        republished = crl_publish()

    # Only the row the previous CRL lacks is read in full; the keyCompromise rows'
    # dates match the previous CRL's invalidityDate (RFC 5280 §5.3.2) to the second.
    assert read_in_full == [fourth.serial_number]
    _another_process()
    rebuilt = crl_publish(full_rebuild=True)
    assert _revoked_bytes(republished) == _revoked_bytes(rebuilt)
    assert republished.entries == 4
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()


@pytest.mark.parametrize("elsewhere", [_another_process, _another_host])
def test_another_process_keeps_a_deleted_row_listed(ca: Any, elsewhere: Callable[[], None]) -> None:
    record, other = _issue(), _issue()
    _revoke(record, Certificate.RevocationReason.KEY_COMPROMISE, 10)
    crl_publish()
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    Certificate.objects.filter(pk=record.pk).update(revoked_at=None, revocation_reason="")
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
    _revoke(other, Certificate.RevocationReason.SUPERSEDED, 1)
    elsewhere()

    assert _listed(crl_publish()) == {record.serial_number, other.serial_number}
    assert OperatorAlert.objects.filter(kind="revocation_cleared").exists()
    elsewhere()
    assert _listed(crl_publish()) == {record.serial_number, other.serial_number}


def test_a_recorded_state_for_another_crl_or_damaged_is_not_used(ca: Any) -> None:
    first, second = _issue(), _issue()
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 10)
    crl_publish()
    (recorded,) = Path(settings.MYCERT_CRL_HIGH_WATER_FILE).parent.glob("crl-state-*")
    content = bytearray(recorded.read_bytes())
    content[-1] ^= 1
    recorded.write_bytes(bytes(content))
    _revoke(second, Certificate.RevocationReason.SUPERSEDED, 5)
    _another_process()

    # The stored CRL verified instead; its state recorded again, for the next process.
    assert _listed(crl_publish()) == {first.serial_number, second.serial_number}
    assert recorded.read_bytes() != bytes(content)


def test_an_hourly_re_publication_with_no_row_changed_reads_no_row(
    ca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most publications are the hourly one, with nothing revoked since: PostgreSQL
    compares one digest of the listed rows with the previous CRL's, and no row is read."""
    if connection.vendor != "postgresql":
        pytest.skip("the rows' digest is computed by PostgreSQL")
    first, second, third, fourth = (_issue() for _ in range(4))
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 30)
    _revoke(second, Certificate.RevocationReason.KEY_COMPROMISE, 20)
    _revoke(third, Certificate.RevocationReason.KEY_COMPROMISE, 15)
    # A compromise date with microseconds, one without a date, a non-keyCompromise row
    # with a date: each as the rows' digest must encode it to match Python's.
    Certificate.objects.filter(pk=second.pk).update(
        compromised_at=timezone.now() - timedelta(days=3, microseconds=123_457)
    )
    Certificate.objects.filter(pk=third.pk).update(compromised_at=None)
    Certificate.objects.filter(pk=first.pk).update(compromised_at=timezone.now())
    signed = crl_publish()
    read: list[str] = []
    for name in ("_listed", "_revoked_rows"):
        real = getattr(publication, name)

        def spy(*args: Any, real: Any = real, name: str = name) -> Any:
            read.append(name)
            return real(*args)

        monkeypatch.setattr(publication, name, spy)

    in_this_process = crl_publish()
    _another_process()
    in_another_process = crl_publish()

    assert read == []
    assert _revoked_bytes(in_this_process) == _revoked_bytes(signed)
    assert _revoked_bytes(in_another_process) == _revoked_bytes(signed)
    # A revocation changes the digest: the rows are read again, the new one listed.
    _revoke(fourth, Certificate.RevocationReason.UNSPECIFIED, 1)
    assert _listed(crl_publish()) == {r.serial_number for r in (first, second, third, fourth)}
    assert read == ["_listed", "_revoked_rows"]
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()


def test_a_row_changed_behind_the_services_is_seen_after_a_re_publication_that_read_none(
    ca: Any,
) -> None:
    record, other = _issue(), _issue()
    _revoke(record, Certificate.RevocationReason.SUPERSEDED, 10)
    _revoke(other, Certificate.RevocationReason.KEY_COMPROMISE, 5)
    crl_publish()
    crl_publish()  # nothing changed
    compromised_at = _raise_to_key_compromise(record, days_ago=5)

    crl = x509.load_der_x509_crl(bytes(crl_publish().der))

    entry = crl.get_revoked_certificate_by_serial_number(record.serial_number)
    assert entry is not None
    assert _invalidity_date(entry) == compromised_at.replace(microsecond=0)


def test_postgresql_stores_the_crl_uncompressed(ca: Any) -> None:
    """A CRL's DER barely compresses, but pglz tries it on every stored CRL (~6 ms of a
    10,000-entry publication) and undoes it on every read: stored as is (migration 0018)."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    crl = crl_publish()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = 'mycert_crl'::regclass AND attname = 'der'"
        )
        assert cursor.fetchone() == ("e",)
        cursor.execute("SELECT pg_column_compression(der) FROM mycert_crl WHERE id = %s", [crl.pk])
        assert cursor.fetchone() == (None,)


@contextlib.contextmanager
def _round_trips(tmp_path: Path) -> Iterator[list[str]]:
    """The messages this connection sent that wait for the server's answer: a ``Sync``
    (the end of an extended-protocol exchange, or of a pipeline) or a simple ``Query``,
    as libpq's own trace shows them (PQtrace). Several statements sent before one Sync
    share its round trip."""
    from psycopg import pq

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    trace = tmp_path / "libpq.trace"
    waits: list[str] = []
    with trace.open("w") as handle:
        pgconn.trace(handle.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield waits
        finally:
            pgconn.untrace()
    sent: list[str] = []
    for line in trace.read_text().splitlines():
        direction, _length, message, *text = line.split("\t")
        if direction != "F":
            continue
        quoted = "\t".join(text).split('"')
        if message == "Query":  # "SQL", one statement or several
            statements = (part.strip() for part in quoted[1].split(";"))
            sent.append(" ; ".join(part.split(" ")[0] for part in statements if part))
        elif message == "Parse":  # "statement name" "SQL"
            sent.append(quoted[3].split(" ")[0])
        if message in ("Sync", "Query"):
            waits.append(" + ".join(sent))
            sent = []


@pytest.mark.django_db(transaction=True)
def test_an_hourly_re_publication_reads_the_latest_crl_and_the_rows_digest_at_once(
    ca: Any, tmp_path: Path
) -> None:
    """The hourly re-publication is mostly fixed costs, waits on PostgreSQL among them
    (issue 24 §4, 1,000 entries): the latest CRL and the digest of the listed rows come
    back from one statement, in one snapshot, sent with the lock: PostgreSQL runs the
    two one after the other, the second with a snapshot taken once the lock is held."""
    if connection.vendor != "postgresql":
        pytest.skip("round trips to a database server")
    record = _issue()
    _revoke(record, Certificate.RevocationReason.SUPERSEDED, 10)
    crl_publish()
    _another_process()  # as production meets it: any worker child

    with _round_trips(tmp_path) as waits:
        republished = crl_publish()

    assert _listed(republished) == {record.serial_number}
    assert waits == ["BEGIN", "SELECT ; SELECT", "INSERT", "COMMIT"]


@pytest.mark.django_db(transaction=True)
def test_publications_at_the_same_moment_take_their_turn_and_number_in_sequence(
    ca: Any,
) -> None:
    """Each publication reads the latest CRL once it holds the lock: started together,
    each signs the number after the one before it, none fails (RFC 5280 §5.2.3)."""
    if connection.vendor != "postgresql":
        pytest.skip("the publication lock is PostgreSQL's")
    record = _issue()
    _revoke(record, Certificate.RevocationReason.SUPERSEDED, 10)
    first = crl_publish()
    publishers = 4
    start = threading.Barrier(publishers)
    failures: list[BaseException] = []

    def publish() -> None:
        try:
            start.wait()
            crl_publish()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=publish) for _ in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    numbers = sorted(Crl.objects.values_list("number", flat=True))
    assert numbers == list(range(first.number, first.number + publishers + 1))
    assert all(_listed(crl) == {record.serial_number} for crl in Crl.objects.all())


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_the_rows_digest_reads_the_revoked_rows_in_order_from_their_own_index(ca: Any) -> None:
    """The hourly re-publication's digest of the listed rows (issue 24 §4): PostgreSQL
    reads them in the digest's order from an index of the revoked rows alone, with what
    the digest needs in it, so that it neither sorts them nor visits the table, and
    the unrevoked certificates are not looked at."""
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    for reason, seconds_ago in (
        (Certificate.RevocationReason.SUPERSEDED, 30),
        (Certificate.RevocationReason.KEY_COMPROMISE, 20),
    ):
        _revoke(_issue(), reason, seconds_ago)
    _issue()  # not revoked
    sql, params = publication._listed_digest_sql()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mycert_certificate")  # as autovacuum keeps it in production
        # A test's table is tiny: PostgreSQL would read it whole whatever the indexes.
        # With these off, it does so only when no index fits, which is what is tested.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(
            f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", publication._at(timezone.now(), params)
        )
        document = cursor.fetchone()[0]
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    nodes = list(_plan_nodes(plan))

    scans = [node for node in nodes if node.get("Relation Name") == "mycert_certificate"]
    assert [(node["Node Type"], node.get("Index Name")) for node in scans] == [
        ("Index Only Scan", "certificate_crl_listed")
    ]
    assert not [node for node in nodes if node["Node Type"] in ("Sort", "Incremental Sort")]
    # Nor does the aggregate sort its input itself (string_agg(… ORDER BY …)).
    (aggregate,) = (node for node in nodes if node["Node Type"] == "Aggregate")
    assert not any("ORDER BY" in output for output in aggregate["Output"])
    # The same digest as Python's, from the same rows.
    with connection.cursor() as cursor:
        cursor.execute(sql, publication._at(timezone.now(), params))
        (digest,) = cursor.fetchone()
    assert bytes(digest) == publication._rows_digest(*publication._listed(timezone.now()))


def test_an_hourly_re_publication_in_another_process_decodes_none_of_the_recorded_rows(
    ca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's record of the previous CRL (``mycert.crl_state``) holds what it lists,
    packed. When PostgreSQL's digest says the rows are those it was signed from, the
    re-publication needs none of them (issue 24 §4: decoding 1,000 was ~5% of it): the
    record is written again as it was read. A changed row decodes them, and is listed."""
    if connection.vendor != "postgresql":
        pytest.skip("the rows' digest is computed by PostgreSQL")
    first, second, third = _issue(), _issue(), _issue()
    _revoke(first, Certificate.RevocationReason.SUPERSEDED, 30)
    _revoke(second, Certificate.RevocationReason.KEY_COMPROMISE, 20)
    signed = crl_publish()
    decoded: list[bytes] = []
    real_unpack = crl_state.unpack

    def spy(packed: bytes) -> Any:
        decoded.append(packed)
        return real_unpack(packed)

    monkeypatch.setattr(publication, "unpack", spy)

    _another_process()
    hourly = crl_publish()
    _another_process()
    hourly_again = crl_publish()  # from the record the previous one wrote

    assert decoded == []
    assert hourly.entries == hourly_again.entries == 2
    assert _revoked_bytes(hourly) == _revoked_bytes(hourly_again) == _revoked_bytes(signed)
    _revoke(third, Certificate.RevocationReason.UNSPECIFIED, 1)
    _another_process()
    after = crl_publish()
    assert len(decoded) == 1
    assert _listed(after) == {first.serial_number, second.serial_number, third.serial_number}
    # And what it recorded serves the next process, which decodes nothing again.
    _another_process()
    assert _revoked_bytes(crl_publish()) == _revoked_bytes(after)
    assert len(decoded) == 1
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()
