"""Figure 1: the per-certificate pipeline, MyCert's issuance service against bare pyca.

MyCert: ``request_issue`` on a submitted request (key, certificate, keystore, the
certificate and outbox rows, the audit event, one PostgreSQL transaction), in this
process, CA loaded once as in a worker. Reference: ``benchmarks.bare`` (keygen, sign,
PKCS#12), same key type, same keystore settings, same CA key object.

RSA key generation varies a lot from key to key (the search for primes), so two
designs are measured:

- *paired*: one key per iteration, generated once and timed once; then both
  pipelines do the rest with that key (MyCert's keygen is patched to hand it over).
  Totals are keygen + rest for each, so the keygen's variance cancels out;
- *independent*: each pipeline makes its own key, as in production.

The goal-bearing ratio is the paired one, for the production key type (RSA-3072).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

from benchmarks import bare
from benchmarks.common import Context, Figure, mean, median, timed


def _requests(count: int, key_type: str, vendor) -> list[int]:
    from django.utils import timezone

    from benchmarks.common import make_professionals
    from mycert.models import CertificateRequest
    from tests.support.id_tokens import id_token_for

    now = timezone.now()
    professionals = make_professionals(count, prefix="p1")
    rows = CertificateRequest.objects.bulk_create(
        [
            CertificateRequest(
                professional=professional,
                vendor=vendor if index % 2 == 0 else None,
                key_type=key_type,
                language="fr",
                terms_version="2023-03",
                terms_accepted_at=now,
                vendor_copy_consent=index % 2 == 0,
                due_at=now + timedelta(days=7),
                # The proof of login the worker verifies (tests/support/id_tokens.py).
                id_token=id_token_for(professional),
            )
            for index, professional in enumerate(professionals)
        ]
    )
    return [row.pk for row in rows]


def bare_issuer(base_url: str) -> bare.BareIssuer:
    from mycert import custody

    ca = custody.ca_load()
    return bare.BareIssuer(
        certificate=ca.issuing.certificate,
        private_key=ca.issuing.private_key,
        root=ca.root_certificate,
        base_url=base_url,
    )


def measure(
    ctx: Context, key_type: str, paired_runs: int, independent_runs: int, vendor
) -> dict[str, Any]:
    from django.utils import timezone

    from mycert.services import issuance

    issuer = bare_issuer(ctx.env.base_url)
    ids = iter(_requests(paired_runs + independent_runs + 1, key_type, vendor))
    # Warm-up: the CA load (pyca validates the RSA key once per process), first queries.
    issuance.request_issue(request_id=next(ids), now=timezone.now())
    bare.full(issuer, key_type, 0, timezone.now())

    keygen, bare_rest, mycert_rest = [], [], []
    for index in range(paired_runs):
        keygen_ms, key = timed(lambda: bare.generate_key(key_type))
        keygen.append(keygen_ms)
        request_id = next(ids)

        def mycert(request_id: int = request_id, key: bare.PrivateKey = key) -> None:
            with mock.patch.object(issuance, "generate_private_key", return_value=key):
                issuance.request_issue(request_id=request_id, now=timezone.now())

        def reference(key: bare.PrivateKey = key, index: int = index) -> None:
            bare.rest(issuer, key, index, timezone.now())

        # Alternate the order so that neither side always runs on a warm cache.
        first, second = (mycert, reference) if index % 2 else (reference, mycert)
        a, _ = timed(first)
        b, _ = timed(second)
        mycert_ms, bare_ms = (a, b) if index % 2 else (b, a)
        mycert_rest.append(mycert_ms)
        bare_rest.append(bare_ms)

    bare_full, mycert_full = [], []
    for index in range(independent_runs):

        def mycert_own(request_id: int = next(ids)) -> None:
            issuance.request_issue(request_id=request_id, now=timezone.now())

        def reference_own(index: int = index) -> None:
            bare.full(issuer, key_type, index, timezone.now())

        if index % 2:
            mycert_ms, _ = timed(mycert_own)
            bare_ms, _ = timed(reference_own)
        else:
            bare_ms, _ = timed(reference_own)
            mycert_ms, _ = timed(mycert_own)
        mycert_full.append(mycert_ms)
        bare_full.append(bare_ms)

    paired_bare = [k + r for k, r in zip(keygen, bare_rest, strict=True)]
    paired_mycert = [k + r for k, r in zip(keygen, mycert_rest, strict=True)]
    return {
        "key_type": key_type,
        "paired_runs": paired_runs,
        "independent_runs": independent_runs,
        "keygen_ms": keygen,
        "bare_rest_ms": bare_rest,
        "mycert_rest_ms": mycert_rest,
        "bare_full_ms": bare_full,
        "mycert_full_ms": mycert_full,
        "median": {
            "keygen": median(keygen),
            "bare_rest": median(bare_rest),
            "mycert_rest": median(mycert_rest),
            "paired_bare_total": median(paired_bare),
            "paired_mycert_total": median(paired_mycert),
            "independent_bare": median(bare_full) if bare_full else None,
            "independent_mycert": median(mycert_full) if mycert_full else None,
        },
        # The population's reference needs the mean: a sum of 1,762 keygens is
        # 1,762 × the mean, and RSA keygen's long tail puts the mean above the median.
        "mean_bare_total_ms": mean(paired_bare + bare_full),
        "mean_mycert_total_ms": mean(paired_mycert + mycert_full),
    }


def run(ctx: Context, plan: dict[str, tuple[int, int]], vendor) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for key_type, (paired_runs, independent_runs) in plan.items():
        ctx.say(f"pipeline {key_type}: {paired_runs} paired + {independent_runs} independent runs")
        result = measure(ctx, key_type, paired_runs, independent_runs, vendor)
        results[key_type] = result
        m = result["median"]
        goal_bearing = key_type == "rsa-3072"
        ratio = m["paired_mycert_total"] / m["paired_bare_total"]
        ctx.add(
            Figure(
                key=f"pipeline.{key_type}",
                title=f"Per-certificate pipeline, {key_type} (paired keys)",
                value=m["paired_mycert_total"],
                unit="ms",
                reference=m["paired_bare_total"],
                reference_label="bare cryptography: keygen + code hash + sign + PKCS#12",
                ratio=ratio,
                goal="≤ 1.15×" if goal_bearing else "— (goal is for RSA-3072)",
                met=(ratio <= 1.15) if goal_bearing else None,
                runs=paired_runs,
                notes=(
                    f"median keygen {m['keygen']:.1f} ms shared; rest: MyCert "
                    f"{m['mycert_rest']:.2f} ms vs bare {m['bare_rest']:.2f} ms "
                    f"(+{m['mycert_rest'] - m['bare_rest']:.2f} ms: database rows, outbox "
                    "sealing, audit, checks)"
                ),
                details={**result["median"], "goal_index": ratio / 1.15},
            )
        )
        if independent_runs:
            ctx.add(
                Figure(
                    key=f"pipeline.{key_type}.independent",
                    title=f"Per-certificate pipeline, {key_type} (own keys)",
                    value=m["independent_mycert"],
                    unit="ms",
                    reference=m["independent_bare"],
                    reference_label="bare cryptography, its own keys",
                    ratio=m["independent_mycert"] / m["independent_bare"],
                    goal="— (noisy: RSA keygen varies)",
                    met=None,
                    runs=independent_runs,
                    notes="each pipeline generates its own key; medians of independent samples",
                )
            )
        ctx.add(
            Figure(
                key=f"pipeline.{key_type}.rest",
                title=f"Per-certificate pipeline without keygen, {key_type}",
                value=m["mycert_rest"],
                unit="ms",
                reference=m["bare_rest"],
                reference_label="bare cryptography: code hash + sign + PKCS#12",
                ratio=m["mycert_rest"] / m["bare_rest"],
                goal="— (informative)",
                met=None,
                runs=paired_runs,
            )
        )
    return results
