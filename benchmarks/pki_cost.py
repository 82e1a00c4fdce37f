"""Per-certificate cost of the mycert.pki pipeline, by key type.

Run: ``.venv/bin/python benchmarks/pki_cost.py [--runs N]``. Prints the median wall
time (ms) of N runs of each step: key generation, signing the professional
certificate (RSA-3072 issuing CA, as in production), and building the PKCS#12 with
AES-256 (PBES2) and legacy 3DES encryption. Also the OCSP path (parse a request and
sign a response) and a 100k-entry CRL, once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from mycert.pki import (
    CertificateStatus,
    DistinguishedName,
    KeystoreEncryption,
    KeyType,
    ProfessionalIdentity,
    ProfessionalProfile,
    RevokedEntry,
    StatusAnswer,
    build_crl,
    build_keystore,
    build_ocsp_response,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    generate_keystore_password,
    generate_private_key,
    issue_professional_certificate,
    parse_ocsp_request,
)

T = TypeVar("T")


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """Return (milliseconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return (time.perf_counter() - start) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs

    now = datetime.now(UTC)
    organization = "Agence eSanté Luxembourg"
    root = create_root_ca(
        subject=DistinguishedName("Bench Root", organization, "LU"),
        key_type=KeyType.RSA_3072,
        now=now,
    )
    issuing = create_issuing_ca(
        root=root,
        subject=DistinguishedName("Bench Issuing", organization, "LU"),
        key_type=KeyType.RSA_3072,
        now=now,
    )
    chain = [issuing.certificate, root.certificate]
    profile = ProfessionalProfile(
        organization=organization,
        policy_oid="1.3.6.1.4.1.99999.1",
        crl_url="http://pki.example.lu/crl",
        ocsp_url="http://pki.example.lu/ocsp",
        ca_issuers_url="http://pki.example.lu/ca.crt",
    )
    identity = ProfessionalIdentity("Marie", "Dupont", "MED-0001", "marie@example.lu")
    password = generate_keystore_password()

    steps = ["keygen", "sign leaf", "p12 AES-256", "p12 3DES", "total (AES)"]
    print(f"mycert.pki per-certificate cost, median of {runs} runs, ms (issuing CA RSA-3072)")
    print(f"{'key type':<10}" + "".join(f"{step:>14}" for step in steps))
    for key_type in KeyType:
        samples: dict[str, list[float]] = {step: [] for step in steps}
        for _ in range(runs):
            keygen_ms, key = timed(partial(generate_private_key, key_type))
            sign_ms, certificate = timed(
                partial(
                    issue_professional_certificate,
                    issuer=issuing,
                    public_key=key.public_key(),
                    identity=identity,
                    profile=profile,
                    now=now,
                )
            )
            p12: dict[KeystoreEncryption, float] = {}
            for encryption in KeystoreEncryption:
                p12[encryption], _ = timed(
                    partial(
                        build_keystore,
                        private_key=key,
                        certificate=certificate,
                        chain=chain,
                        password=password,
                        friendly_name="Marie Dupont",
                        encryption=encryption,
                    )
                )
            samples["keygen"].append(keygen_ms)
            samples["sign leaf"].append(sign_ms)
            samples["p12 AES-256"].append(p12[KeystoreEncryption.AES256])
            samples["p12 3DES"].append(p12[KeystoreEncryption.LEGACY_3DES])
            samples["total (AES)"].append(keygen_ms + sign_ms + p12[KeystoreEncryption.AES256])
        print(
            f"{key_type.value:<10}"
            + "".join(f"{statistics.median(samples[step]):>14.2f}" for step in steps)
        )

    # The OCSP path: parse a request, sign a response (delegated responder, EC P-256).
    responder = create_ocsp_responder(
        issuer=issuing,
        subject=DistinguishedName("Bench OCSP", organization, "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuing.certificate, hashes.SHA256())
        .build()
        .public_bytes(Encoding.DER)
    )
    answer = StatusAnswer(CertificateStatus.GOOD)
    ocsp_samples = []
    for _ in range(max(runs, 200)):
        ms, _ = timed(
            lambda: build_ocsp_response(
                query=parse_ocsp_request(request),
                issuer_certificate=issuing.certificate,
                responder=responder,
                answer=answer,
                now=datetime.now(UTC),
            )
        )
        ocsp_samples.append(ms)
    print(
        f"\nOCSP parse + sign (EC P-256 responder), median of {len(ocsp_samples)}: "
        f"{statistics.median(ocsp_samples):.3f} ms"
    )

    entries = [
        RevokedEntry(serial_number=serial, revoked_at=now - timedelta(seconds=serial))
        for serial in range(1, 100_001)
    ]
    crl_ms, crl = timed(
        lambda: build_crl(
            issuer=issuing,
            entries=entries,
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    )
    print(f"CRL with {len(crl)} entries (RSA-3072 issuing CA), once: {crl_ms:.0f} ms")


if __name__ == "__main__":
    main()
