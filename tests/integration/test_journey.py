"""The whole journey on real parts: OpenID provider, PostgreSQL, Redis, a Celery worker,
an SMTP server, gpg, openssl and keytool. Nothing is mocked.

A professional logs in, asks for a certificate with a vendor copy, and receives the
keystore and its password in two e-mails; the vendor receives both, OpenPGP-encrypted.
"""

from __future__ import annotations

import re
import subprocess
import time
from email.message import Message
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from mycert.models import Certificate, CertificateRequest, Delivery
from tests.factories import ConfirmedVendorFactory
from tests.support.gpg import GpgKey, decrypt
from tests.support.oidc_provider import login_professional, professional_claims
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD_PATTERN = re.compile(r"\b(?:[A-Za-z0-9]{4}-){5}[A-Za-z0-9]{4}\b")


def _attachment(message: Message) -> tuple[str, bytes]:
    for part in message.walk():
        if part.get_content_type() == "application/x-pkcs12":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return part.get_filename() or "", payload
    raise AssertionError("no PKCS#12 attachment")


def _text(message: Message) -> str:
    texts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            texts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return "\n".join(texts)


def _password(message: Message) -> str:
    found = PASSWORD_PATTERN.findall(_text(message))
    assert len(found) == 1, "the password e-mail carries exactly one password"
    return found[0]


def _openssl_opens(keystore: Path, password: str, ca_dir: Path) -> None:
    info = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            str(keystore),
            "-passin",
            f"pass:{password}",
            "-nokeys",
            "-info",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert info.stdout.count("BEGIN CERTIFICATE") == 3, "key, leaf and the whole chain"
    assert "PBES2, PBKDF2, AES-256-CBC" in info.stderr
    leaf = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            str(keystore),
            "-passin",
            f"pass:{password}",
            "-nokeys",
            "-clcerts",
        ],
        capture_output=True,
        check=True,
    ).stdout
    leaf_path = keystore.with_suffix(".leaf.pem")
    leaf_path.write_bytes(leaf)
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(ca_dir / "root.pem"),
            "-untrusted",
            str(ca_dir / "issuing.pem"),
            str(leaf_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip().endswith("OK")


def _keytool_opens(keystore: Path, password: str) -> None:
    listed = subprocess.run(
        [
            "keytool",
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-keystore",
            str(keystore),
            "-storepass",
            password,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "PrivateKeyEntry" in listed.stdout
    assert "Certificate chain length: 3" in listed.stdout


def _database_dump() -> bytes:
    params = connection.settings_dict
    return subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "--no-owner",
            "-h",
            params.get("HOST") or "127.0.0.1",
            "-p",
            str(params.get("PORT") or 5432),
            "-U",
            params.get("USER") or "postgres",
            params["NAME"],
        ],
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def journey(
    settings, ca, oidc_settings, smtp_process: SmtpProcess, vendor_key: GpgKey, worker_env, tmp_path
):
    """A worker sending to the SMTP process; the vendor's key on file."""
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    worker_env["EMAIL_URL"] = f"smtp://{smtp_process.host}:{smtp_process.port}"
    worker_env["MYCERT_CERT_KEY_TYPE"] = "rsa-3072"
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1", concurrency=2)
    try:
        yield workers
    finally:
        workers.stop_all()


def test_professional_receives_keystore_and_password_vendor_gets_encrypted_copy(
    journey: WorkerProcess,
    oidc_settings,
    smtp_process: SmtpProcess,
    vendor_key: GpgKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vendor = ConfirmedVendorFactory.create(key=vendor_key)  # add_vendor on the worker host
    client = Client()
    claims = professional_claims(
        email="anne.muller@cabinet.lu", given_name="Anne", family_name="Muller"
    )
    response = login_professional(client, oidc_settings, "journey-anne", claims)
    assert response.status_code == 302

    form = client.get(reverse("request-certificate"))
    assert form.status_code == 200
    started = time.monotonic()
    response = client.post(
        reverse("request-certificate"), {"vendor": str(vendor.pk), "terms_accepted": "on"}
    )
    assert response.status_code == 302
    assert "Demande envoyée." in client.get(response["Location"]).content.decode()

    request = CertificateRequest.objects.get()
    try:
        wait_until(
            lambda: len(smtp_process.outbox_messages()) >= 4, timeout=90, what="four e-mails"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{journey.logs()[-6000:]}") from exc
    elapsed = time.monotonic() - started
    wait_until(
        lambda: (
            CertificateRequest.objects.get(pk=request.pk).status == CertificateRequest.Status.SENT
        ),
        timeout=30,
        what="the request to be marked sent",
    )
    with capsys.disabled():
        print(f"\n[journey] from “Envoyer” to the last e-mail accepted: {elapsed:.2f} s")

    messages = smtp_process.outbox_messages()
    assert len(messages) == 4, "two e-mails to the professional, two to the vendor, no more"
    assert len(set(smtp_process.by_message_id())) == 4
    to_professional = [m for m in messages if "anne.muller@cabinet.lu" in str(m["To"])]
    to_vendor = [m for m in messages if vendor.email in str(m["To"])]
    assert len(to_professional) == 2
    assert len(to_vendor) == 2

    # The professional's keystore e-mail comes first, then the password e-mail.
    keystore_mail, password_mail = to_professional
    filename, keystore = _attachment(keystore_mail)
    assert filename.endswith(".p12")
    password = _password(password_mail)
    assert not any(p.get_content_type() == "application/x-pkcs12" for p in password_mail.walk())
    assert password not in _text(keystore_mail)

    ca_dir = Path(settings.MYCERT_CA_DIR)
    keystore_path = tmp_path / filename
    keystore_path.write_bytes(keystore)
    _openssl_opens(keystore_path, password, ca_dir)
    _keytool_opens(keystore_path, password)

    # The vendor's copies are PGP/MIME (RFC 3156) and decrypt with the vendor's key only.
    for message in to_vendor:
        assert message.get_content_type() == "multipart/encrypted"
        assert "Muller" not in str(message["Subject"])
    vendor_keystore_mail, vendor_password_mail = (decrypt(vendor_key, m) for m in to_vendor)
    _, vendor_keystore = _attachment(vendor_keystore_mail)
    assert vendor_keystore == keystore
    assert _password(vendor_password_mail) == password

    certificate = Certificate.objects.get(request=request)
    _, leaf, chain = pkcs12.load_key_and_certificates(keystore, password.encode())
    assert leaf is not None
    assert format(leaf.serial_number, "x") == certificate.serial
    assert leaf.subject.rfc4514_string() == certificate.subject
    assert len(chain) == 2
    assert (
        Delivery.objects.filter(certificate=certificate, status=Delivery.Status.SENT).count() == 4
    )

    # After delivery, nothing secret is left in the database, in any form.
    assert not Delivery.objects.filter(sealed_payload__isnull=False).exists()
    dump = _database_dump()
    assert password.encode() not in dump
    assert b"PRIVATE KEY" not in dump
    assert keystore[64:96].hex().encode() not in dump
    page = client.get(reverse("my-certificates")).content.decode()
    assert certificate.serial in page
