"""Secrets stay where they belong: after a batch on real parts, no private key, keystore
password, revocation code or CA passphrase is found in the database dump, the worker's and the web's logs,
or anything that went through the broker.

The secrets are taken from what the professionals received: each keystore is opened with
the password of the other e-mail, and the key inside is searched for in every encoding a
leak would take (DER, hex, base64, its private numbers). Redis is read while the batch
runs (queued and unacknowledged task messages, with their base64 bodies decoded), since
an empty queue afterwards proves nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import reverse

from mycert import custody
from mycert.models import CertificateRequest
from tests.factories import ConfirmedVendorFactory, ProfessionalFactory
from tests.support.gpg import GpgKey, decrypt
from tests.support.id_tokens import force_login_with_proof
from tests.support.smtp_server import SmtpProcess
from tests.support.worker import (
    WorkerProcess,
    assert_batch_complete,
    batch_figures,
    fast_fault_env,
    submit_batch,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD_PATTERN = re.compile(rb"\b(?:[A-Za-z0-9]{4}-){5}[A-Za-z0-9]{4}\b")
# The revocation code of the professional's password e-mail (issue 23): groups of five.
CODE_PATTERN = re.compile(rb"\b(?:[A-Za-z0-9]{5}-){4}[A-Za-z0-9]{5}\b")
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/=_-]{16,}")


class RedisRecorder:
    """Reads every key of the broker's database again and again while the batch runs."""

    def __init__(self, url: str) -> None:
        # bytes in, bytes out (no decode_responses); redis-py types say bytes | str.
        self.client: Any = redis.Redis.from_url(url)
        self.blobs: set[bytes] = set()
        self.keys: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RedisRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.snapshot()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.snapshot()
            time.sleep(0.02)

    def snapshot(self) -> None:
        client = self.client
        for key in client.keys("*"):
            self.keys.add(key)
            kind = client.type(key)
            values: list[bytes] = []
            if kind == b"string":
                values = [client.get(key) or b""]
            elif kind == b"list":
                values = list(client.lrange(key, 0, -1))
            elif kind == b"hash":
                values = [v for pair in client.hgetall(key).items() for v in pair]
            elif kind == b"set":
                values = list(client.smembers(key))
            elif kind == b"zset":
                values = list(client.zrange(key, 0, -1))
            self.blobs.update([key, *values])

    def corpus(self) -> bytes:
        """Everything seen, plus every base64 run in it decoded (kombu encodes bodies)."""
        seen = list(self.blobs)
        decoded: list[bytes] = []
        for _ in range(2):  # a body inside a message inside the unacked hash
            for blob in seen:
                for run in BASE64_RUN.findall(blob):
                    for decode in (base64.b64decode, base64.urlsafe_b64decode):
                        with contextlib.suppress(binascii.Error, ValueError):
                            decoded.append(decode(run + b"=" * (-len(run) % 4)))
            seen = decoded
        return b"\n".join([*self.blobs, *decoded])


