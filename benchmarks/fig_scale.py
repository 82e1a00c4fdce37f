"""Figure 7: MyCert at 100,000 certificates (issue 24 §5): OCSP refresh, beat, the admin.

The rows are loaded with PostgreSQL's ``COPY`` (well under a minute for 100,000
certificates): one professional and one user per certificate, its request (« sent »),
two e-mails to the professional (sent, payload wiped) and two to a vendor for one in
four, one audit event, and one stored OCSP answer. What is real and what is reused:

- a few hundred certificates are really signed by the run's issuing CA (RSA-3072, the
  production profile, one RSA-3072 subject key); every row carries one of their PEMs, with
  its own random 159-bit serial and fingerprint (the rows' sizes are the real ones);
- the stored OCSP answers are a few hundred really signed answers (both CertID hashes)
  reused, with thisUpdate spread evenly over the refresh age, as beat leaves them in the
  steady state; the refresh then signs real answers for every serial it picks;
- 1 % of the certificates are revoked, 15 % expired, the rest valid.

Then, with the rows in place:

1. the OCSP refresh as beat runs it (``ocsp_responses_refresh`` every ``REFRESH_EVERY``),
   a few runs at simulated times: CPU of this process (the worker) and of its PostgreSQL
   backend per run, per hour from the schedule, and the oldest answer each run found;
2. every beat task once, each statement captured and ``EXPLAIN (ANALYZE, BUFFERS)``-ed:
   statements, milliseconds, and whether a plan reads a whole big table (Seq Scan);
3. the admin's certificate list and search through Django's test client, logged in as a
   helpdesk agent with a TOTP code, p95 of 20+ requests each.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from benchmarks.common import Context, Figure, median, percentile
from benchmarks.procs import cpu_seconds

#: Tables whose whole reading on every beat run is a defect (issue 24 §5).
BIG_TABLES = (
    "mycert_certificate",
    "mycert_certificaterequest",
    "mycert_delivery",
    "mycert_auditevent",
    "mycert_ocspresponse",
    "mycert_professional",
    "auth_user",
)
#: Beat tasks run every few minutes or more often (config/settings.py): a whole-table
#: read in one of them is the defect; the hourly and daily ones are reported.
FREQUENT_SECONDS = 900.0
REAL_CERTIFICATES = 200
REVOKED_EVERY = 100  # 1 %
EXPIRED_EVERY = 7  # ~15 %
VENDOR_EVERY = 4


# --- Loading ------------------------------------------------------------------------------


def _copy(table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """``COPY table (columns) FROM STDIN`` through psycopg; return the rows written."""
    from django.db import connection

    connection.ensure_connection()
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _next_id(table: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")  # noqa: S608
        return int(cursor.fetchone()[0])


def _reset_sequences(tables: Iterable[str]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table}))"
            )


def _real_certificates(count: int, now: datetime) -> list[tuple[str, str]]:
    """``count`` certificates really signed by the issuing CA: (PEM, subject)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mycert import custody
    from mycert.pki.profile import ProfessionalIdentity, issue_professional_certificate
    from mycert.services.issuance import professional_profile

    issuer = custody.ca_load().issuing
    profile = professional_profile()
    public_key = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    made = []
    for index in range(count):
        certificate = issue_professional_certificate(
            issuer=issuer,
            public_key=public_key,
            identity=ProfessionalIdentity(
                given_name="Marie",
                family_name=f"Dupont-Schmit {index}",
                professional_id=f"LU-MED-{index:06d}",
                email=f"marie.dupont-schmit.{index}@cabinet-medical.lu",
            ),
            profile=profile,
            now=now,
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        made.append((pem, certificate.subject.rfc4514_string()))
    return made


def _real_answers(count: int, now: datetime) -> list[tuple[bytes, bytes]]:
    """``count`` "good" answers really signed by the responder: (SHA-1, SHA-256 CertID)."""
    from mycert.services.ocsp import _signed

    return [
        (bytes(row.der_sha1), bytes(row.der_sha256))
        for row in (
            _signed(
                certificate_id=0,
                serial=format(secrets.randbits(159) | (1 << 158), "x"),
                answer=_good(),
                now=now,
            )
            for _ in range(count)
        )
    ]


def _good() -> Any:
    from mycert.pki import CertificateStatus, StatusAnswer

    return StatusAnswer(CertificateStatus.GOOD)


# Names as common in Luxembourg as they are alike: a search by a family name alone finds
# hundreds of professionals, as it would at the agency.
GIVEN_NAMES = ("Marie", "Jean", "Luc", "Anne", "Paul", "Sophie", "Marc", "Claire", "Tom", "Lea")
FAMILY_NAMES = (
    "Schmit", "Muller", "Weber", "Wagner", "Hoffmann", "Thill", "Schmitz", "Schroeder",
    "Reuter", "Klein", "Kremer", "Faber", "Schiltz", "Meyer", "Becker", "Majerus", "Welter",
    "Hansen", "Ferreira", "Da Silva", "Dos Santos", "Pereira", "Rodrigues", "Martins",
    "Goncalves", "Lopes", "Kieffer", "Scholtes", "Steichen", "Hermes", "Wirtz", "Back",
    "Jacoby", "Kayser", "Ries", "Zeimet", "Weis", "Lentz", "Bertemes", "Diederich",
)  # fmt: skip


def given_name(index: int) -> str:
    return GIVEN_NAMES[index % len(GIVEN_NAMES)]


def family_name(index: int) -> str:
    first = FAMILY_NAMES[(index // len(GIVEN_NAMES)) % len(FAMILY_NAMES)]
    if index % 3:
        return first
    return f"{first}-{FAMILY_NAMES[(index // 7) % len(FAMILY_NAMES)]}"


def email(index: int) -> str:
    local = f"{given_name(index)}.{family_name(index)}".lower().replace(" ", "")
    return f"{local}.{index}@cabinet-medical.lu"


def load(count: int, now: datetime, answers_as_of: datetime) -> dict[str, Any]:
    """Load ``count`` certificates and everything around them; return what was made.

    The stored answers are as beat leaves them at ``answers_as_of``.
    """
    from django.conf import settings
    from django.contrib.auth.hashers import make_password

    from mycert.models import Vendor
    from mycert.services.notices import EXPIRY_REMINDER_DAYS
    from mycert.services.ocsp import _refresh_age

    started = time.perf_counter()
    real = _real_certificates(REAL_CERTIFICATES, now)
    answers = _real_answers(REAL_CERTIFICATES, now)
    signed_seconds = time.perf_counter() - started
    vendor_id = Vendor.objects.values_list("pk", flat=True).first()
    refresh_age = _refresh_age(settings.MYCERT_OCSP_VALIDITY)

    user0 = _next_id("auth_user")
    professional0 = _next_id("mycert_professional")
    request0 = _next_id("mycert_certificaterequest")
    certificate0 = _next_id("mycert_certificate")
    delivery0 = _next_id("mycert_delivery")
    audit0 = _next_id("mycert_auditevent")
    unusable = make_password(None)
    serials = [format(secrets.randbits(159) | (1 << 158), "x") for _ in range(count)]

    def issued_at(index: int) -> datetime:
        # Spread over the three years of validity; expired ones issued 3+ years ago.
        if index % EXPIRED_EVERY == 0:
            return now - timedelta(days=3 * 365 + 1 + index % 300)
        return now - timedelta(minutes=(index * 15_551) % (3 * 365 * 24 * 60 - 60) + 60)

    _copy(
        "auth_user",
        [
            "id",
            "password",
            "is_superuser",
            "username",
            "first_name",
            "last_name",
            "email",
            "is_staff",
            "is_active",
            "date_joined",
        ],
        (
            (user0 + i, unusable, False, f"scale-{i}", "", "", "", False, True, now)
            for i in range(count)
        ),
    )
    _copy(
        "mycert_professional",
        [
            "id",
            "user_id",
            "oidc_subject",
            "professional_id",
            "given_name",
            "family_name",
            "email",
            "language",
            "created_at",
            "updated_at",
        ],
        (
            (
                professional0 + i,
                user0 + i,
                f"scale-subject-{i}",
                f"LU-MED-{i:06d}",
                given_name(i),
                family_name(i),
                email(i),
                "fr",
                now,
                now,
            )
            for i in range(count)
        ),
    )
    _copy(
        "mycert_certificaterequest",
        [
            "id",
            "professional_id",
            "vendor_id",
            "status",
            "key_type",
            "language",
            "terms_version",
            "terms_accepted_at",
            "vendor_copy_consent",
            "submitted_at",
            "due_at",
            "completed_at",
            "last_error",
            "id_token",
        ],
        (
            (
                request0 + i,
                professional0 + i,
                vendor_id if i % VENDOR_EVERY == 0 else None,
                "sent",
                "rsa-3072",
                "fr",
                "2023-03",
                issued_at(i),
                i % VENDOR_EVERY == 0,
                issued_at(i),
                issued_at(i) + timedelta(days=7),
                issued_at(i) + timedelta(minutes=1),
                "",
                "",
            )
            for i in range(count)
        ),
    )

    def revoked(i: int) -> bool:
        return i % REVOKED_EVERY == 1

    def reminders_sent(not_after: datetime) -> str:
        # As the daily reminders leave them: each threshold crossed before yesterday sent
        # (the day's run then has ~1/1,000 of the certificates to remind, not 1/18).
        left = not_after - now
        sent = [days for days in EXPIRY_REMINDER_DAYS if left < timedelta(days=days - 1)]
        return json.dumps(sent)

    _copy(
        "mycert_certificate",
        [
            "id",
            "request_id",
            "professional_id",
            "serial",
            "subject",
            "issuer",
            "key_type",
            "not_before",
            "not_after",
            "fingerprint_sha256",
            "pem",
            "proof_digest",
            "issued_at",
            "revoked_at",
            "revocation_reason",
            "compromised_at",
            "revocation_comment",
            "revoked_by_id",
            "revoked_via",
            "expiry_reminders_sent",
            "revocation_code_hash",
        ],
        (
            (
                certificate0 + i,
                request0 + i,
                professional0 + i,
                serials[i],
                real[i % len(real)][1],
                "CN=MyCert Issuing CA,O=Agence eSanté,C=LU",
                "rsa-3072",
                issued_at(i),
                issued_at(i) + timedelta(days=3 * 365),
                hashlib.sha256(serials[i].encode()).hexdigest(),
                real[i % len(real)][0],
                hashlib.sha256(f"proof-{serials[i]}".encode()).hexdigest(),
                issued_at(i),
                now - timedelta(days=i % 90 + 1) if revoked(i) else None,
                "keyCompromise" if revoked(i) else "",
                None,
                "Perte de la carte" if revoked(i) else "",
                None,
                "helpdesk" if revoked(i) else "",
                reminders_sent(issued_at(i) + timedelta(days=3 * 365)),
                # An scrypt hash's length: the column's real size.
                "scrypt$16384$8$1$" + secrets.token_hex(48),
            )
            for i in range(count)
        ),
    )

    def deliveries() -> Iterable[Sequence[object]]:
        next_id = delivery0
        for i in range(count):
            contents = [("professional", "keystore"), ("professional", "password")]
            if i % VENDOR_EVERY == 0:
                contents += [("vendor", "keystore"), ("vendor", "password")]
            keystore_id: int | None = None
            for recipient, content in contents:
                after = keystore_id if content == "password" else None
                yield (
                    next_id,
                    certificate0 + i,
                    recipient,
                    content,
                    email(i),
                    vendor_id if recipient == "vendor" else None,
                    "fr",
                    "",
                    None,
                    after,
                    "sent",
                    1,
                    "",
                    None,
                    f"<{next_id}.{serials[i][:12]}@mycert.esante.lu>",
                    f"{serials[i]}:{recipient}:{content}",
                    issued_at(i),
                    issued_at(i),
                    issued_at(i) + timedelta(seconds=30),
                    None,
                    False,
                )
                if content == "keystore":
                    keystore_id = next_id
                next_id += 1

    delivery_count = _copy(
        "mycert_delivery",
        [
            "id",
            "certificate_id",
            "recipient",
            "content",
            "to_email",
            "vendor_id",
            "language",
            "pgp_fingerprint",
            "sealed_payload",
            "after_id",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "message_id",
            "key",
            "created_at",
            "updated_at",
            "sent_at",
            "failure_reported_at",
            "recipient_refused",
        ],
        deliveries(),
    )
    _copy(
        "mycert_auditevent",
        [
            "id",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "details",
            "previous_hash",
            "hash",
            "hash_scheme",
        ],
        (
            (
                audit0 + i,
                issued_at(i),
                "system",
                "certificate.issued",
                "certificate",
                str(certificate0 + i),
                f'{{"serial": "{serials[i]}"}}',
                hashlib.sha256(f"prev-{i}".encode()).hexdigest(),
                hashlib.sha256(f"this-{i}".encode()).hexdigest(),
                "sha256",
            )
            for i in range(count)
        ),
    )

    # The steady state beat keeps: every unexpired certificate's answer between 0 and
    # the refresh age old (a revoked one answered "revoked": the DER is reused, its
    # size is what matters here, and the refresh is not asked to re-sign it early);
    # an expired certificate keeps the last answer signed before its end (rows are
    # never deleted).
    def ocsp_rows() -> Iterable[Sequence[object]]:
        for i in range(count):
            spread = refresh_age * ((i * 7919) % count) / count
            if i % EXPIRED_EVERY == 0:
                this_update = issued_at(i) + timedelta(days=3 * 365) - spread
            else:
                this_update = answers_as_of - spread
            this_update = this_update.replace(microsecond=0)
            sha1, sha256 = answers[i % len(answers)]
            yield (
                certificate0 + i,
                "revoked" if revoked(i) else "good",
                this_update,
                this_update + settings.MYCERT_OCSP_VALIDITY,
                sha1,
                sha256,
                # Marked by beat's refresh once past their end (ocsp_responses_retire_expired).
                i % EXPIRED_EVERY == 0,
            )

    answer_count = _copy(
        "mycert_ocspresponse",
        [
            "certificate_id",
            "status",
            "this_update",
            "next_update",
            "der_sha1",
            "der_sha256",
            "certificate_expired",
        ],
        ocsp_rows(),
    )
    _reset_sequences(
        [
            "auth_user",
            "mycert_professional",
            "mycert_certificaterequest",
            "mycert_certificate",
            "mycert_delivery",
            "mycert_auditevent",
        ]
    )
    from django.db import connection

    # What autovacuum does on a database that has run a while: statistics, the GIN
    # indexes' pending lists merged, the visibility map that index-only reads rely on.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return {
        "certificates": count,
        "deliveries": delivery_count,
        "ocsp_answers": answer_count,
        "audit_events": count,
        "really_signed": REAL_CERTIFICATES,
        "signing_seconds": signed_seconds,
        "load_seconds": time.perf_counter() - started,
    }


# --- 1. The OCSP refresh ----------------------------------------------------------------------


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _oldest_due(now: datetime) -> datetime | None:
    """The oldest thisUpdate among the answers this refresh run is about to replace."""
    from django.db.models import Min

    from mycert.models import OcspResponse
    from mycert.services.ocsp import ocsp_responses_due_ids

    due = ocsp_responses_due_ids(now=now)
    oldest: datetime | None = OcspResponse.objects.filter(pk__in=due).aggregate(
        oldest=Min("this_update")
    )["oldest"]
    return oldest


def measure_refresh(ctx: Context, runs: int, start: datetime) -> dict[str, Any]:
    """``runs`` refresh runs, ``REFRESH_EVERY`` apart in simulated time, as beat runs them."""
    from django.conf import settings

    from mycert.services.ocsp import REFRESH_EVERY, ocsp_alarm_margin, ocsp_responses_refresh

    pid = _backend_pid()
    measured = []
    for run in range(runs):
        now = start + REFRESH_EVERY * (run + 1)
        oldest = _oldest_due(now)
        worker0, database0 = time.process_time(), cpu_seconds(pid)[0]
        wall0 = time.perf_counter()
        signed = ocsp_responses_refresh(now=now)
        wall = time.perf_counter() - wall0
        worker, database = time.process_time() - worker0, cpu_seconds(pid)[0] - database0
        age = (now - oldest).total_seconds() / 60 if oldest is not None else 0.0
        measured.append(
            {
                "signed": signed,
                "worker_cpu_s": worker,
                "database_cpu_s": database,
                "wall_s": wall,
                "worst_age_min": age,
            }
        )
        ctx.say(
            f"scale: refresh run {run + 1}: {signed} answers re-signed in {wall:.2f} s "
            f"(worker {worker:.2f} s CPU, PostgreSQL {database:.2f} s), oldest {age:.0f} min"
        )
    runs_per_hour = timedelta(hours=1) / REFRESH_EVERY
    per_answer = sum(m["worker_cpu_s"] + m["database_cpu_s"] for m in measured) / max(
        1, sum(m["signed"] for m in measured)
    )
    validity = settings.MYCERT_OCSP_VALIDITY
    return {
        "runs": measured,
        "runs_per_hour": runs_per_hour,
        "cpu_per_hour_s": median([m["worker_cpu_s"] + m["database_cpu_s"] for m in measured])
        * runs_per_hour,
        "cpu_per_answer_ms": per_answer * 1000,
        "worst_age_min": max(m["worst_age_min"] for m in measured),
        "validity_min": validity.total_seconds() / 60,
        "alarm_margin_min": ocsp_alarm_margin(validity).total_seconds() / 60,
    }


# --- 2. Beat tasks under EXPLAIN ----------------------------------------------------------------


_SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")


def explain_statements(queries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each captured SELECT under ``EXPLAIN (ANALYZE, BUFFERS)``; writes under plain EXPLAIN."""
    from django.db import connection

    explained = []
    for query in queries:
        sql = query["sql"]
        head = sql.lstrip().split(None, 1)[0].upper()
        if head not in {"SELECT", "UPDATE", "DELETE", "INSERT", "WITH"}:
            continue
        analyze = head in {"SELECT", "WITH"} and "FOR UPDATE" not in sql.upper()
        options = "ANALYZE, BUFFERS, FORMAT TEXT" if analyze else "FORMAT TEXT"
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN ({options}) {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        scanned = sorted({t for t in _SEQ_SCAN.findall(plan) if t in BIG_TABLES})
        explained.append(
            {
                "sql": sql[:400],
                "ms": float(query["time"]) * 1000,
                "seq_scans": scanned,
                "plan": plan[:3000],
            }
        )
    return explained


def beat_tasks() -> dict[str, tuple[float, Callable[[], object]]]:
    """Every beat entry's schedule (seconds) and the task's body, as a worker runs it."""
    from celery import current_app
    from django.conf import settings

    tasks = {}
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        schedule = entry["schedule"]
        seconds = float(schedule) if isinstance(schedule, int | float) else 86_400.0
        task = current_app.tasks[str(entry["task"])]
        tasks[name] = (seconds, task.run)
    return tasks


def measure_beat(ctx: Context) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    results = {}
    for name, (every, run) in beat_tasks().items():
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            try:
                run()
                error = ""
            except Exception as exc:  # reported; the other tasks still run
                error = f"{type(exc).__name__}: {exc}"[:200]
            wall_ms = (time.perf_counter() - started) * 1000
        explained = explain_statements(captured.captured_queries)
        scans = sorted({t for e in explained for t in e["seq_scans"]})
        results[name] = {
            "every_s": every,
            "queries": len(captured.captured_queries),
            "ms": wall_ms,
            "sql_ms": sum(float(q["time"]) * 1000 for q in captured.captured_queries),
            "seq_scans": scans,
            "defect": bool(scans) and every <= FREQUENT_SECONDS,
            "error": error,
            "statements": explained,
        }
        ctx.say(
            f"scale: beat {name} (every {every:.0f} s): {len(captured.captured_queries)} "
            f"statements, {wall_ms:.0f} ms; whole-table reads: {', '.join(scans) or 'none'}"
            + (f"; {error}" if error else "")
        )
    return results


# --- 3. The admin -----------------------------------------------------------------------------


def _agent_client() -> Any:
    """A test client signed in at /admin/ as a helpdesk agent, with a TOTP code."""
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    password = secrets.token_urlsafe(16)
    agent = User.objects.create_user("scale-agent", password=password, is_staff=True)
    agent.groups.add(Group.objects.get(name="Helpdesk"))
    device = TOTPDevice.objects.create(user=agent, name="bench", confirmed=True)
    token = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    client = Client(SERVER_NAME="localhost")
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": agent.username,
            "password": password,
            "otp_device": device.persistent_id,
            "otp_token": f"{token:0{device.digits}d}",
        },
    )
    if response.status_code != 302:
        raise RuntimeError(f"the agent's admin login failed ({response.status_code})")
    return client


def admin_pages(serial: str, given: str, family: str, address: str) -> dict[str, str]:
    """The pages timed: the list's first and 50th page, and three searches as the helpdesk
    types them (a name, an e-mail address, a serial's first 16 digits as e-mails give it)."""
    base = "/admin/mycert/certificate/"
    return {
        "list": base,
        "list_page_50": f"{base}?p=50",
        "search_name": f"{base}?{urlencode({'q': f'{given} {family}'})}",
        "search_email": f"{base}?{urlencode({'q': address})}",
        "search_serial": f"{base}?{urlencode({'q': serial[:16]})}",
    }


def measure_admin(ctx: Context, requests: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mycert.models import Certificate

    client = _agent_client()
    sample = (
        Certificate.objects.select_related("professional")
        .order_by("pk")
        .values_list(
            "serial",
            "professional__given_name",
            "professional__family_name",
            "professional__email",
        )[Certificate.objects.count() // 2]
    )
    results: dict[str, dict[str, Any]] = {}
    for label, url in admin_pages(*sample).items():
        times = []
        client.get(url)  # warm (templates, translations)
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        explained = explain_statements(captured.captured_queries)
        slowest = sorted(explained, key=lambda e: -e["ms"])[:3]
        results[label] = {
            "url": url,
            "p50_ms": percentile(times, 50),
            "p95_ms": percentile(times, 95),
            "queries": len(captured.captured_queries),
            "sql_ms": sum(float(q["time"]) * 1000 for q in captured.captured_queries),
            "seq_scans": sorted({t for e in explained for t in e["seq_scans"]}),
            "slowest": slowest,
        }
        ctx.say(
            f"scale: admin {label}: p95 {results[label]['p95_ms']:.0f} ms, p50 "
            f"{results[label]['p50_ms']:.0f} ms, {len(captured.captured_queries)} statements "
            f"({results[label]['sql_ms']:.0f} ms SQL); whole-table reads: "
            f"{', '.join(results[label]['seq_scans']) or 'none'}"
        )
    return results


# --- The figure ---------------------------------------------------------------------------------

ADMIN_GOAL_MS = 500.0


def run(ctx: Context, plan: dict[str, int]) -> dict[str, Any]:
    from django.conf import settings

    from mycert.services.publication import crl_publish

    count = plan["certificates"]
    now = datetime.now(UTC).replace(microsecond=0)
    # The answers as beat leaves them now; the simulated runs follow, REFRESH_EVERY
    # apart (not before now: the responder's certificate starts at the run's start).
    loaded = load(count, now, answers_as_of=now)
    ctx.say(
        f"scale: {count:,} certificates, {loaded['deliveries']:,} e-mails, "
        f"{loaded['ocsp_answers']:,} OCSP answers loaded in {loaded['load_seconds']:.1f} s "
        f"({loaded['really_signed']} certificates and answers really signed)"
    )
    # A "good" answer is signed only against the latest verified CRL (issue 20 §2).
    crl_publish(now=now)
    refresh = measure_refresh(ctx, plan["refresh_runs"], now)
    beat = measure_beat(ctx)
    admin = measure_admin(ctx, plan["admin_requests"])

    label = f"{count:,} certificates"
    validity = refresh["validity_min"]
    goal_age = validity - refresh["alarm_margin_min"]
    hour_core = 3600.0
    ctx.add(
        Figure(
            key="scale.ocsp_refresh.cpu_per_hour",
            title=f"OCSP refresh at {label}: CPU per hour (worker + PostgreSQL)",
            value=refresh["cpu_per_hour_s"],
            unit="s/h",
            reference=hour_core,
            reference_label="one core for an hour",
            ratio=refresh["cpu_per_hour_s"] / hour_core,
            goal="≤ 10 % of one core",
            met=refresh["cpu_per_hour_s"] <= 0.10 * hour_core,
            runs=len(refresh["runs"]),
            notes=(
                f"{refresh['runs_per_hour']:.0f} runs an hour (every "
                f"{60 / refresh['runs_per_hour']:.0f} min); "
                + ", ".join(f"{m['signed']} answers" for m in refresh["runs"])
                + f" per run; {refresh['cpu_per_answer_ms']:.2f} ms CPU per answer "
                "(two signatures)"
            ),
            details=refresh,
        )
    )
    ctx.add(
        Figure(
            key="scale.ocsp_refresh.worst_age",
            title=f"OCSP refresh at {label}: oldest stored answer before it is re-signed",
            value=refresh["worst_age_min"],
            unit="min",
            reference=validity,
            reference_label="the answers' validity",
            ratio=refresh["worst_age_min"] / validity,
            goal=f"≤ validity − alarm margin ({goal_age:.0f} min)",
            met=refresh["worst_age_min"] <= goal_age,
            runs=len(refresh["runs"]),
            notes=(
                f"validity {validity:.0f} min (MYCERT_OCSP_VALIDITY_MINUTES), alarm margin "
                f"{refresh['alarm_margin_min']:.0f} min; relying parties keep at least "
                f"{validity - refresh['worst_age_min']:.0f} min of every answer"
            ),
        )
    )
    for name, task in beat.items():
        ctx.add(
            Figure(
                key=f"scale.beat.{name}.ms",
                title=f"Beat task {name} at {label} (every {_every(task['every_s'])})",
                value=task["ms"],
                unit="ms",
                reference=task["every_s"] * 1000,
                reference_label="its beat period",
                ratio=task["ms"] / (task["every_s"] * 1000),
                goal=(
                    "no whole-table read"
                    if task["every_s"] <= FREQUENT_SECONDS
                    else "— (hourly or daily: reported)"
                ),
                met=(not task["defect"]) if task["every_s"] <= FREQUENT_SECONDS else None,
                runs=1,
                notes=(
                    f"{task['queries']} statements, {task['sql_ms']:.0f} ms in SQL; "
                    f"Seq Scan on: {', '.join(task['seq_scans']) or 'none'}"
                    + (f"; {task['error']}" if task["error"] else "")
                ),
                details=task,
            )
        )
    lists = [admin["list"], admin["list_page_50"]]
    searches = [admin["search_name"], admin["search_email"], admin["search_serial"]]
    for key, title, group in (
        ("scale.admin.list.p95", "Admin certificate list (page 1 and 50)", lists),
        ("scale.admin.search.p95", "Admin certificate search (name, e-mail, serial)", searches),
    ):
        worst = max(page["p95_ms"] for page in group)
        ctx.add(
            Figure(
                key=key,
                title=f"{title} at {label}, p95",
                value=worst,
                unit="ms",
                reference=ADMIN_GOAL_MS,
                reference_label="the goal",
                ratio=worst / ADMIN_GOAL_MS,
                goal=f"p95 ≤ {ADMIN_GOAL_MS:.0f} ms",
                met=worst <= ADMIN_GOAL_MS,
                runs=plan["admin_requests"],
                notes="; ".join(
                    f"{page['url']}: p95 {page['p95_ms']:.0f} ms, {page['queries']} statements "
                    f"({page['sql_ms']:.0f} ms SQL), Seq Scan on "
                    f"{', '.join(page['seq_scans']) or 'none'}"
                    for page in group
                ),
                details={"pages": group},
            )
        )
    return {
        "loaded": loaded,
        "refresh": refresh,
        "beat": beat,
        "admin": admin,
        "validity_min": settings.MYCERT_OCSP_VALIDITY.total_seconds() / 60,
    }


def _every(seconds: float) -> str:
    if seconds >= 86_400:
        return "day"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"
