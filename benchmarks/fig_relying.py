"""Revocation → every server of the relying-party kit refuses (issue 21): p50/p95/p99.

The four servers of the kit run as shipped (deploy/: nginx, Apache httpd, the Python
server, the Java service), each asking MyCert's OCSP responder (gunicorn, as deployed)
about the whole chain at every new connection. For each of N certificates: every server
accepts it (a professional at work: any cache is warm), then a helpdesk agent revokes it
in the admin (the revoke action's confirmation POST, as the browser sends it) and the
clock runs until each server refuses a new connection (curl with the keystore, a new TLS
handshake each time, every ``POLL_SECONDS``); a Celery worker signs the revoked answer as
in production (and sends the e-mails to an SMTP sink). Keys
``revocation.relying.<server>.p99`` (seconds), goal ≤ 60 s.

The revocations overlap: one every ``STAGGER_SECONDS``, each certificate's probes running
beside the later revocations. Each sample is still one certificate's own time, from its
revocation's commit to each server's first refusal; the Python server keeps an answer
30 s, so one after the other the N revocations took N × 30 s, overlapped about
30 s + N × the stagger.

Alone: ``.venv/bin/python -m benchmarks.fig_relying [--n 20]`` (its own database
``mycert_bench_relying`` and Redis db 8 unless MYCERT_BENCH_DATABASE/_REDIS_DB say
otherwise; the figures go to /tmp/mycert-bench-relying/relying.json). In
``make benchmarks``: the figure ``relying`` (``python -m benchmarks.run --only relying``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Figure, percentile

GOAL_SECONDS = 60.0
#: Give up on a server after this long (counted as a miss at this value).
GIVE_UP_SECONDS = 180.0
POLL_SECONDS = 0.25
#: One revocation every this many seconds, the probes of earlier ones still running.
STAGGER_SECONDS = 3.0
LABELS = {"nginx": "nginx", "apache": "Apache httpd", "python": "Python server", "java": "Java"}


def run(ctx: Context, count: int) -> dict[str, Any]:
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client, override_settings
    from django.urls import reverse
    from django.utils import timezone

    from benchmarks.procs import Gunicorn, Sink, Workers
    from mycert import custody
    from mycert.services.publication import crl_publish
    from tests.integration.test_relying_parties import (
        ApacheServer,
        JavaServer,
        NginxServer,
        Pki,
        PythonServer,
        curl,
    )
    from tests.support import keystores
    from tests.support.tls_servers import free_port, server_certificate

    ctx.say(f"relying parties: {count} revocations, nginx, Apache, Python, Java with OCSP")
    web = Gunicorn(ctx.env)
    workers = Workers(ctx.env, count=1, concurrency=1, pool="solo")
    sink = Sink(ctx.env, ctx.env.root / "relying-mail")
    sink.start()
    web.start()
    workers.start()
    # The helpdesk agent (the admin's second factor is the login's, not this measure's).
    agent, _ = User.objects.get_or_create(username="bench-helpdesk", is_staff=True)
    agent.groups.add(Group.objects.get(name="Helpdesk"))
    helpdesk = Client(HTTP_HOST="127.0.0.1", HTTP_ACCEPT_LANGUAGE="en")
    no_otp = override_settings(MYCERT_ADMIN_REQUIRE_OTP=False)
    no_otp.enable()
    helpdesk.force_login(agent)
    changelist = reverse("admin:mycert_certificate_changelist")
    # World-readable: Apache's children run as nobody when the benchmark runs as root.
    directory = Path(tempfile.mkdtemp(prefix="mcb-rp-", dir="/tmp"))
    directory.chmod(0o755)
    servers: dict[str, Any] = {}
    try:
        paths = custody.ca_paths()
        ca_file = directory / "mycert-ca.pem"
        ca_file.write_bytes(paths.root_cert.read_bytes() + paths.issuing_cert.read_bytes())
        server_cert, server_key = server_certificate(directory)
        base_url: str = settings.MYCERT_PKI_BASE_URL
        pki = Pki(
            base_url, directory, ca_file, directory / "mycert-crls.pem", server_cert, server_key
        )
        crl_publish(now=timezone.now())
        pki.refresh()
        targets = [keystores.issue(key_type="ec-p256") for _ in range(count)]
        classes = {
            "nginx": NginxServer,
            "apache": ApacheServer,
            "python": PythonServer,
            "java": JavaServer,
        }
        for name, server_class in classes.items():
            servers[name] = server_class(pki, free_port())
        samples: dict[str, list[float | None]] = {name: [None] * count for name in servers}

        def until_refused(name: str, target: Any, started: float, label: str) -> float:
            server = servers[name]
            while True:
                refused = not curl(server.url, pki, target, f"{label}-{name}").accepted
                elapsed = time.monotonic() - started
                if refused or elapsed > GIVE_UP_SECONDS:
                    return elapsed
                time.sleep(POLL_SECONDS)

        def record(index: int, name: str, probe: Future[float]) -> None:
            samples[name][index] = probe.result()
            if all(samples[other][index] is not None for other in servers):
                ctx.say(
                    f"  revocation {index + 1}/{count}: "
                    + ", ".join(f"{other} {samples[other][index]:.2f} s" for other in servers)
                )

        # Revocations overlap: one every STAGGER_SECONDS while the probes of the earlier
        # ones go on, so the whole takes about one cache period plus the stagger.
        probes = ThreadPoolExecutor(count * len(servers), thread_name_prefix="probe")
        pending = []
        first = time.monotonic()
        for index, target in enumerate(targets):
            time.sleep(max(0.0, first + index * STAGGER_SECONDS - time.monotonic()))
            label = f"t{index}"
            # A professional at work just before: every server accepts, any cache is warm.
            for name, server in servers.items():
                answer = curl(server.url, pki, target, f"{label}-{name}")
                if not answer.accepted:
                    raise RuntimeError(f"{name} refused a valid certificate: {answer.output}")
            if target.record is None:
                raise RuntimeError("an issued keystore without its certificate row")
            form = {"action": "revoke_selected", "_selected_action": [target.record.pk]}
            if helpdesk.post(changelist, form).status_code != 200:  # the confirmation page
                raise RuntimeError("the admin did not offer the revocation")
            started = time.monotonic()  # the agent's click on « revoke »
            done = helpdesk.post(
                changelist,
                {**form, "post": "yes", "reason": "keyCompromise", "comment": "benchmark"},
            )
            if done.status_code != 302:
                raise RuntimeError(f"the admin's revocation answered {done.status_code}")
            for name in servers:
                future = probes.submit(until_refused, name, target, started, label)
                future.add_done_callback(partial(record, index, name))
                pending.append(future)
        for future in pending:
            future.result()  # a probe's error is the run's
        probes.shutdown()
    finally:
        no_otp.disable()
        for server in servers.values():
            server.stop()
        workers.stop()
        web.stop()
        sink.stop()
        shutil.rmtree(directory, ignore_errors=True)

    result: dict[str, Any] = {
        "count": count,
        "poll_seconds": POLL_SECONDS,
        "stagger_seconds": STAGGER_SECONDS,
        "servers": {},
    }
    for name, measured in samples.items():
        values = [seconds for seconds in measured if seconds is not None]
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        result["servers"][name] = {"p50": p50, "p95": p95, "p99": p99, "samples": values}
        ctx.add(
            Figure(
                key=f"revocation.relying.{name}.p99",
                title=f"Revocation → {LABELS[name]} refuses a new connection, p99",
                value=p99,
                unit="s",
                reference=GOAL_SECONDS,
                reference_label="the goal",
                ratio=p99 / GOAL_SECONDS,
                goal=f"≤ {GOAL_SECONDS:.0f} s (p99)",
                met=p99 <= GOAL_SECONDS,
                runs=len(values),
                notes=(
                    f"p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s over {len(values)} "
                    f"revocations, one every {STAGGER_SECONDS:g} s (overlapping); polled "
                    f"every {POLL_SECONDS} s with a new TLS connection"
                ),
                details={"p50": p50, "p95": p95, "p99": p99, "goal_index": p99 / GOAL_SECONDS},
            )
        )
    return result


def main() -> None:
    """Run this figure alone, in its own database and Redis db, report under /tmp."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="revocations (default 20)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mycert-bench-relying"))
    args = parser.parse_args()
    os.environ.setdefault("MYCERT_BENCH_DATABASE", "mycert_bench_relying")
    os.environ.setdefault("MYCERT_BENCH_REDIS_DB", "8")
    from benchmarks import env as bench_env

    started = time.perf_counter()
    env = bench_env.make_env()
    env.apply()
    bench_env.create_database()
    bench_env.flush_broker()
    import django

    django.setup()
    from benchmarks import machine

    ctx = Context(env=env, quick=False)
    ctx.raw["machine_before"] = machine.describe()
    try:
        bench_env.migrate()
        bench_env.create_ca("rsa-3072")
        ctx.raw["relying"] = run(ctx, args.n)
    finally:
        ctx.raw["machine_after"] = machine.describe()
        ctx.raw["total_seconds"] = time.perf_counter() - started
        from django.db import connections

        connections.close_all()
        bench_env.flush_broker()
        bench_env.drop_database()
        bench_env.remove_env(env)
    # The figures alone (make benchmarks writes the full report with its plots).
    args.out.mkdir(parents=True, exist_ok=True)
    data = {
        "command": "python -m benchmarks.fig_relying",
        "machine": ctx.raw["machine_before"],
        "machine_after": ctx.raw["machine_after"],
        "total_seconds": ctx.raw["total_seconds"],
        "figures": [f.as_dict() for f in ctx.figures],
        "relying": ctx.raw.get("relying"),
        "log": ctx.log_lines,
    }
    (args.out / "relying.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    for figure in ctx.figures:
        print(f"{figure.key} = {figure.value:.3f} s ({figure.notes})", file=sys.stderr)
    print(f"written: {args.out / 'relying.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
