"""Figure 2: the whole population, from submission until the relay accepted every e-mail.

N professionals submit through ``request_submit`` (one transaction each; the issuance
task is queued on commit), half of them with a vendor whose copies are OpenPGP
encrypted. Two Celery workers issue and send; the SMTP sink (its own process) writes
each accepted message to a Maildir, which is what is counted. The clock starts before
the first submission and stops when the last e-mail is in the Maildir.

Reference (issue 24 §2): the bare pipeline (``benchmarks/bare.py``) run by two processes
at once, as the two workers share the two cores, measured right after each population
run on N ÷ ``reference_share`` certificates and scaled to N. RSA-3072, the goal, runs three
times, each with its own reference: the figure is the run of median ratio, with the
spread. EC P-256 is also set against the bare *delivery floor* (``benchmarks/floor.py``,
§3), and runs a second time once the database holds 10 × N issuances (§5; the issuances
in between are partly real, partly copies by ``benchmarks/bulk_load.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Figure, make_professionals
from benchmarks.procs import Sink, Workers, wait_until


def bare_folder(ctx: Context) -> Path:
    """The issuing CA as files for the bare pipeline's processes (written once per run)."""
    from cryptography.hazmat.primitives import serialization

    from mycert import custody

    folder = ctx.env.root / "bare"
    if (folder / "root.pem").exists():
        return folder
    ca = custody.ca_load()
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
    return folder


def bare_two_processes(ctx: Context, key_type: str, count: int) -> float:
    """Seconds two processes take to run the bare pipeline on ``count`` certificates at once.

    The population's reference in its own conditions (issue 24 §2): two workers share the
    two cores, so two fresh interpreters (``python -m benchmarks.bare``) share them too,
    each timing its half; the slower half is the batch's time.
    """
    import subprocess
    import sys

    from benchmarks.env import BASE_DIR

    folder = bare_folder(ctx)
    halves = (count - count // 2, count // 2)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bare", str(folder), key_type, str(half)],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for half in halves
    ]
    return max(float(child.communicate(timeout=900)[0].split()[-1]) for child in children)


def _unused(maildir: Path) -> Path:
    """``maildir``, or a name beside it if a run before this one used it: the sink counts
    every file in its Maildir."""
    while maildir.exists():
        maildir = maildir.with_name(maildir.name + "+")
    return maildir


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
    import redis
    from django.conf import settings
    from django.utils import timezone

    from benchmarks.bulk_load import settle_after_load
    from mycert.models import CertificateRequest, Delivery
    from mycert.services.requests import request_submit
    from tests.support.id_tokens import id_token_for

    professionals = make_professionals(count, prefix="p2")
    # Each run starts on a settled database, as the growth figure's batch does: the
    # previous run's writes (their checkpoint, autovacuum and ANALYZE) are not billed to
    # this one. (It did not narrow the spread: 1.35–1.56× within one run of 2026-12-08.)
    settle_after_load()
    with_vendor = count // 2 + count % 2
    expected = 2 * count + 2 * with_vendor
    settings.MYCERT_CERT_KEY_TYPE = key_type
    maildir = _unused(ctx.env.root / f"mail-{key_type}-{count}")
    sink = Sink(ctx.env, maildir)
    timeline: list[tuple[float, int]] = [(0.0, 0)]
    failed = 0
    try:
        # Started inside the try: a Redis down at the start must not leave them running.
        sink.start()
        try:
            run_id = _redis_run_id()
            workers.start()
        except redis.exceptions.ConnectionError as exc:
            raise BrokerRestarted("Redis was down at the start") from exc
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
        "request_ids": ids,
        "maildir": maildir,
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


@dataclass(frozen=True)
class PopulationPlan:
    """What the population figures run (``benchmarks.run._plans``)."""

    #: N: the population the goals are stated for (1,762).
    count: int
    #: Runs of the goal-bearing RSA-3072 population, for the spread (issue 24 §2).
    goal_runs: int = 3
    #: Each run's two-process reference covers N ÷ this many certificates, scaled to N.
    reference_share: int = 3
    #: Informative key types and their N (no goal).
    others: dict[str, int] = field(default_factory=dict)
    #: Growth: the second EC batch runs once the database holds N × this issuances.
    growth_factor: int = 10


def _population(
    ctx: Context, key_type: str, count: int, vendor, workers_factory, estimate: float
) -> dict[str, Any]:
    """One population run, again if another process restarted Redis under it."""
    for attempt in (1, 2, 3):
        workers = workers_factory()
        try:
            result = measure(
                ctx,
                key_type=key_type,
                count=count,
                vendor=vendor,
                workers=workers,
                timeout=max(20 * estimate, 300),
            )
            result["attempts"] = attempt
            return result
        except BrokerRestarted:
            if attempt == 3:
                raise
            ctx.say(f"population {key_type}: Redis was restarted by another process; again")
            from benchmarks.env import flush_broker

            time.sleep(10)
            flush_broker()
    raise AssertionError("unreachable")


