"""Key custody costs (issue 11): a SoftHSM2 token beside a key file, in the same run.

Run alone: ``.venv/bin/python benchmarks/custody.py [--runs N]`` (needs Debian's
``softhsm2``; the token lives in a temporary folder). Prints the median wall time (ms)
of N runs and the token/file ratios; the machine may be shared, so read the ratios.

- the per-certificate pipeline as a worker runs it: leaf key (EC P-256 and RSA-3072),
  the certificate signed by the RSA-3072 issuing CA, the PKCS#12 keystore;
- the CA signature alone (the part the token changes);
- an OCSP response signed by the EC P-256 responder key;
- loading a CA key file once per process: PBKDF2 600,000 rounds (now) vs 2,048 (before);
- opening the token session once per process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from mycert.pki import (
    CertificateAuthority,
    CertificateStatus,
    DistinguishedName,
    KeystoreEncryption,
    KeyType,
    ProfessionalIdentity,
    ProfessionalProfile,
    StatusAnswer,
    build_keystore,
    build_ocsp_response,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    encrypt_private_key_pem,
    generate_keystore_password,
    generate_private_key,
    issue_professional_certificate,
    load_private_key_pem,
    parse_ocsp_request,
)
from mycert.pki.token import Token

T = TypeVar("T")
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4711-bench"


def median_ms(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def softhsm_token(directory: Path) -> Token:
    (directory / "t").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 't'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            PIN,
            "--so-pin",
            "0815",
        ],
        check=True,
        capture_output=True,
    )
    return Token(module=MODULE, token_label="bench", pin=PIN)  # noqa: S106 - a throwaway token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    if not Path(MODULE).exists() or shutil.which("softhsm2-util") is None:
        sys.exit("SoftHSM2 is missing: apt-get install softhsm2")
    directory = Path(tempfile.mkdtemp(prefix="hsmb", dir="/tmp"))
    try:
        run(directory, runs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(directory: Path, runs: int) -> None:
    now = datetime.now(UTC)
    token = softhsm_token(directory)
    started = time.perf_counter()
    token.session()
    session_ms = (time.perf_counter() - started) * 1000

    root = create_root_ca(
        subject=DistinguishedName("Bench Root", "Agence eSanté", "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    subject = DistinguishedName("Bench Issuing", "Agence eSanté", "LU")
    issuers = {
        "file": create_issuing_ca(root=root, subject=subject, key_type=KeyType.RSA_3072, now=now),
        "token": create_issuing_ca(
            root=root,
            subject=subject,
            key_type=KeyType.RSA_3072,
            now=now,
            key=token.generate_key(KeyType.RSA_3072, "bench-issuing"),
        ),
    }
    responders = {
        name: create_ocsp_responder(
            issuer=issuers["file"],
            subject=DistinguishedName("Bench OCSP", "Agence eSanté", "LU"),
            key_type=KeyType.EC_P256,
            now=now,
            key=None if name == "file" else token.generate_key(KeyType.EC_P256, "bench-ocsp"),
        )
        for name in ("file", "token")
    }
    profile = ProfessionalProfile(
        organization="Agence eSanté",
        policy_oid="1.3.6.1.4.1.59999.1.1",
        crl_url="http://pki.example.lu/pki/crl/issuing.crl",
        ocsp_url="http://pki.example.lu/pki/ocsp/",
        ca_issuers_url="http://pki.example.lu/pki/ca/issuing.cer",
    )
    identity = ProfessionalIdentity(
        given_name="Marie", family_name="Dupont", professional_id="MED-1", email="m@example.lu"
    )
    leaf_keys = {kt: generate_private_key(kt) for kt in (KeyType.EC_P256, KeyType.RSA_3072)}

    def sign_only(issuer: CertificateAuthority, key_type: KeyType) -> None:
        issue_professional_certificate(
            issuer=issuer,
            public_key=leaf_keys[key_type].public_key(),
            identity=identity,
            profile=profile,
            now=now,
        )

    def pipeline(issuer: CertificateAuthority, key_type: KeyType) -> None:
        key = generate_private_key(key_type)
        certificate = issue_professional_certificate(
            issuer=issuer, public_key=key.public_key(), identity=identity, profile=profile, now=now
        )
        build_keystore(
            private_key=key,
            certificate=certificate,
            chain=[issuer.certificate, root.certificate],
            password=generate_keystore_password(),
            friendly_name="Marie Dupont",
            encryption=KeystoreEncryption.AES256,
        )

    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(
            responders["file"].certificate, issuers["file"].certificate, hashes.SHA256()
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    query = parse_ocsp_request(request)

    def ocsp_sign(responder: CertificateAuthority) -> None:
        build_ocsp_response(
            query=query,
            issuer_certificate=issuers["file"].certificate,
            responder=responder,
            answer=StatusAnswer(CertificateStatus.GOOD),
            now=now,
        )

    rows: list[tuple[str, float, float]] = []
    for key_type in (KeyType.EC_P256, KeyType.RSA_3072):
        rows.append(
            (
                f"pipeline, leaf {key_type} (key+cert+PKCS#12)",
                median_ms(partial(pipeline, issuers["file"], key_type), runs),
                median_ms(partial(pipeline, issuers["token"], key_type), runs),
            )
        )
    rows.append(
        (
            "CA signature of one certificate (RSA-3072)",
            median_ms(lambda: sign_only(issuers["file"], KeyType.EC_P256), runs * 4),
            median_ms(lambda: sign_only(issuers["token"], KeyType.EC_P256), runs * 4),
        )
    )
    rows.append(
        (
            "OCSP response (EC P-256 responder)",
            median_ms(lambda: ocsp_sign(responders["file"]), runs * 4),
            median_ms(lambda: ocsp_sign(responders["token"]), runs * 4),
        )
    )

    print(f"{'step':48} {'file ms':>9} {'token ms':>9} {'token/file':>10}")
    for name, file_ms, token_ms in rows:
        print(f"{name:48} {file_ms:9.2f} {token_ms:9.2f} {token_ms / file_ms:9.2f}×")

    passphrase = b"a-strong-passphrase-of-32-chars!"
    issuing_key = issuers["file"].private_key
    new_pem = encrypt_private_key_pem(issuing_key, passphrase)
    old_pem = issuing_key.private_bytes(
        Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    new_ms = median_ms(lambda: load_private_key_pem(new_pem, passphrase), max(runs // 3, 3))
    old_ms = median_ms(lambda: load_private_key_pem(old_pem, passphrase), max(runs // 3, 3))
    print()
    print("once per process:")
    print(f"  load RSA-3072 key file, PBKDF2 600,000 rounds  {new_ms:8.1f} ms")
    print(
        f"  load RSA-3072 key file, PBKDF2 2,048 (before)   {old_ms:8.1f} ms  ({new_ms / old_ms:.0f}×)"
    )
    print(f"  of which PBKDF2 (600,000 − 2,048 rounds)        {new_ms - old_ms:8.1f} ms")
    print(f"  open the SoftHSM2 session (C_Initialize+login)  {session_ms:8.1f} ms")
    token.close()


if __name__ == "__main__":
    main()
