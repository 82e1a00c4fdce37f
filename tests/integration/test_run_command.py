"""The README's "run" command on its embedded defaults (SQLite, filesystem broker), as a
newcomer would use it: log in at the demo provider, ask, receive the e-mails.

It starts ``manage.py demo`` (what ``make run`` calls) with its own folder and ports,
then drives it over HTTP only.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import mailbox
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.db import connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE_DIR = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def _csrf(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, "the page has a CSRF token"
    return found.group(1)


def _crl_lists(base: str, serial: int) -> bool:
    crl = x509.load_der_x509_crl(requests.get(f"{base}/pki/crl/issuing.crl", timeout=10).content)
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def _ocsp_revoked(base: str, serial: int) -> bool:
    """Ask OCSP by serial, as a client holding the certificate would (tryLater: not yet)."""
    issuing = x509.load_der_x509_certificate(
        requests.get(f"{base}/pki/ca/issuing.cer", timeout=10).content
    )
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuing.public_key()).digest
    name_hash = hashlib.sha1(issuing.subject.public_bytes()).digest()  # noqa: S324 - CertID
    body = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())  # noqa: S303 - CertID
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    reply = requests.post(
        f"{base}/pki/ocsp/",
        data=body,
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    answer = ocsp.load_der_ocsp_response(reply.content)
    if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER
        return False
    assert answer.certificate_status != ocsp.OCSPCertStatus.GOOD, "good after revocation"
    return answer.certificate_status == ocsp.OCSPCertStatus.REVOKED


def test_make_run_serves_the_whole_journey_on_embedded_defaults(tmp_path: Path) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded-defaults run is tested once, in the SQLite run")
    web, oidc, smtp = _free_port(), _free_port(), _free_port()
    check = _free_port()  # the self-check's nginx (when nginx is installed)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "EMAIL_", "MYCERT_", "OIDC_", "DJANGO_"))
    }
    var = Path(f"/tmp/mycert-run-{os.getpid()}")  # short: gpg sockets live below it
    env.update({"DJANGO_DEBUG": "true", "MYCERT_VAR_DIR": str(var)})
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--port",
            str(web),
            "--oidc-port",
            str(oidc),
            "--smtp-port",
            str(smtp),
            "--check-port",
            str(check),
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        _wait(
            lambda: (
                _answers(f"{base}/")
                and _answers(f"http://127.0.0.1:{oidc}/.well-known/openid-configuration")
            ),
            180,
            "the demo to start",
        )
        session = requests.Session()
        login = session.get(f"{base}/oidc/login/", allow_redirects=False, timeout=10)
        authorize = login.headers["Location"]
        assert authorize.startswith(f"http://127.0.0.1:{oidc}/")
        assert session.get(authorize, timeout=10).status_code == 200
        chosen = session.post(
            authorize, data={"sub": "dr-anne-muller"}, allow_redirects=False, timeout=10
        )
        callback = session.get(chosen.headers["Location"], timeout=10)
        assert callback.url == f"{base}/request/", callback.text[:500]

        form = callback.text
        assert "Je n&#x27;ai pas d&#x27;éditeur" in form
        vendor = re.search(r'<option value="(\d+)">Logiciel Médical SA</option>', form)
        assert vendor, "the demo vendor with an OpenPGP key is offered"
        sent = session.post(
            f"{base}/request/",
            data={
                "csrfmiddlewaretoken": _csrf(form),
                "vendor": vendor.group(1),
                "terms_accepted": "on",
            },
            headers={"Referer": f"{base}/request/"},
            timeout=30,
        )
        assert "Demande envoyée." in sent.text

        maildir = var / "mail"
        journey = ("anne.muller@cabinet-muller.lu", "support@logiciel-medical.lu")

        def journey_mails() -> list[email.message.EmailMessage]:
            # The staff alerts of the demo's set-up (vendor keys pinned: the security
            # officer is told) land in the same mailbox, at their own pace.
            if not maildir.exists():
                return []
            parsed = (
                email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
                for m in mailbox.Maildir(maildir, create=False)
            )
            return [m for m in parsed if str(m["To"]) in journey]

        _wait(lambda: len(journey_mails()) >= 4, 120, "the journey's four e-mails")
        messages = journey_mails()
        recipients = sorted(str(m["To"]) for m in messages)
        assert recipients.count("anne.muller@cabinet-muller.lu") == 2
        assert recipients.count("support@logiciel-medical.lu") == 2
        attachments = [
            p for m in messages for p in m.walk() if p.get_content_type() == "application/x-pkcs12"
        ]
        assert len(attachments) == 1, (
            "one plain keystore (the professional's); the vendor's is encrypted"
        )
        mine = session.get(f"{base}/certificates/", timeout=10).text
        # The demo shows the helpdesk's second factor, as production has it (`make totp`).
        admin_login = requests.get(f"{base}/admin/login/", timeout=10).text
        assert 'name="otp_token"' in admin_login
        assert 'name="otp_challenge"' not in admin_login
        assert "envoyée" in mine
        if Path("/usr/sbin/nginx").exists():  # make run installs it (Makefile nginx-deps)
            assert "Vérifiez que votre certificat fonctionne" in mine
            status = requests.get(
                f"https://127.0.0.1:{check}/status.json",
                verify=str(var / "check-nginx" / "server.crt"),  # the demo's self-signed one
                timeout=10,
            )
            assert status.json()["status"] == "no_certificate"
        # The professional revokes it: the demo's worker (one process, no -Q, on the
        # filesystem broker) reads the revocation queue too, so the revoked OCSP answer
        # and the CRL follow without waiting for beat.
        revoke = re.search(r'href="(/certificates/\d+/revoke/)"', mine)
        assert revoke, "« Mes certificats » offers to revoke the certificate"
        confirm_page = session.get(f"{base}{revoke.group(1)}", timeout=10).text
        shown = re.search(r'<code class="serial">([0-9A-Fa-f]+)</code>', confirm_page)
        assert shown, "the confirmation page shows the serial"
        serial = int(shown.group(1), 16)
        revoked = session.post(
            f"{base}{revoke.group(1)}",
            data={
                "csrfmiddlewaretoken": _csrf(confirm_page),
                "reason": "keyCompromise",
                "confirm": "on",
            },
            headers={"Referer": f"{base}{revoke.group(1)}"},
            timeout=30,
        )
        assert revoked.url == f"{base}/certificates/", revoked.url
        _wait(lambda: _ocsp_revoked(base, serial), 60, "OCSP to say revoked")
        _wait(lambda: _crl_lists(base, serial), 60, "the CRL to list the certificate")
        # Logging out ends at the demo provider, whose end-session form sends the browser
        # back to MyCert (issue 23, point 10).
        out = session.post(
            f"{base}/oidc/logout/",
            data={"csrfmiddlewaretoken": _csrf(mine)},
            headers={"Referer": f"{base}/certificates/"},
            allow_redirects=False,
            timeout=10,
        )
        end_session = session.get(out.headers["Location"], timeout=10)
        assert end_session.url.startswith(f"http://127.0.0.1:{oidc}/"), end_session.url
        end_form = re.search(r'<form method="post" action="([^"]+)"', end_session.text)
        assert end_form, end_session.text[:500]
        back = session.post(
            requests.compat.urljoin(end_session.url, end_form.group(1)),
            data=dict(
                re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', end_session.text)
            ),
            timeout=10,
        )
        assert back.url == f"{base}/", back.url
        # No start-up warning a newcomer cannot act on (issue 23, point 12): the missing
        # CA just before the demo makes it, kombu's host, the provider's Authlib imports.
        log.flush()
        printed = (tmp_path / "demo.log").read_text(errors="replace")
        for noise in ("mycert.W001", "No hostname was supplied", "DeprecationWarning"):
            assert noise not in printed, noise
    except (AssertionError, requests.RequestException, KeyError) as exc:
        log.flush()
        tail = (tmp_path / "demo.log").read_text(errors="replace")[-6000:]
        raise AssertionError(f"{exc}\n--- what the demo printed ---\n{tail}") from exc
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        log.close()
        subprocess.run(["rm", "-rf", str(var)], check=False)


# --- Stopping: every child goes, every port is free ------------------------------------------


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid → (parent pid, state, command line) of every process, from /proc."""
    found: dict[int, tuple[int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid …": comm may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        found[int(entry.name)] = (int(ppid), state, cmdline)
    return found


def _descendants(root: int) -> set[int]:
    table = _processes()
    family: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - family
        family |= frontier
    return family


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_demo_stops_every_child_and_frees_the_ports(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """``kill PID`` (or Ctrl-C) on ``make run``: no child left, no port held."""
    if connection.vendor != "sqlite":
        pytest.skip("the embedded-defaults run is tested once, in the SQLite run")
    web, oidc, smtp = _free_port(), _free_port(), _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "EMAIL_", "MYCERT_", "OIDC_", "DJANGO_"))
    }
    var = Path(f"/tmp/mycert-stop-{os.getpid()}-{sig.value}")  # short: gpg sockets live below it
    env.update({"DJANGO_DEBUG": "true", "MYCERT_VAR_DIR": str(var)})
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--port",
            str(web),
            "--oidc-port",
            str(oidc),
            "--smtp-port",
            str(smtp),
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the test's own signal goes to the demo alone
    )
    children: set[int] = set()
    try:
        _wait(
            lambda: (
                _answers(f"http://127.0.0.1:{web}/")
                and _answers(f"http://127.0.0.1:{oidc}/.well-known/openid-configuration")
                and _listening(smtp)
            ),
            180,
            "the demo to start",
        )
        children = _descendants(demo.pid)
        agents = {
            pid
            for pid, (_, _, cmdline) in _processes().items()
            if "gpg-agent" in cmdline and str(var) in cmdline
        }
        assert len(children) >= 4, "the provider, the sink, the worker and the web server"
        assert agents, "the demo vendor's keyring started a gpg-agent"

        demo.send_signal(sig)  # to the demo only, not to its children
        assert demo.wait(timeout=60) == 0

        _wait(lambda: not _alive(children | agents), 10, "every child to stop")
        for port in (web, oidc, smtp):
            assert not _listening(port), f"port {port} is still held"
    except AssertionError as exc:
        log.flush()
        tail = (tmp_path / "demo.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{exc}\n--- what the demo printed ---\n{tail}") from exc
    finally:
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        log.close()
        subprocess.run(
            ["gpgconf", "--homedir", str(var / "demo-vendor-gpg"), "--kill", "all"], check=False
        )
        subprocess.run(["rm", "-rf", str(var)], check=False)
