"""What verifying a request's proof of login costs the worker, beside the pipeline it guards.

Run: ``.venv/bin/python -m benchmarks.proof_cost [--tokens N] [--runs N]``. No database,
no broker: the tests' signing provider (tests/support/id_tokens.py) serves discovery and
JWKS over real HTTP on loopback, and ``mycert.request_proof.verify_request_proof`` checks
N distinct RS256 ID tokens with its keys cached, as a worker does between two key reads
(the read itself, once per 6 h, is printed apart). The reference is the per-certificate
cost of the ``mycert.pki`` pipeline (key, certificate, PKCS#12 AES-256) by key type, so
the ratio says what the check adds to each certificate. Goal (issue 20): ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_MS = 1.0


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        {
            "DJANGO_DEBUG": "true",
            "MYCERT_VAR_DIR": tempfile.mkdtemp(prefix="mycert-proof-"),
            "MYCERT_LOG_LEVEL": "WARNING",
            "DATABASE_URL": "sqlite:///:memory:",
        }
    )
    from benchmarks.env import _proof_issuer

    os.environ.update(_proof_issuer())
    import django

    django.setup()


def _pipeline_ms(runs: int) -> dict[str, float]:
    """Median ms of key + certificate + PKCS#12 (AES-256), per key type."""
    from mycert.pki import (
        DistinguishedName,
        KeystoreEncryption,
        KeyType,
        ProfessionalIdentity,
        ProfessionalProfile,
        build_keystore,
        create_issuing_ca,
        create_root_ca,
        generate_keystore_password,
        generate_private_key,
        issue_professional_certificate,
    )

    now = datetime.now(UTC)
    root = create_root_ca(
        subject=DistinguishedName("Bench Root", "Agence eSanté", "LU"),
        key_type=KeyType.RSA_3072,
        now=now,
    )
    issuing = create_issuing_ca(
        root=root,
        subject=DistinguishedName("Bench Issuing", "Agence eSanté", "LU"),
        key_type=KeyType.RSA_3072,
        now=now,
    )
    profile = ProfessionalProfile(
        organization="Agence eSanté",
        policy_oid="1.3.6.1.4.1.99999.1",
        crl_url="http://pki.example.lu/crl",
        ocsp_url="http://pki.example.lu/ocsp",
        ca_issuers_url="http://pki.example.lu/ca.crt",
    )
    identity = ProfessionalIdentity("Marie", "Dupont", "MED-0001", "marie@example.lu")
    medians: dict[str, float] = {}
    for key_type in (KeyType.EC_P256, KeyType.RSA_3072):
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            key = generate_private_key(key_type)
            certificate = issue_professional_certificate(
                issuer=issuing,
                public_key=key.public_key(),
                identity=identity,
                profile=profile,
                now=now,
            )
            build_keystore(
                private_key=key,
                certificate=certificate,
                chain=[issuing.certificate, root.certificate],
                password=generate_keystore_password(),
                friendly_name="MyCert Marie Dupont",
                encryption=KeystoreEncryption.AES256,
            )
            samples.append((time.perf_counter() - start) * 1000)
        medians[key_type.value] = statistics.median(samples)
    return medians


def measure_verification(count: int) -> dict[str, float]:
    """Verify ``count`` distinct tokens, keys cached; the figures in ms.

    Django must be set up with ``OIDC_ISSUER`` at the tests' signing provider
    (``benchmarks.env`` does it).
    """
    from mycert import request_proof
    from tests.support.id_tokens import id_token_for, signing_provider

    tokens = [
        id_token_for(
            SimpleNamespace(  # type: ignore[arg-type]
                oidc_subject=f"sub-{n}",
                professional_id=f"LU-MED-{n:06d}",
                given_name="Marie",
                family_name=f"Dupont {n}",
                email=f"marie.dupont.{n}@cabinet.lu",
            )
        )
        for n in range(count)
    ]
    request_proof.reset_provider_keys()
    before = signing_provider().requests_served
    start = time.perf_counter()
    request_proof.verify_request_proof(tokens[0], now=time.time())
    cold_ms = (time.perf_counter() - start) * 1000
    samples = []
    for token in tokens:
        start = time.perf_counter()
        request_proof.verify_request_proof(token, now=time.time())
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "tokens": float(len(samples)),
        "median_ms": statistics.median(samples),
        "mean_ms": statistics.fmean(samples),
        "p99_ms": samples[max(int(len(samples) * 0.99) - 1, 0)],
        "cold_ms": cold_ms,
        "provider_requests": float(signing_provider().requests_served - before),
        "goal_ms": GOAL_MS,
    }


def report(figures: dict[str, float], pipeline_ms: dict[str, float]) -> list[str]:
    """The lines to print: the check's cost, and its share of each pipeline."""
    lines = [
        f"request proof (RS256 ID token, JWKS cached), {int(figures['tokens'])} tokens: "
        f"median {figures['median_ms']:.3f} ms, mean {figures['mean_ms']:.3f} ms, "
        f"p99 {figures['p99_ms']:.3f} ms (goal ≤ {GOAL_MS} ms per certificate)",
        f"  first check, reading discovery and JWKS: {figures['cold_ms']:.1f} ms; requests "
        f"to the provider in all: {int(figures['provider_requests'])}",
    ]
    for key_type, total_ms in pipeline_ms.items():
        lines.append(
            f"  pipeline {key_type}: {total_ms:.1f} ms per certificate; the proof adds "
            f"{100 * figures['mean_ms'] / total_ms:.2f} % (mean)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=10, help="pipeline runs per key type")
    args = parser.parse_args()
    _setup()
    figures = measure_verification(args.tokens)
    for line in report(figures, _pipeline_ms(args.runs)):
        print(line)
    if figures["mean_ms"] > GOAL_MS:
        print(f"GOAL MISSED: {figures['mean_ms']:.3f} ms > {GOAL_MS} ms")
        sys.exit(1)


if __name__ == "__main__":
    main()
