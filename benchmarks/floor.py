"""The bare delivery floor (issue 24 §3): what delivering one certificate costs at the least.

No MyCert code. Per certificate, in one process:

- the bare pipeline of ``benchmarks/bare.py``: key generation, the revocation code's
  scrypt hash, the certificate signed by the same issuing CA key, the PKCS#12;
- the MIME messages, built with the standard library's ``email`` package, whose text
  parts have the sizes of MyCert's own (read from one of MyCert's messages of the same
  run): the keystore and the password e-mails to the professional and, every other
  certificate as in the population, the same two to the vendor;
- the vendor's two copies OpenPGP-encrypted with python-gnupg the way MyCert calls it
  (``encrypt(…, always_trust=True, armor=True, extra_args=["--no-encrypt-to"])``,
  one gpg process each) in the workers' keyring;
- every message sent over SMTP to the run's sink process, on one kept connection;
- one INSERT and one UPDATE (two autocommitted statements) through psycopg, on
  PostgreSQL, in a table of the benchmark's database.

``python -m benchmarks.floor FOLDER KEY_TYPE COUNT FIRST`` runs COUNT certificates numbered
from FIRST and prints one JSON line: the seconds the batch took (after imports, the CA
load and the connections) and the seconds of each stage. FOLDER is the bare pipeline's
(issuing.pem, issuing-key.pem, root.pem) and holds ``floor.json``: the GnuPG home and
binary, the vendor's fingerprint, the sink's port, the database's URL and the sizes of
MyCert's text parts.
"""

from __future__ import annotations

import json
import secrets
import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

TABLE = "bench_delivery_floor"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, serial text NOT NULL, "
    "pem text NOT NULL, status text NOT NULL, sent_at timestamptz)"
)


def _filler(size: int) -> str:
    """Text of ``size`` characters in lines of 72, like a plain-text e-mail body."""
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod. "[:71]
    return ((line + "\n") * (size // 72 + 1))[:size]


def _message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{secrets.token_hex(16)}@floor.bench>"
    message.set_content(body)
    return message


def run(folder: Path, key_type: str, count: int, first: int) -> dict[str, Any]:
    import gnupg
    import psycopg
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from benchmarks import bare

    config = json.loads((folder / "floor.json").read_text())
    issuer = bare.BareIssuer(
        certificate=x509.load_pem_x509_certificate((folder / "issuing.pem").read_bytes()),
        private_key=serialization.load_pem_private_key(  # type: ignore[arg-type]
            (folder / "issuing-key.pem").read_bytes(), None
        ),
        root=x509.load_pem_x509_certificate((folder / "root.pem").read_bytes()),
        base_url="http://127.0.0.1:8000",
    )
    gpg = gnupg.GPG(gnupghome=config["gnupg_home"], gpgbinary=config["gpg_binary"])
    sizes: dict[str, int] = config["text_sizes"]
    stages = dict.fromkeys(("bare", "mime", "openpgp", "smtp", "database"), 0.0)

    def encrypt(data: bytes) -> bytes:
        encrypted = gpg.encrypt(
            data,
            [config["vendor_fingerprint"]],
            always_trust=True,
            armor=True,
            extra_args=["--no-encrypt-to"],
        )
        if not encrypted.ok:
            raise RuntimeError(f"gpg: {encrypted.status}")
        armored: bytes = encrypted.data
        return armored

    @contextmanager
    def clock(stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        stages[stage] += time.perf_counter() - start

    # Table names cannot be query parameters; TABLE is this module's constant.
    insert = f"INSERT INTO {TABLE} (serial, pem, status) VALUES (%s, %s, 'pending') RETURNING id"  # noqa: S608
    update = f"UPDATE {TABLE} SET status = 'sent', sent_at = now() WHERE id = %s"  # noqa: S608
    sender, vendor = "mycert@esante.lu", "support@bench-vendor.example.lu"
    with (
        psycopg.connect(config["database_url"], autocommit=True) as db,
        smtplib.SMTP("127.0.0.1", config["sink_port"]) as smtp,
    ):
        start = time.perf_counter()
        for number in range(first, first + count):
            with clock("bare"):
                key = bare.generate_key(key_type)
                bare.revocation_code_hash()
                certificate = bare.sign(issuer, key.public_key(), number, datetime.now(UTC))
                keystore = bare.keystore(issuer, key, certificate)
            with clock("database"):
                pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
                row = db.execute(insert, (format(certificate.serial_number, "x"), pem)).fetchone()
            password = secrets.token_urlsafe(18)
            with clock("mime"):
                to = f"m{number}@cabinet.lu"
                keystore_mail = _message(sender, to, "Votre certificat", _filler(sizes["keystore"]))
                keystore_mail.add_attachment(
                    keystore, maintype="application", subtype="x-pkcs12", filename="mycert.p12"
                )
                password_body = _filler(sizes["password"] - len(password)) + password
                messages = [
                    keystore_mail,
                    _message(sender, to, "Votre mot de passe", password_body),
                ]
            # Every other certificate has a vendor, as in the population.
            if number % 2 == 0:
                for subject, clear in (
                    ("Copie du certificat", keystore),
                    ("Copie du mot de passe", password.encode()),
                ):
                    with clock("openpgp"):
                        armored = encrypt(clear)
                    with clock("mime"):
                        messages.append(_message(sender, vendor, subject, armored.decode()))
            with clock("smtp"):
                for message in messages:
                    smtp.send_message(message)
            with clock("database"):
                db.execute(update, (row[0] if row else None,))
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "stages": stages, "count": count}


def main(argv: list[str]) -> None:
    folder, key_type, count, first = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(run(folder, key_type, count, first)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