def _with_reference(
    ctx: Context, result: dict[str, Any], share: int, bare_mean_ms: float | None
) -> dict[str, Any]:
    """Measure the run's reference right after it: the bare pipeline in two processes."""
    count, key_type = result["count"], result["key_type"]
    sample = max(2, -(-count // share))
    seconds = bare_two_processes(ctx, key_type, sample)
    result["reference_sample"] = sample
    result["reference_sample_seconds"] = seconds
    result["reference_seconds"] = seconds * count / sample
    result["reference_two_processes_seconds"] = result["reference_seconds"]
    result["bare_two_processes_seconds_per_certificate"] = seconds / sample
    result["bare_mean_ms"] = bare_mean_ms
    result["ratio"] = result["elapsed_seconds"] / result["reference_seconds"]
    ctx.say(
        f"population {key_type}: {result['elapsed_seconds']:.1f} s; reference {sample} bare "
        f"pipelines in 2 processes {seconds:.1f} s → {result['reference_seconds']:.1f} s for "
        f"{count}; ratio {result['ratio']:.3f}"
    )
    return result


def _complete(result: dict[str, Any]) -> bool:
    return not result["unsent_after"] and not result["requests_not_sent_after"]


def _reference_label(result: dict[str, Any]) -> str:
    if result["reference_sample"] == result["count"]:
        return f"{result['count']} bare pipelines, 2 processes at once"
    return (
        f"{result['reference_sample']} bare pipelines, 2 processes at once, "
        f"right after, × {result['count']}/{result['reference_sample']}"
    )


def _notes(result: dict[str, Any]) -> str:
    return (
        f"{result['expected_emails']} e-mails ({result['with_vendor']} requests with an "
        f"OpenPGP vendor copy); submissions took {result['submit_seconds']:.1f} s; "
        f"{result['workers']}"
    )


def run(
    ctx: Context,
    plan: PopulationPlan,
    bare_mean_ms: dict[str, float],
    vendor,
    workers_factory,
) -> dict[str, dict[str, Any]]:
    """EC P-256 (growth's start, the floor's figure), the others, RSA-3072 × 3, growth."""
    from mycert.models import AuditEvent, Certificate

    n = plan.count
    results: dict[str, dict[str, Any]] = {}

    def estimate(key_type: str, count: int) -> float:
        return count * bare_mean_ms.get(key_type, 50.0) / 1000 / 2

    # 1. EC P-256 on a database that holds only figure 1's certificates: the growth
    # figure's start and the delivery floor's figure.
    first_event = (AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()) or 0
    ec = _population(ctx, "ec-p256", n, vendor, workers_factory, estimate("ec-p256", n))
    ec["certificates_before"] = Certificate.objects.count() - n
    ec_events = list(AuditEvent.objects.filter(pk__gt=first_event).values_list("pk", flat=True))
    _with_reference(ctx, ec, plan.reference_share, bare_mean_ms.get("ec-p256"))
    results["ec-p256"] = ec
    ctx.add(
        Figure(
            key="population.ec-p256",
            title=f"Population of {n}, ec-p256, 2 workers",
            value=ec["elapsed_seconds"],
            unit="s",
            reference=ec["reference_seconds"],
            reference_label=_reference_label(ec),
            ratio=ec["ratio"],
            goal="— (see the delivery floor)",
            met=None,
            runs=1,
            notes=_notes(ec),
        )
    )
    # The goal against the floor: as many runs as RSA-3072's, each population with its
    # floor right after it (the first is the run above); the figure is the run of median
    # ratio, with the spread (one run moved by 1.53–1.84× on one afternoon).
    floor_runs = [(ec, delivery_floor(ctx, "ec-p256", n, vendor, ec["maildir"]))]
    for index in range(1, plan.goal_runs):
        ctx.say(f"population ec-p256 against its floor: run {index + 1} of {plan.goal_runs}")
        again = _population(ctx, "ec-p256", n, vendor, workers_factory, estimate("ec-p256", n))
        floor_runs.append((again, delivery_floor(ctx, "ec-p256", n, vendor, again["maildir"])))
    floor_ratios = [run["elapsed_seconds"] / floor["seconds"] for run, floor in floor_runs]
    by_ratio = sorted(range(len(floor_runs)), key=floor_ratios.__getitem__)
    median_run, floor = floor_runs[by_ratio[len(floor_runs) // 2]]
    floor["ratios"] = floor_ratios
    ctx.raw["population_floor"] = floor
    ratio = median_run["elapsed_seconds"] / floor["seconds"]
    ctx.add(
        Figure(
            key="population.ec-p256.delivery-floor",
            title=f"Population of {n}, ec-p256, against the bare delivery floor",
            value=median_run["elapsed_seconds"],
            unit="s",
            reference=floor["seconds"],
            reference_label=(
                f"{n} bare deliveries (pipeline, MIME, gpg, SMTP, INSERT + UPDATE), "
                "2 processes at once"
            ),
            ratio=ratio,
            goal="≤ 1.5×",
            met=ratio <= 1.5 and all(_complete(run) for run, _ in floor_runs),
            runs=len(floor_runs),
            notes=(
                f"the run of median ratio of {len(floor_runs)}; ratios "
                + ", ".join(f"{r:.2f}×" for r in floor_ratios)
                + "; its floor per stage, seconds of both processes: "
                + ", ".join(f"{k} {v:.1f}" for k, v in floor["stages"].items())
            ),
            details={
                "goal_index": ratio / 1.5,
                "ratio_min": min(floor_ratios),
                "ratio_max": max(floor_ratios),
                "ratios": floor_ratios,
            },
        )
    )

    # 2. Informative key types, one run each.
    for key_type, count in plan.others.items():
        result = _population(
            ctx, key_type, count, vendor, workers_factory, estimate(key_type, count)
        )
        _with_reference(ctx, result, plan.reference_share, bare_mean_ms.get(key_type))
        results[key_type] = result
        ctx.add(
            Figure(
                key=f"population.{key_type}",
                title=f"Population of {count}, {key_type}, 2 workers",
                value=result["elapsed_seconds"],
                unit="s",
                reference=result["reference_seconds"],
                reference_label=_reference_label(result),
                ratio=result["ratio"],
                goal="— (goal is for RSA-3072)",
                met=None,
                runs=1,
                notes=_notes(result),
            )
        )

    # 3. RSA-3072, the goal: three runs, each with its reference right after it.
    runs = []
    for index in range(plan.goal_runs):
        ctx.say(f"population rsa-3072: run {index + 1} of {plan.goal_runs}")
        result = _population(ctx, "rsa-3072", n, vendor, workers_factory, estimate("rsa-3072", n))
        runs.append(
            _with_reference(ctx, result, plan.reference_share, bare_mean_ms.get("rsa-3072"))
        )
    ordered = sorted(runs, key=lambda r: r["ratio"])
    middle = ordered[len(ordered) // 2]
    ratios = [r["ratio"] for r in runs]
    middle["runs"] = [
        {
            k: r[k]
            for k in (
                "elapsed_seconds",
                "reference_seconds",
                "reference_sample",
                "reference_sample_seconds",
                "ratio",
                "submit_seconds",
                "unsent_after",
                "requests_not_sent_after",
            )
        }
        for r in runs
    ]
    results["rsa-3072"] = middle
    ctx.add(
        Figure(
            key="population.rsa-3072",
            title=f"Population of {n}, rsa-3072, 2 workers",
            value=middle["elapsed_seconds"],
            unit="s",
            reference=middle["reference_seconds"],
            reference_label=_reference_label(middle),
            ratio=middle["ratio"],
            goal="≤ 1.3×",
            met=middle["ratio"] <= 1.3 and all(_complete(r) for r in runs),
            runs=len(runs),
            notes=(
                f"the run of median ratio of {len(runs)}; ratios "
                + ", ".join(f"{r:.2f}×" for r in ratios)
                + f"; {_notes(middle)}"
            ),
            details={
                "goal_index": middle["ratio"] / 1.3,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratios": ratios,
            },
        )
    )

    # 4. Growth: fill the database up to N × factor − N issuances, then N more for real.
    target = plan.growth_factor * n - n
    existing = Certificate.objects.count()
    start = time.perf_counter()
    from benchmarks.bulk_load import clone_issuances, settle_after_load

    loaded = clone_issuances(list(ec["request_ids"]), max(0, target - existing), ec_events)
    settle_after_load()
    load_seconds = time.perf_counter() - start
    ctx.say(
        f"growth: {existing} certificates issued for real so far, {loaded['certificates']} "
        f"bulk-loaded in {load_seconds:.0f} s ({loaded})"
    )
    grown = _population(ctx, "ec-p256", n, vendor, workers_factory, estimate("ec-p256", n))
    # The machine's speed right after the second batch, as after the first (the bare
    # pipeline in two processes): the raw ratio is the goal's; the ratio of the two
    # batches' ratios to their references tells growth from the other processes' load.
    _with_reference(ctx, grown, plan.reference_share, bare_mean_ms.get("ec-p256"))
    growth = {
        "count": n,
        "start_certificates_before": ec["certificates_before"],
        "start_seconds": ec["elapsed_seconds"],
        "issued_for_real_before_load": existing,
        "bulk_loaded": loaded,
        "bulk_load_seconds": load_seconds,
        "grown_certificates_before": Certificate.objects.count() - n,
        "grown_seconds": grown["elapsed_seconds"],
        "grown": {
            k: v for k, v in grown.items() if k not in ("timeline", "request_ids", "maildir")
        },
    }
    ctx.raw["population_growth"] = growth
    per_start = ec["elapsed_seconds"] / n
    per_grown = grown["elapsed_seconds"] / n
    ctx.add(
        Figure(
            key="population.growth.ec-p256",
            title=f"Per certificate with {plan.growth_factor * n:,} issued, ec-p256",
            value=per_grown * 1000,
            unit="ms",
            reference=per_start * 1000,
            reference_label=f"per certificate of the first {n} (same run)",
            ratio=per_grown / per_start,
            goal="≤ 1.1×",
            met=per_grown / per_start <= 1.1 and _complete(grown),
            runs=1,
            notes=(
                f"{n} requests issued for real on a database of "
                f"{growth['grown_certificates_before']:,} certificates "
                f"({existing:,} issued for real, {loaded['certificates']:,} bulk-loaded copies) "
                f"against {n} on {ec['certificates_before']:,}"
            ),
            details={
                "goal_index": per_grown / per_start / 1.1,
                "ratio_to_reference_start": ec["ratio"],
                "ratio_to_reference_grown": grown["ratio"],
                "growth_against_references": grown["ratio"] / ec["ratio"],
            },
        )
    )
    for result in results.values():
        result.pop("request_ids", None)
        result.pop("maildir", None)
    return results


def _text_sizes(maildir: Path) -> dict[str, int]:
    """The sizes of MyCert's text parts: the keystore e-mail's and the password e-mail's."""
    import email
    from email import policy

    sizes: dict[str, int] = {}
    for path in sorted((maildir / "new").iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if "bench-vendor" in str(message["To"]):
            continue
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        kind = "keystore" if any(True for _ in message.iter_attachments()) else "password"
        sizes.setdefault(kind, len(text))
        if len(sizes) == 2:
            break
    return {"keystore": sizes.get("keystore", 1500), "password": sizes.get("password", 800)}


def delivery_floor(
    ctx: Context, key_type: str, count: int, vendor, maildir: Path
) -> dict[str, Any]:
    """``benchmarks/floor.py`` in two processes at once, on ``count`` certificates."""
    import json
    import subprocess
    import sys

    from django.conf import settings
    from django.db import connection

    from benchmarks.bulk_load import settle_after_load
    from benchmarks.env import BASE_DIR, DATABASE_URL
    from benchmarks.floor import CREATE_TABLE

    folder = bare_folder(ctx)
    sizes = _text_sizes(maildir)
    (folder / "floor.json").write_text(
        json.dumps(
            {
                "gnupg_home": str(settings.MYCERT_GNUPG_HOME),
                "gpg_binary": settings.MYCERT_GPG_BINARY,
                "vendor_fingerprint": vendor.pgp_fingerprint,
                "sink_port": ctx.env.sink_port,
                "database_url": DATABASE_URL,
                "text_sizes": sizes,
            }
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE)
    # As each population run: on a settled database, the run before it not billed to it.
    settle_after_load()
    floor_maildir = _unused(ctx.env.root / f"mail-floor-{key_type}-{count}")
    sink = Sink(ctx.env, floor_maildir)
    sink.start()
    halves = ((count - count // 2, 0), (count // 2, count - count // 2))
    try:
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.floor",
                    str(folder),
                    key_type,
                    str(n),
                    str(first),
                ],
                cwd=BASE_DIR,
                env=ctx.env.child_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for n, first in halves
        ]
        outputs = [json.loads(child.communicate(timeout=900)[0]) for child in children]
        expected = sum(2 + 2 * (number % 2 == 0) for number in range(count))
        wait_until(lambda: sink.accepted() >= expected, timeout=30, what="the floor's e-mails")
    finally:
        sink.stop()
    stages = {
        stage: sum(output["stages"][stage] for output in outputs) for stage in outputs[0]["stages"]
    }
    seconds = max(output["seconds"] for output in outputs)
    ctx.say(
        f"delivery floor {key_type}: {count} certificates, {expected} e-mails in 2 processes: "
        f"{seconds:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + ")"
    )
    return {
        "key_type": key_type,
        "count": count,
        "seconds": seconds,
        "process_seconds": [output["seconds"] for output in outputs],
        "stages": stages,
        "emails": expected,
        "text_sizes": sizes,
    }
