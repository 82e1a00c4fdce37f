"""Statements and database round trips per request, counted, not timed.

One request is submitted (``request_submit``) and then issued and sent by the
issuance task, run in this process as a worker runs it (``issue_certificate.apply``:
the same code, the same transactions), against PostgreSQL, an SMTP sink on loopback
and real gpg for the vendor's copy. Every statement Django sends is counted
(``connection.execute_wrapper``), and every transaction (its ``BEGIN`` and ``COMMIT``
are round trips too, which Django does not show as statements). The figures do not
depend on the machine's speed or load: the same code gives the same counts.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mycert_x python -m benchmarks.roundtrips

It creates and drops its own database (``<name>_roundtrips``) beside the one named.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parents[1]


@dataclass
class Count:
    statements: int = 0
    transactions: int = 0
    sql: list[str] = field(default_factory=list)

    def add(self, other: Count) -> None:
        self.statements += other.statements
        self.transactions += other.transactions
        self.sql += other.sql

    @property
    def round_trips(self) -> int:
        # psycopg sends BEGIN before a transaction's first statement and COMMIT at its
        # end, each a round trip of its own.
        return self.statements + 2 * self.transactions


@contextmanager
def counting() -> Iterator[Count]:
    from django.db import connection

    count = Count()

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        count.statements += 1
        count.sql.append(sql)
        return execute(sql, params, many, context)

    original_commit, original_rollback = connection.commit, connection.rollback

    def commit() -> None:
        count.transactions += 1
        original_commit()

    def rollback() -> None:
        count.transactions += 1
        original_rollback()

    connection.commit, connection.rollback = commit, rollback  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield count
    finally:
        del connection.commit, connection.rollback


def _setup(root: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        {
            "MYCERT_CA_DIR": str(root / "ca"),
            "MYCERT_GNUPG_HOME": str(root / "g"),
            "MYCERT_VAR_DIR": str(root / "var"),
            "MYCERT_LOG_LEVEL": "WARNING",
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "MYCERT_CA_KEY_PASSPHRASE": "roundtrips-ca-passphrase",
            "MYCERT_ROOT_KEY_ONLINE": "true",  # a throwaway CA
            "CELERY_BROKER_URL": "memory://",
        }
    )
    from benchmarks.env import OUTBOX_KEY, _proof_issuer

    # Workers seal the keystores and passwords they queue (mycert.sealing).
    os.environ.setdefault("MYCERT_OUTBOX_KEY", OUTBOX_KEY)

    os.environ.update(_proof_issuer())
    for folder in ("g", "v", "var"):
        (root / folder).mkdir(mode=0o700)
    import django

    django.setup()


#: Measured with this script on the commit before the outbox became a leaf and sent a
#: certificate's e-mails as one batch (d4bd9fa): per request, submission included.
BEFORE = {
    "with a vendor copy": {"statements": 57, "transactions": 10, "round trips": 77},
    "without a vendor": {"statements": 39, "transactions": 6, "round trips": 51},
}


def count_per_request(*, vendor: Any, requests: int) -> dict[str, dict[str, float]]:
    """Submit, issue and send ``requests`` requests of each kind; the mean counts of one.

    Needs Django set up, a CA, an SMTP relay in the settings and ``vendor`` (with an
    OpenPGP key). The issuance task runs in this process (``apply``); what it queues
    (retries, supersession) goes to the broker and is not run here.
    """
    from django.utils import timezone

    from benchmarks.common import make_professionals
    from mycert.models import CertificateRequest
    from mycert.services.requests import request_submit
    from mycert.tasks.issuance import issue_certificate
    from tests.support.id_tokens import id_token_for

    results: dict[str, dict[str, float]] = {}
    for label, chosen in (("with a vendor copy", vendor), ("without a vendor", None)):
        totals: list[Count] = []
        for professional in make_professionals(requests, prefix=f"rt{label[:4]}"):
            total = Count()
            with counting() as counted:
                request = request_submit(
                    professional=professional,
                    vendor=chosen,
                    terms_accepted=True,
                    language="fr",
                    now=timezone.now(),
                    id_token=id_token_for(professional),
                )
            total.add(counted)
            with counting() as counted:
                issue_certificate.apply(args=(request.pk,))
            total.add(counted)
            totals.append(total)
            status = CertificateRequest.objects.get(pk=request.pk).status
            if status != CertificateRequest.Status.SENT:
                raise RuntimeError(f"request {request.pk} ended {status}, not sent")
        results[label] = {
            "statements": statistics.mean(c.statements for c in totals),
            "transactions": statistics.mean(c.transactions for c in totals),
            "round trips": statistics.mean(c.round_trips for c in totals),
        }
    return results


def _standalone(requests: int, show: bool) -> dict[str, dict[str, float]]:
    from django.conf import settings
    from django.utils import timezone

    from benchmarks.env import gpg
    from mycert import custody
    from mycert.mail.sink import MailSink
    from mycert.pki import KeyType
    from mycert.services.vendors import vendor_add_confirmed

    custody.ca_create(
        custody.ca_paths(),
        settings.MYCERT_CA_KEY_PASSPHRASE.encode(),
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.EC_P256,
        now=timezone.now(),
    )
    # The key type changes the CPU, not the statements: EC P-256 keys are instant.
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"
    vendor_home = Path(settings.MYCERT_GNUPG_HOME).parent / "v"
    uid = "Support Bench <support@bench-vendor.example.lu>"
    gpg(vendor_home, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y")
    listing = gpg(vendor_home, "--with-colons", "--list-keys", uid).decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    gpg(vendor_home, "--quick-add-key", fingerprint, "cv25519", "encr", "1y")
    vendor = vendor_add_confirmed(  # added on the worker host: in its keyring too
        name="Logiciel Médical SA",
        email="support@bench-vendor.example.lu",
        pgp_key=gpg(vendor_home, "--armor", "--export", fingerprint).decode(),
        legacy_keystore=False,
        actor="system",
        now=timezone.now(),
    )
    with MailSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.host, sink.port
        if show:
            _show(vendor)
        return count_per_request(vendor=vendor, requests=requests)


def _show(vendor: Any) -> None:
    """Print the statements of one request with a vendor copy (to find the next cut)."""
    from django.utils import timezone

    from benchmarks.common import make_professionals
    from mycert.services.requests import request_submit
    from mycert.tasks.issuance import issue_certificate
    from tests.support.id_tokens import id_token_for

    (professional,) = make_professionals(1, prefix="show")
    request = request_submit(
        professional=professional,
        vendor=vendor,
        terms_accepted=True,
        language="fr",
        now=timezone.now(),
        id_token=id_token_for(professional),
    )
    with counting() as counted:
        issue_certificate.apply(args=(request.pk,))
    print(
        "--- one issuance with a vendor copy:",
        *(q[: int(os.environ.get("SHOW_WIDTH", "110"))] for q in counted.sql),
        sep="\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="requests of each kind")
    parser.add_argument("--show", action="store_true", help="print one request's statements")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL to a PostgreSQL database (its name is a prefix)")
    with tempfile.TemporaryDirectory(prefix="mcr", dir="/tmp") as folder:
        _setup(Path(folder))
        from django.db import connection

        connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_roundtrips"
        name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            results = _standalone(args.requests, args.show)
        finally:
            connection.creation.destroy_test_db(name, verbosity=0)
    for label, figures in results.items():
        before = BEFORE[label]
        print(
            f"per request {label}: "
            + ", ".join(
                f"{key} {value:.1f} (before: {before[key]})" for key, value in figures.items()
            )
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
