"""Two "hosts" (docs/architecture.md « Hosts and trust boundaries »): a web server holding no
secret, a worker holding the keys.

The web is gunicorn, started from an environment built from nothing: the database, the
broker, DJANGO_SECRET_KEY and a CA folder with the public files only (root.pem,
issuing.pem, ocsp.pem, root.crl). The worker is Celery with the CA keys and the outbox
key. The whole journey runs across them over HTTP: login at the OpenID provider, the
form, four e-mails, the keystore opened by openssl, the helpdesk's revocation in the
admin, OCSP (openssl ocsp) saying revoked, the CRL listing it. Then the web process's
environment, its open files and its CA folder are searched for any secret.

The worker's key custody is a parameter (``worker_backend``): the same journey runs with
key files and with a SoftHSM2 token (``MYCERT_CA_BACKEND=pkcs11``, keys generated inside
it by ``init_ca``).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.utils import timezone

from mycert import custody
from mycert.models import Certificate, CertificateRequest, Professional
from mycert.services.publication import crl_publish
from mycert.services.vendors import vendor_add_confirmed
from tests.support.gpg import GpgKey
from tests.support.hosts import WORKER_SECRETS, public_ca_copy
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, LUXTRUST_ACR, professional_claims
from tests.support.smtp_server import SmtpProcess
from tests.support.softhsm import SoftHsm
from tests.support.worker import (
    BASE_DIR,
    WorkerProcess,
    database_url_for_test_database,
    integration_environment_ready,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD_PATTERN = re.compile(r"\b(?:[A-Za-z0-9]{4}-){5}[A-Za-z0-9]{4}\b")
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- The worker: its key custody is the parameter --------------------------------------------


def _file_backend(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    """Keys in files under MYCERT_CA_DIR, opened with the passphrase (the default)."""
    return env


def _pkcs11_backend(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    """Keys generated inside a SoftHSM2 token by `init_ca`; the worker gets a PIN file.

    This process (the test, which signs the first CRL as a worker would) uses the same
    token, so its settings are pointed at it too. The CA folder holds no private key.
    """
    softhsm: SoftHsm = request.getfixturevalue("softhsm")
    test_settings: Any = request.getfixturevalue("settings")
    label = softhsm.init_token("twohosts")
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o400)
    ca_dir = tmp_path / "token-ca"
    test_settings.MYCERT_CA_BACKEND = "pkcs11"
    test_settings.MYCERT_PKCS11_MODULE = softhsm.module
    test_settings.MYCERT_PKCS11_TOKEN_LABEL = label
    # The root in its own token, which the worker is never told of (offline).
    test_settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = softhsm.init_token("twohosts-root")
    test_settings.MYCERT_PKCS11_PIN = ""
    test_settings.MYCERT_PKCS11_PIN_FILE = str(pin_file)
    test_settings.MYCERT_CA_DIR = ca_dir
    custody.cache_clear()
    call_command("init_ca", key_type="ec-p256")
    custody.cache_clear()
    worker = {k: v for k, v in env.items() if k != "MYCERT_CA_KEY_PASSPHRASE"}
    worker.update(
        {
            "MYCERT_CA_BACKEND": "pkcs11",
            "MYCERT_PKCS11_MODULE": softhsm.module,
            "MYCERT_PKCS11_TOKEN_LABEL": label,
            "MYCERT_PKCS11_PIN_FILE": str(pin_file),
            "MYCERT_CA_DIR": str(ca_dir),
            "SOFTHSM2_CONF": str(softhsm.conf),
        }
    )
    return worker


#: How a worker may hold the CA keys. Each entry takes the base worker environment (the
#: test's database, broker, SMTP, full CA folder) and returns the worker's own; the web
#: host then gets the public files of the worker's CA folder.
WORKER_BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, dict[str, str], Path], dict[str, str]]
] = {
    "file": _file_backend,
    "pkcs11": _pkcs11_backend,
}


@pytest.fixture(params=sorted(WORKER_BACKENDS))
def worker_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def two_host_worker_env(
    request: pytest.FixtureRequest,
    worker_backend: str,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> dict[str, str]:
    return WORKER_BACKENDS[worker_backend](request, worker_env, tmp_path)


# --- The web host: built from nothing, public files only ---------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class WebHost:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    ca_dir: Path
    log: Path

    def pids(self) -> list[int]:
        """The gunicorn arbiter and its workers."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [self.process.pid, *(int(p) for p in children.read_text().split())]