def _encodings(secret: bytes) -> list[bytes]:
    """The forms a leaked byte string would take in a log, a dump or a message."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        b"\\x" + secret.hex().encode(),  # PostgreSQL bytea in a dump
    ]


def _key_material(key: object) -> list[bytes]:
    """DER in both encodings and the private numbers of a private key."""
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    material = [
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        values = [numbers.d, numbers.p, numbers.q]
    else:
        values = [key.private_numbers().private_value]
    material += [v.to_bytes((v.bit_length() + 7) // 8, "big") for v in values]
    # A 24-byte slice from the middle of the DER: a partial leak is a leak too.
    der = material[0]
    material.append(der[len(der) // 2 : len(der) // 2 + 24])
    return material


def _attachment(message: Message) -> bytes:
    for part in message.walk():
        if part.get_content_type() == "application/x-pkcs12":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError("no PKCS#12 attachment")


def _password(message: Message) -> bytes:
    texts = b"\n".join(
        part.get_payload(decode=True) or b""  # type: ignore[misc]
        for part in message.walk()
        if part.get_content_type() == "text/plain"
    )
    found = PASSWORD_PATTERN.findall(texts)
    assert len(found) == 1
    return found[0]


def _database_dump() -> bytes:
    params = connection.settings_dict
    return subprocess.run(
        [
            "pg_dump", "--data-only", "--no-owner",
            "-h", params.get("HOST") or "127.0.0.1", "-p", str(params.get("PORT") or 5432),
            "-U", params.get("USER") or "postgres", params["NAME"],
        ],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def hygiene_rig(
    settings,
    ca,
    smtp_process: SmtpProcess,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    settings.EMAIL_HOST = smtp_process.host
    settings.EMAIL_PORT = smtp_process.port
    # RSA: its key has large, distinctive private numbers to look for.
    settings.MYCERT_CERT_KEY_TYPE = "rsa-2048"
    fast_fault_env(worker_env, email_url=f"smtp://{smtp_process.host}:{smtp_process.port}")
    worker_env["MYCERT_LOG_LEVEL"] = "DEBUG"
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    try:
        yield workers
    finally:
        workers.stop_all()


def test_no_secret_in_database_logs_or_broker(
    hygiene_rig: WorkerProcess,
    smtp_process: SmtpProcess,
    vendor_key: GpgKey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    vendor = ConfirmedVendorFactory.create(key=vendor_key)  # add_vendor on the worker host
    started = time.monotonic()
    with RedisRecorder(django_settings.CELERY_BROKER_URL) as broker:
        # Four professionals through the web form, eight more through the service.
        ids: list[int] = []
        for index in range(4):
            web = Client()
            professional = ProfessionalFactory.create()
            force_login_with_proof(web, professional)
            choice = str(vendor.pk) if index % 2 == 0 else "none"
            response = web.post(
                reverse("request-certificate"), {"vendor": choice, "terms_accepted": "on"}
            )
            assert response.status_code == 302
            ids.append(CertificateRequest.objects.get(professional=professional).pk)
            assert web.get(reverse("my-certificates-status")).status_code == 200
        ids += submit_batch(8, vendor=vendor)
        time.sleep(0.5)  # the recorder reads the queue before the worker empties it
        # The first e-mails are refused (451): their retries cross the broker as
        # send_delivery tasks, which the scan then covers too.
        smtp_process.stop()
        smtp_process.start(fail_next=3)
        hygiene_rig.start("w1", concurrency=2)
        wait_for_batch(ids, smtp_process.by_message_id, timeout=120)
    figures = batch_figures(ids, smtp_process.by_message_id(), started=started)
    assert_batch_complete(figures)

    # The secrets, from what the recipients received.
    messages = smtp_process.messages()
    by_recipient: dict[str, list[Message]] = {}
    staff_addresses = {
        django_settings.MYCERT_SECURITY_EMAIL,
        django_settings.MYCERT_HELPDESK_EMAIL,
    }
    staff_mails: list[Message] = []
    for message in messages:
        if message.get_content_type() == "multipart/encrypted":
            message = decrypt(vendor_key, message)  # the vendor's copy, opened
        if str(message["To"]) in staff_addresses:
            # The security officer's alert of the new vendor may arrive during the batch
            # or after it (it can be among the refused first e-mails): not a delivery.
            staff_mails.append(message)
            continue
        by_recipient.setdefault(str(message["To"]), []).append(message)
    secrets: dict[str, list[bytes]] = {}
    keystores = 0
    public_certificates: list[bytes] = []
    for recipient, received in by_recipient.items():
        keystore_mails = [m for m in received if any(p.get_filename() for p in m.walk())]
        password_mails = [m for m in received if m not in keystore_mails]
        for keystore_mail in keystore_mails:
            keystore = _attachment(keystore_mail)
            opened = None
            for password_mail in password_mails:
                password = _password(password_mail)
                try:
                    opened = pkcs12.load_key_and_certificates(keystore, password)
                except ValueError:
                    continue
                secrets[f"password for {recipient}"] = _encodings(password)
                break
            assert opened is not None, f"a keystore for {recipient} opens with a password sent"
            keystores += 1
            leaf = opened[1]
            assert leaf is not None
            public_certificates.append(leaf.public_bytes(serialization.Encoding.DER))
            material = _key_material(opened[0])
            secrets[f"private key for {recipient}"] = [e for m in material for e in _encodings(m)]
            secrets[f"keystore for {recipient}"] = [
                keystore[100:140],
                base64.b64encode(keystore)[100:160],
            ]
    assert keystores == figures.emails_expected // 2

    # Each professional's password e-mail carries one revocation code; no vendor copy does.
    codes = 0
    for recipient, received in by_recipient.items():
        texts = b"\n".join(
            part.get_payload(decode=True) or b""  # type: ignore[misc]
            for message in received
            for part in message.walk()
            if part.get_content_type() in ("text/plain", "text/html")
        )
        found = set(CODE_PATTERN.findall(texts))
        if recipient == vendor.email:
            assert found == set(), "a vendor's copy carries no revocation code"
            continue
        assert len(found) == 1, f"one revocation code for {recipient}"
        (code,) = found
        secrets[f"revocation code for {recipient}"] = [
            *_encodings(code),
            *_encodings(code.replace(b"-", b"")),
        ]
        codes += 1
    assert codes == len(ids)
    for alert in staff_mails:
        text = b"\n".join(part.get_payload(decode=True) or b"" for part in alert.walk())  # type: ignore[misc]
        assert not CODE_PATTERN.search(text), "a staff alert carries no revocation code"
        assert not PASSWORD_PATTERN.search(text), "a staff alert carries no keystore password"

    passphrase = django_settings.MYCERT_CA_KEY_PASSPHRASE.encode()
    secrets["CA passphrase"] = _encodings(passphrase)
    secrets["issuing CA key"] = [
        e for m in _key_material(custody.ca_load().issuing.private_key) for e in _encodings(m)
    ]
    secrets["Django secret key (seals the outbox)"] = [django_settings.SECRET_KEY.encode()]

    worker_logs = hygiene_rig.logs().encode()
    web_logs = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    ).encode()
    broker_seen = broker.corpus()
    places = {
        "database dump": _database_dump(),
        "worker logs": worker_logs,
        "web logs": web_logs,
        "broker": broker_seen,
    }
    # The scan saw real traffic: task messages with their arguments (issuance, and the
    # retries of the refused e-mails), log lines, rows.
    assert b"issue_certificate" in broker_seen
    assert b"send_delivery" in broker_seen
    assert b"issued certificate" in worker_logs
    assert caplog.records, "the web side logged something"
    assert b"COPY public.mycert_delivery" in places["database dump"]

    # Also look through line breaks and spaces (PEM, wrapped base64, COPY's "\\n").
    compact = {place: re.sub(rb"\\n|\s", b"", content) for place, content in places.items()}
    # The search finds what is there: each certificate (public) is in the dump, as PEM.
    assert all(
        any(form in compact["database dump"] for form in _encodings(der))
        for der in public_certificates
    )
    leaks = [
        f"{what} in {place}"
        for place, content in places.items()
        for what, forms in secrets.items()
        if any(form in content or form in compact[place] for form in forms)
    ]
    leaks += [f"PEM private key in {p}" for p, c in places.items() if b"PRIVATE KEY" in c]
    with capsys.disabled():
        print(
            figures.report("secret hygiene"),
            f"keystores opened={keystores} secrets searched={sum(map(len, secrets.values()))} "
            f"forms; scanned: dump={len(places['database dump'])} B, worker logs="
            f"{len(worker_logs)} B, web log records={len(caplog.records)}, broker keys="
            f"{len(broker.keys)} values={len(broker.blobs)} ({len(broker_seen)} B decoded); "
            f"leaks={len(leaks)}",
        )
    assert leaks == []
