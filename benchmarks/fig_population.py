"""Figure 2: the whole population, from submission until the relay accepted every e-mail.

N professionals submit through ``request_submit`` (one transaction each; the issuance
task is queued on commit), half of them with a vendor whose copies are OpenPGP
encrypted. Two Celery workers issue and send; the SMTP sink (its own process) writes
each accepted message to a Maildir, which is what is counted. The clock starts before
the first submission and stops when the last e-mail is in the Maildir.

Reference: N × the bare per-certificate cost (the mean, from figure 1) ÷ 2 cores.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Context, Figure, make_professionals
from benchmarks.procs import Sink, Workers


def bare_two_processes(ctx: Context, key_type: str, per_process: int) -> float:
    """Seconds per certificate when two processes run the bare pipeline at once.

    A check of "÷ 2 cores": whether this machine's two cores really give twice one.
    Two fresh interpreters (``python -m benchmarks.bare``), each timing its own batch.
    """
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization

    from benchmarks.env import BASE_DIR
    from mycert import custody

    ca = custody.ca_load()
    folder = ctx.env.root / "bare"
    folder.mkdir(exist_ok=True)
    key = folder / "issuing-key.pem"
    key.touch(mode=0o600)
    key.write_bytes(
        ca.issuing.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "issuing.pem").write_bytes(
        ca.issuing.certificate.public_bytes(serialization.Encoding.PEM)
    )
    (folder / "root.pem").write_bytes(ca.root_certificate.public_bytes(serialization.Encoding.PEM))
    command = [sys.executable, "-m", "benchmarks.bare", str(folder), key_type, str(per_process)]
    children = [
        subprocess.Popen(command, cwd=BASE_DIR, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    seconds = [float(child.communicate(timeout=600)[0].split()[-1]) for child in children]
    return max(seconds) / (2 * per_process)


class BrokerRestarted(RuntimeError):
    """Redis restarted during the run (another process's fault test): queued tasks are gone."""


def _redis_run_id() -> str:
    import redis

    from benchmarks.env import BROKER_URL

    return str(redis.Redis.from_url(BROKER_URL).info("server")["run_id"])


def _cpu(workers: Workers, sink: Sink) -> dict[str, float]:
    """CPU seconds so far of the processes that share the 2 cores during the run."""
    import resource

    from benchmarks.procs import cpu_seconds, cpu_seconds_named

    own = [cpu_seconds(p.pid) for p in workers.processes]
    this = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "workers": sum(o for o, _ in own),
        # gpg runs as the workers' child; its time is counted once python-gnupg reaps it.
        "gpg (workers' children)": sum(c for _, c in own),
        "SMTP sink": cpu_seconds(sink.process.pid)[0] if sink.process else 0.0,
        "PostgreSQL": cpu_seconds_named("postgres"),
        "Redis": cpu_seconds_named("redis-server"),
        "submissions (this process)": this.ru_utime + this.ru_stime,
    }


