"""Where a worker's CPU goes per certificate: cProfile of the issuance task, in-process.

N requests (half with a vendor whose copies are OpenPGP-encrypted, as in the population
figure) are submitted, then each is issued and sent by the issuance task run in this
process as a worker runs it (``issue_certificate.apply``: the same code, the same
transactions), against PostgreSQL, an SMTP sink on loopback (a thread of this process,
outside the profile) and real gpg. The profile covers the task only, not the
submissions. It prints the CPU per certificate (this process's, and gpg's as its
children), the bare cryptography inside it, and the functions that cost the most, by
own time and by cumulative time, per certificate:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mycert_x \\
        python -m benchmarks.worker_profile [--requests 100] [--key-type ec-p256] [--top 30]

It creates and drops its own database (``<name>_profile``) beside the one named. The
figures are the next engineer's map, not a benchmark: cProfile roughly doubles the cost
of Python-heavy code, so compare parts with one another, and measure a change with the
population figure (``python -m benchmarks.run --only population``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Where a function's own time is booked, by the file it lives in (first match wins).
GROUPS = (
    ("cryptography (keygen, sign, PKCS#12, scrypt)", ("cryptography/", "_rust", "scrypt")),
    ("gpg (python-gnupg, pipes)", ("gnupg", "subprocess")),
    ("SMTP client", ("smtplib", "ssl.py", "socket.py")),
    ("e-mail (MIME building)", ("/email/",)),
    ("templates", ("django/template/", "django/utils/translation", "gettext")),
    ("PostgreSQL client (psycopg)", ("psycopg",)),
    ("Django ORM", ("django/db/",)),
    ("Celery", ("celery/", "kombu/")),
    ("logging", ("logging/",)),
    ("MyCert", ("mycert/",)),
)


def _setup(root: Path) -> None:
    from benchmarks.env import OUTBOX_KEY
    from benchmarks.roundtrips import _setup as roundtrips_setup

    # The workers' secrets as the population figure gives them (benchmarks/env.py), and
    # an audit key, as production has one (each event is then an HMAC link).
    os.environ["MYCERT_OUTBOX_KEY"] = OUTBOX_KEY
    os.environ["MYCERT_AUDIT_KEY"] = secrets.token_urlsafe(32)
    roundtrips_setup(root)


def _group(filename: str, function: str) -> str:
    for label, needles in GROUPS:
        if any(needle in filename or needle in function for needle in needles):
            return label
    return "other (Python, Django)"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: What the bare pipeline does too (benchmarks/bare.py), called by name from the issuance
#: service: timed apart so that MyCert's own cost shows under the noise of key generation.
BARE_STEPS = (
    "revocation_code_new",  # the revocation code's scrypt hash, a deliberate cost
    "generate_private_key",
    "issue_professional_certificate",
    "build_keystore",
)


def _time_bare_steps(spent: dict[str, float]) -> None:
    """Wrap the bare steps where the issuance service calls them; add their thread CPU."""
    import functools

    from mycert.services import issuance

    for name in BARE_STEPS:
        original = getattr(issuance, name)

        @functools.wraps(original)
        def timed(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return __original(*args, **kwargs)
            finally:
                spent["bare"] += time.thread_time() - start

        setattr(issuance, name, timed)


def profile(
    *, vendor: Any, requests: int, key_type: str, plain: bool = False
) -> tuple[pstats.Stats | None, dict[str, float]]:
    """Submit ``requests`` requests, then issue and send each under cProfile."""
    from django.conf import settings
    from django.utils import timezone

    from benchmarks.common import make_professionals
    from mycert.models import CertificateRequest
    from mycert.services.requests import request_submit
    from mycert.tasks.issuance import issue_certificate
    from tests.support.id_tokens import id_token_for

    settings.MYCERT_CERT_KEY_TYPE = key_type
    ids = [
        request_submit(
            professional=professional,
            vendor=vendor if index % 2 == 0 else None,
            terms_accepted=True,
            language="fr",
            now=timezone.now(),
            id_token=id_token_for(professional),
        ).pk
        for index, professional in enumerate(make_professionals(requests, prefix="wp"))
    ]
    # One warm-up request outside the figures: the CA, keyring, templates and the relay
    # session are loaded once per worker process, not per certificate.
    warm_up = ids.pop()
    issue_certificate.apply(args=(warm_up,))
    if CertificateRequest.objects.get(pk=warm_up).status != CertificateRequest.Status.SENT:
        raise RuntimeError(f"the warm-up request {warm_up} was not sent (see the log above)")
    # Half the requests (all with ``plain``) without the profiler, whose overhead triples
    # Python-heavy code, for the true CPU per certificate; the other half profiled.
    middle = len(ids) if plain else len(ids) // 2
    spent = {"bare": 0.0}
    _time_bare_steps(spent)
    cpu, children, wall = time.thread_time(), _children_cpu(), time.perf_counter()
    for request_id in ids[:middle]:
        issue_certificate.apply(args=(request_id,))
    timed = middle or 1
    totals = {
        "worker thread CPU ms": (time.thread_time() - cpu) * 1000 / timed,
        "  of which bare steps": spent["bare"] * 1000 / timed,
        "  of which MyCert's own": (time.thread_time() - cpu - spent["bare"]) * 1000 / timed,
        "gpg CPU ms (children)": (_children_cpu() - children) * 1000 / timed,
        "wall ms": (time.perf_counter() - wall) * 1000 / timed,
    }
    if plain:
        stats = None
    else:
        # This thread's CPU time, not the wall clock: waiting for PostgreSQL or the relay
        # is not the worker's cost, and the sink's thread is left out.
        profiler = cProfile.Profile(time.thread_time)
        cpu = time.thread_time()
        profiler.enable()
        for request_id in ids[middle:]:
            issue_certificate.apply(args=(request_id,))
        profiler.disable()
        totals["worker thread CPU ms, profiled"] = (
            (time.thread_time() - cpu) * 1000 / (len(ids) - middle)
        )
        stats = pstats.Stats(profiler)
    unsent = CertificateRequest.objects.filter(pk__in=ids).exclude(
        status=CertificateRequest.Status.SENT
    )
    if unsent.exists():
        raise RuntimeError(f"{unsent.count()} requests not sent")
    return stats, totals


def report(stats: pstats.Stats, totals: dict[str, float], *, count: int, top: int) -> str:
    out = io.StringIO()
    print(f"per certificate (half of {count} certificates plain, half profiled):", file=out)
    for label, value in totals.items():
        print(f"  {label:32} {value:8.2f}", file=out)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        label = _group(filename, function)
        groups[label] = groups.get(label, 0.0) + own
    total = sum(groups.values())
    count = count - count // 2  # the profiled half
    print("own CPU time by part (profiled ms per certificate, share):", file=out)
    for label, own in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {label:46} {own * 1000 / count:7.2f}  {own / total:5.1%}", file=out)
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        print(
            f"top {top} functions by {title} (ms per certificate, calls per certificate):", file=out
        )
        rows = sorted(raw.items(), key=lambda item: -item[1][2 if key == "tottime" else 3])
        for (filename, line, function), (_cc, calls, own, cumulative, _callers) in rows[:top]:
            where = f"{_short(filename)}:{line}({function})"
            value = own if key == "tottime" else cumulative
            print(f"  {value * 1000 / count:8.3f}  {calls / count:7.1f}  {where}", file=out)
    return out.getvalue()


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/mycert/", "lib/python3"):
        if marker in filename:
            return (
                filename.split(marker, 1)[1]
                if marker != "/mycert/"
                else "mycert/" + filename.split(marker, 1)[1]
            )
    return filename


def _standalone(requests: int, key_type: str, top: int, dump: Path | None, plain: bool) -> str:
    from django.conf import settings
    from django.utils import timezone

    from benchmarks.env import gpg
    from mycert import custody
    from mycert.mail.sink import MailSink
    from mycert.pki import KeyType
    from mycert.services.vendors import vendor_add_confirmed

    # As benchmarks/env.create_ca makes it: RSA-3072 root and issuing CA, EC P-256 OCSP.
    custody.ca_create(
        custody.ca_paths(),
        settings.MYCERT_CA_KEY_PASSPHRASE.encode(),
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.RSA_3072,
        now=timezone.now(),
    )
    vendor_home = Path(settings.MYCERT_GNUPG_HOME).parent / "v"
    uid = "Support Bench <support@bench-vendor.example.lu>"
    gpg(vendor_home, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y")
    listing = gpg(vendor_home, "--with-colons", "--list-keys", uid).decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    gpg(vendor_home, "--quick-add-key", fingerprint, "cv25519", "encr", "1y")
    vendor = vendor_add_confirmed(
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
        stats, totals = profile(vendor=vendor, requests=requests, key_type=key_type, plain=plain)
    if stats is None:
        return f"per certificate (mean of {requests - 1}, no profiler):\n" + "".join(
            f"  {label:32} {value:8.2f}\n" for label, value in totals.items()
        )
    if dump is not None:
        stats.dump_stats(dump)
    return report(stats, totals, count=requests - 1, top=top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="certificates to issue")
    parser.add_argument("--key-type", default="ec-p256", help="ec-p256, rsa-2048, rsa-3072")
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    parser.add_argument("--dump", type=Path, help="also write the pstats file here")
    parser.add_argument(
        "--plain", action="store_true", help="no profiler: the CPU per certificate only"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL to a PostgreSQL database (its name is a prefix)")
    with tempfile.TemporaryDirectory(prefix="mcp", dir="/tmp") as folder:
        _setup(Path(folder))
        from django.db import connection

        connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_profile"
        name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            text = _standalone(args.requests, args.key_type, args.top, args.dump, args.plain)
        finally:
            connection.creation.destroy_test_db(name, verbosity=0)
    print(f"worker profile, {args.key_type}, {args.requests - 1} certificates")
    print(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