def _web_env(
    tmp_path: Path, *, port: int, ca_dir: Path, smtp: SmtpProcess, issuer: str
) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(BASE_DIR),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url_for_test_database(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "EMAIL_URL": f"smtp://{smtp.host}:{smtp.port}",
        # Plain http on loopback: the explicit opt-out from HTTPS-by-default (deploy.md §15).
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "MYCERT_BASE_URL": url,
        "MYCERT_PKI_BASE_URL": url,
        "MYCERT_CA_DIR": str(ca_dir),
        "MYCERT_VAR_DIR": str(tmp_path / "web-var"),
        # The web's own (empty) keyring: the vendors' keys are checked there on entry.
        "MYCERT_GNUPG_HOME": tempfile.mkdtemp(prefix="gw", dir="/tmp"),
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "MYCERT_OIDC_ACCEPTED_ACR": LUXTRUST_ACR,
        # Tests never collect static files; the admin's TOTP is tested on its own.
        "MYCERT_STATIC_MANIFEST": "false",
        "MYCERT_ADMIN_REQUIRE_OTP": "false",
    }


@pytest.fixture
def web_host(
    two_host_worker_env: dict[str, str],
    oidc_provider: Any,
    smtp_process: SmtpProcess,
    tmp_path: Path,
) -> Iterator[WebHost]:
    reason = integration_environment_ready()
    if reason:
        pytest.skip(reason)
    port = _free_port()
    public = public_ca_copy(Path(two_host_worker_env["MYCERT_CA_DIR"]), tmp_path / "web-ca")
    env = _web_env(
        tmp_path, port=port, ca_dir=public, smtp=smtp_process, issuer=oidc_provider.issuer
    )
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    host = WebHost(f"http://127.0.0.1:{port}", process, env, public, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log.read_text(errors='replace')}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/pki/ca/issuing.cer")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    try:
        wait_until(answers, timeout=30, what="gunicorn")
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def worker_host(
    two_host_worker_env: dict[str, str],
    web_host: WebHost,
    smtp_process: SmtpProcess,
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    env = dict(two_host_worker_env)
    env.update(
        {
            "EMAIL_URL": f"smtp://{smtp_process.host}:{smtp_process.port}",
            "MYCERT_BASE_URL": web_host.url,
            "MYCERT_PKI_BASE_URL": web_host.url,
            "MYCERT_CERT_KEY_TYPE": "ec-p256",
            # The worker verifies each request's ID token with the provider the web host
            # logs in with (issue 20 §1); it reads the keys itself.
            "OIDC_ISSUER": web_host.env["OIDC_ISSUER"],
            "OIDC_CLIENT_ID": web_host.env["OIDC_CLIENT_ID"],
            "MYCERT_OIDC_ACCEPTED_ACR": web_host.env["MYCERT_OIDC_ACCEPTED_ACR"],
        }
    )
    workers = WorkerProcess(env=env, log_path=tmp_path / "worker.log")
    workers.start("w1", concurrency=2)
    try:
        yield workers
    finally:
        workers.stop_all()


# --- The journey over HTTP -----------------------------------------------------------------------


def _csrf(page: str) -> str:
    found = CSRF_FIELD.search(page)
    assert found, "the page carries a CSRF token"
    return found.group(1)


def _login(web: WebHost, oidc_provider: Any, session: requests.Session) -> None:
    sub = f"two-hosts-{secrets.token_hex(4)}"
    oidc_provider.set_user(
        sub,
        professional_claims(
            email="anne.muller@cabinet.lu", given_name="Anne", family_name="Muller"
        ),
    )
    start = session.get(f"{web.url}/oidc/login/", allow_redirects=False, timeout=10)
    assert start.status_code == 302, start.text
    callback = oidc_provider.authorize(start.headers["Location"], sub)
    assert callback.startswith(web.url), callback
    done = session.get(callback, allow_redirects=False, timeout=10)
    assert done.status_code == 302, done.text


def _mail_text(message: Any) -> str:
    return "\n".join(
        part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        for part in message.walk()
        if part.get_content_type() == "text/plain"
    )


def _keystore(message: Any) -> bytes:
    for part in message.walk():
        if part.get_content_type() == "application/x-pkcs12":
            payload: bytes = part.get_payload(decode=True)
            return payload
    raise AssertionError("no PKCS#12 attachment")


def _admin_revoke(web: WebHost, certificate_id: int) -> None:
    password = secrets.token_urlsafe(16)
    agent = User.objects.create_user("agent", password=password, is_staff=True)
    agent.groups.add(Group.objects.get(name="Helpdesk"))
    admin = requests.Session()
    login_page = admin.get(f"{web.url}/admin/login/", timeout=10).text
    logged = admin.post(
        f"{web.url}/admin/login/?next=/admin/",
        {
            "username": "agent",
            "password": password,
            "csrfmiddlewaretoken": _csrf(login_page),
            "next": "/admin/",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert logged.status_code == 302, logged.text[:2000]
    changelist = f"{web.url}/admin/mycert/certificate/"
    token = _csrf(admin.get(changelist, timeout=10).text)
    form = {
        "action": "revoke_selected",
        "_selected_action": [str(certificate_id)],
        "csrfmiddlewaretoken": token,
    }
    confirmation = admin.post(changelist, form, timeout=10)
    assert confirmation.status_code == 200
    done = admin.post(
        changelist,
        {
            **form,
            "csrfmiddlewaretoken": _csrf(confirmation.text),
            "post": "yes",
            "reason": "keyCompromise",
            "comment": "ticket 2",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 302, done.text[:2000]


def _openssl_ocsp(web: WebHost, leaf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "ocsp", "-url", f"{web.url}/pki/ocsp/", "-issuer", str(web.ca_dir / "issuing.pem"),
            "-cert", str(leaf), "-CAfile", str(web.ca_dir / "root.pem"), "-no_nonce", "-timeout", "10",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )  # fmt: skip


def _crl_lists(web: WebHost, serial: int) -> bool:
    crl = x509.load_der_x509_crl(requests.get(f"{web.url}/pki/crl/issuing.crl", timeout=10).content)
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


# --- What the web host holds -------------------------------------------------------------------


def _secrets(worker_env: dict[str, str]) -> list[str]:
    values = [worker_env[name] for name in WORKER_SECRETS if worker_env.get(name)]
    assert values, "the worker holds at least one secret to look for"
    return values


def _assert_holds_nothing_secret(web: WebHost, worker_env: dict[str, str]) -> None:
    hidden = [value.encode() for value in _secrets(worker_env)]
    forbidden = [b"PRIVATE KEY", *hidden]
    for pid in web.pids():
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
        assert not names & set(WORKER_SECRETS), (
            f"process {pid} was given {names & set(WORKER_SECRETS)}"
        )
        assert not any(secret in environ for secret in hidden), (
            f"a secret is in process {pid}'s environment"
        )
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = Path(os.readlink(fd))
                if target.is_absolute() and target.is_file():
                    content = target.read_bytes()
                    assert not any(f in content for f in forbidden), (
                        f"process {pid} holds {target} open"
                    )
    names = {f.name for f in web.ca_dir.iterdir()}
    assert names <= {"root.pem", "issuing.pem", "ocsp.pem", "root.crl", "root-ocsp"}
    files = sorted(f for f in web.ca_dir.rglob("*") if f.is_file())
    for path in files:
        content = path.read_bytes()
        assert not any(f in content for f in forbidden), f"{path} holds a secret"


def test_the_journey_across_a_keyless_web_host_and_a_worker(
    web_host: WebHost,
    worker_host: WorkerProcess,
    two_host_worker_env: dict[str, str],
    oidc_provider: Any,
    smtp_process: SmtpProcess,
    vendor_key: GpgKey,
    helpdesk_group: Group,
    tmp_path: Path,
) -> None:
    crl_publish(now=timezone.now())
    vendor = vendor_add_confirmed(  # add_vendor on the worker host
        name="Logiciel Médical SA",
        email=vendor_key.uid_address,
        pgp_key=vendor_key.public,
        legacy_keystore=False,
        actor="system",
        now=timezone.now(),
    )
    session = requests.Session()
    _login(web_host, oidc_provider, session)
    form_page = session.get(f"{web_host.url}/request/", timeout=10)
    assert form_page.status_code == 200
    sent = session.post(
        f"{web_host.url}/request/",
        {
            "vendor": str(vendor.pk),
            "terms_accepted": "on",
            "csrfmiddlewaretoken": _csrf(form_page.text),
        },
        allow_redirects=True,
        timeout=10,
    )
    assert "Demande envoyée." in sent.text

    try:
        wait_until(
            lambda: len(smtp_process.outbox_messages()) >= 4, timeout=90, what="four e-mails"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker ---\n{worker_host.logs()[-4000:]}") from exc
    messages = smtp_process.outbox_messages()
    assert len(messages) == 4
    keystore_mail, password_mail = (m for m in messages if "anne.muller@cabinet.lu" in str(m["To"]))
    keystore = _keystore(keystore_mail)
    (password,) = PASSWORD_PATTERN.findall(_mail_text(password_mail))
    keystore_path = tmp_path / "anne.p12"
    keystore_path.write_bytes(keystore)
    opened = subprocess.run(
        ["openssl", "pkcs12", "-in", str(keystore_path), "-passin", f"pass:{password}", "-nokeys", "-clcerts"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(opened.stdout)
    _, leaf, _ = pkcs12.load_key_and_certificates(keystore, password.encode())
    assert leaf is not None
    record = Certificate.objects.get(serial=format(leaf.serial_number, "x"))
    wait_until(
        lambda: CertificateRequest.objects.get(pk=record.request_id).status == "sent",
        timeout=30,
        what="the request to be marked sent",
    )

    good = _openssl_ocsp(web_host, leaf_path)
    assert "Response verify OK" in good.stderr, good.stdout + good.stderr
    assert f"{leaf_path}: good" in good.stdout

    _admin_revoke(web_host, record.pk)

    def ocsp_says_revoked() -> bool:
        answer = _openssl_ocsp(web_host, leaf_path)
        # tryLater until the worker has stored the revoked answer; never "good" again.
        assert ": good" not in answer.stdout, answer.stdout
        return "Response verify OK" in answer.stderr and ": revoked" in answer.stdout

    wait_until(ocsp_says_revoked, timeout=30, interval=0.1, what="OCSP to say revoked")
    wait_until(
        lambda: _crl_lists(web_host, leaf.serial_number), timeout=60, what="the CRL to list it"
    )

    _assert_holds_nothing_secret(web_host, two_host_worker_env)


CODE_PATTERN = re.compile(r"\b(?:[A-Za-z0-9]{5}-){4}[A-Za-z0-9]{5}\b")


@pytest.mark.parametrize("worker_backend", ["file"], indirect=True)
def test_a_revocation_code_revokes_on_the_keyless_web_host(
    web_host: WebHost,
    worker_host: WorkerProcess,
    two_host_worker_env: dict[str, str],
    oidc_provider: Any,
    smtp_process: SmtpProcess,
) -> None:
    """The worker makes and seals the code; the web host, holding no key, checks its hash."""
    crl_publish(now=timezone.now())
    # A real login through the provider: the worker issues only on its signed ID token.
    session = requests.Session()
    _login(web_host, oidc_provider, session)
    form_page = session.get(f"{web_host.url}/request/", timeout=10)
    sent = session.post(
        f"{web_host.url}/request/",
        {"vendor": "none", "terms_accepted": "on", "csrfmiddlewaretoken": _csrf(form_page.text)},
        allow_redirects=True,
        timeout=10,
    )
    assert "Demande envoyée." in sent.text, sent.text
    professional = Professional.objects.get(email="anne.muller@cabinet.lu")

    def mails() -> list[Any]:
        return [m for m in smtp_process.outbox_messages() if professional.email in str(m["To"])]

    try:
        wait_until(lambda: len(mails()) >= 2, timeout=90, what="the professional's two e-mails")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker ---\n{worker_host.logs()[-4000:]}") from exc
    (code,) = CODE_PATTERN.findall(_mail_text(mails()[1]))
    record = Certificate.objects.get(professional=professional)

    session = requests.Session()  # the holder, not logged in
    start = session.get(f"{web_host.url}/revoke/", timeout=10)
    checked = session.post(
        f"{web_host.url}/revoke/",
        {"identifier": record.serial, "code": code, "csrfmiddlewaretoken": _csrf(start.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert checked.status_code == 302, checked.text
    confirm = session.get(f"{web_host.url}/revoke/confirm/", timeout=10)
    assert professional.full_name in confirm.text
    done = session.post(
        f"{web_host.url}/revoke/confirm/",
        {"reason": "keyCompromise", "confirm": "on", "csrfmiddlewaretoken": _csrf(confirm.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert done.status_code == 302, done.text
    record.refresh_from_db()
    assert record.revoked_via == Certificate.RevokedVia.CODE
    assert record.revocation_code_hash == ""
    wait_until(
        lambda: _crl_lists(web_host, record.serial_number), timeout=60, what="the CRL to list it"
    )
    _assert_holds_nothing_secret(web_host, two_host_worker_env)