def measure(
    ctx: Context, *, key_type: str, count: int, vendor, workers: Workers, timeout: float
) -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from mycert.models import CertificateRequest, Delivery
    from mycert.services.requests import request_submit
    from tests.support.id_tokens import id_token_for

    professionals = make_professionals(count, prefix="p2")
    with_vendor = count // 2 + count % 2
    expected = 2 * count + 2 * with_vendor
    settings.MYCERT_CERT_KEY_TYPE = key_type
    maildir = ctx.env.root / f"mail-{key_type}-{count}"
    while maildir.exists():
        maildir = maildir.with_name(maildir.name + "+")
    sink = Sink(ctx.env, maildir)
    sink.start()
    workers.start()
    timeline: list[tuple[float, int]] = [(0.0, 0)]
    failed = 0
    run_id = _redis_run_id()
    try:
        cpu_before = _cpu(workers, sink)
        start = time.perf_counter()
        ids = []
        for index, professional in enumerate(professionals):
            ids.append(
                request_submit(
                    professional=professional,
                    vendor=vendor if index % 2 == 0 else None,
                    terms_accepted=True,
                    language="fr",
                    now=timezone.now(),
                    id_token=id_token_for(professional),
                ).pk
            )
        submitted = time.perf_counter() - start
        deadline = start + timeout
        accepted = 0
        last_check = 0.0
        while accepted < expected:
            time.sleep(0.25)
            accepted = sink.accepted()
            now = time.perf_counter()
            timeline.append((now - start, accepted))
            if now - last_check > 5:
                last_check = now
                try:
                    restarted = _redis_run_id() != run_id
                except Exception:
                    restarted = True
                if restarted:
                    raise BrokerRestarted("Redis restarted during the run")
                failed = Delivery.objects.filter(
                    certificate__request_id__in=ids, status=Delivery.Status.FAILED
                ).count()
                if failed:
                    raise RuntimeError(f"{failed} deliveries failed; see {ctx.env.root}")
            if now > deadline:
                raise RuntimeError(f"only {accepted}/{expected} e-mails after {timeout:.0f} s")
        elapsed = time.perf_counter() - start
        cpu_after = _cpu(workers, sink)
        # The workers record "sent" just after the relay's 250; let them finish.
        for _ in range(100):
            unsent = (
                Delivery.objects.filter(certificate__request_id__in=ids)
                .exclude(status=Delivery.Status.SENT)
                .count()
            )
            open_requests = (
                CertificateRequest.objects.filter(pk__in=ids)
                .exclude(status=CertificateRequest.Status.SENT)
                .count()
            )
            if not unsent and not open_requests:
                break
            time.sleep(0.1)
        deliveries = Delivery.objects.filter(certificate__request_id__in=ids).count()
    finally:
        workers.stop()
        sink.stop()
    return {
        "key_type": key_type,
        "count": count,
        "with_vendor": with_vendor,
        "expected_emails": expected,
        "accepted_emails": sink.accepted(),
        "deliveries": deliveries,
        "unsent_after": unsent,
        "requests_not_sent_after": open_requests,
        "submit_seconds": submitted,
        "elapsed_seconds": elapsed,
        "timeline": timeline,
        "workers": workers.description,
        # CPU seconds each kind of process used while the clock ran, per request.
        "cpu_ms_per_request": {
            part: (cpu_after[part] - cpu_before[part]) * 1000 / count for part in cpu_after
        },
        "cpu_seconds": {part: cpu_after[part] - cpu_before[part] for part in cpu_after},
    }


def run(
    ctx: Context,
    plan: dict[str, int],
    bare_mean_ms: dict[str, float],
    vendor,
    workers_factory,
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for key_type, count in plan.items():
        reference = count * bare_mean_ms[key_type] / 1000 / 2
        ctx.say(
            f"population {key_type}: {count} requests, reference {reference:.1f} s "
            f"({count} × {bare_mean_ms[key_type]:.1f} ms ÷ 2 cores)"
        )
        for attempt in (1, 2, 3):
            workers = workers_factory()
            try:
                result = measure(
                    ctx,
                    key_type=key_type,
                    count=count,
                    vendor=vendor,
                    workers=workers,
                    timeout=max(10 * reference, 120),
                )
                break
            except BrokerRestarted:
                if attempt == 3:
                    raise
                ctx.say(f"population {key_type}: Redis was restarted by another process; again")
                from benchmarks.env import flush_broker

                time.sleep(10)
                flush_broker()
        result["attempts"] = attempt
        result["reference_seconds"] = reference
        result["bare_mean_ms"] = bare_mean_ms[key_type]
        per_cert = bare_two_processes(ctx, key_type, 40 if key_type == "rsa-3072" else 60)
        result["bare_two_processes_seconds_per_certificate"] = per_cert
        result["reference_two_processes_seconds"] = count * per_cert
        results[key_type] = result
        ratio = result["elapsed_seconds"] / reference
        goal_bearing = key_type == "rsa-3072"
        full = count == 1762
        ctx.add(
            Figure(
                key=f"population.{key_type}",
                title=f"Population of {count}, {key_type}, 2 workers",
                value=result["elapsed_seconds"],
                unit="s",
                reference=reference,
                reference_label=f"{count} × bare per-certificate mean ÷ 2 cores",
                ratio=ratio,
                goal="≤ 1.3×" if goal_bearing else "— (goal is for RSA-3072)",
                met=(
                    ratio <= 1.3
                    and not result["unsent_after"]
                    and not result["requests_not_sent_after"]
                )
                if goal_bearing and full
                else None,
                runs=1,
                notes=(
                    f"{result['expected_emails']} e-mails ({result['with_vendor']} requests "
                    f"with an OpenPGP vendor copy); submissions took "
                    f"{result['submit_seconds']:.1f} s; {workers.description}"
                    + ("" if full else "; smaller N than the population, ratio still computed")
                    + f"; against the bare pipeline run by 2 processes at once: "
                    f"{result['reference_two_processes_seconds']:.1f} s "
                    f"({result['elapsed_seconds'] / result['reference_two_processes_seconds']:.2f}×)"
                ),
                details={"goal_index": ratio / 1.3} if goal_bearing and full else {},
            )
        )
    return results
