"""docs/relying-parties.md, run: real servers and clients with real MyCert keystores.

Servers, each with the shipped configuration (deploy/) and CRL checking: nginx, Apache
httpd with mod_ssl, and Python's ``ssl`` (deploy/python/mycert_relying_party.py). For
each: a valid certificate is accepted and mapped to its professional; a revoked one is
refused once deploy/mycert-crl-refresh.sh has fetched the new CRL from MyCert (over HTTP,
from the live server) and reloaded the server; another CA's certificate and an expired one
are refused, and so is a MyCert-signed certificate without the clientAuth EKU.

Clients, as vendors' software would use the keystore: curl (``--cert-type P12``),
``openssl s_client``, Python ``requests`` (PEM, converted with ``openssl pkcs12`` as the
kit shows) and Java's ``HttpClient`` (deploy/clients/MyCertClient.java, single-file
source launch, the .p12 as key store).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.utils import timezone

from mycert import custody
from mycert.pki import build_crl
from mycert.services.publication import crl_publish
from mycert.services.revocation import certificate_revoke
from tests.support import keystores
from tests.support.tls_servers import (
    REPO,
    Apache,
    Nginx,
    free_port,
    server_certificate,
    wait_for_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DEPLOY = REPO / "deploy"
REFRESH = DEPLOY / "mycert-crl-refresh.sh"


@dataclass
class Pki:
    """MyCert's public side as a relying service sees it: CA file, CRL file, refresh."""

    base_url: str
    directory: Path
    ca_file: Path
    crl_file: Path
    server_cert: Path
    server_key: Path

    def refresh(self, *reload: str) -> None:
        """Run the shipped refresh script against MyCert's live PKI addresses."""
        subprocess.run(
            [str(REFRESH), self.base_url, str(self.ca_file), str(self.crl_file), *reload],
            check=True,
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def _relying_pki(live_server: Any, settings: Any, ca: custody.CaPaths) -> Iterator[Pki]:
    settings.MYCERT_PKI_BASE_URL = live_server.url
    crl_publish(now=timezone.now())
    # World-readable: Apache's children run as nobody when the tests run as root.
    directory = Path(tempfile.mkdtemp(prefix="mycert-rp-", dir="/tmp"))
    directory.chmod(0o755)
    ca_file = directory / "mycert-ca.pem"
    ca_file.write_bytes(ca.root_cert.read_bytes() + ca.issuing_cert.read_bytes())
    server_cert, server_key = server_certificate(directory)
    made = Pki(
        live_server.url, directory, ca_file, directory / "mycert-crls.pem", server_cert, server_key
    )
    made.refresh()
    try:
        yield made
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pki(live_server: Any, settings: Any, ca: custody.CaPaths) -> Iterator[Pki]:
    with _relying_pki(live_server, settings, ca) as made:
        yield made


class Server(Protocol):
    url: str

    def reload_command(self) -> list[str]: ...
    def after_reload(self) -> None: ...
    def log(self) -> str: ...
    def stop(self) -> None: ...


def _shipped(name: str, replacements: dict[str, str]) -> str:
    text = (DEPLOY / name).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"deploy/{name} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


SHIPPED_RESPONDER = "http://mycert.esante.lu/pki/ocsp/"


def _responder(pki: Pki, ocsp: str | bool) -> str:
    """The OCSP address a server is given: MyCert's live responder, or another one."""
    return ocsp if isinstance(ocsp, str) else f"{pki.base_url}/pki/ocsp/"


class NginxServer:
    """``ocsp``: True (shipped: MyCert's responder), False (CRLs only), or a responder URL."""

    def __init__(self, pki: Pki, port: int, ocsp: str | bool = True) -> None:
        self.url = f"https://127.0.0.1:{port}/whoami"
        self.nginx = Nginx(pki.directory / f"nginx-{port}")
        site = _shipped(
            "nginx/mycert-relying-party.conf",
            {
                "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                "/etc/ssl/service/server.crt": str(pki.server_cert),
                "/etc/ssl/service/server.key": str(pki.server_key),
                "/etc/ssl/mycert/mycert-ca.pem": str(pki.ca_file),
                "/etc/ssl/mycert/mycert-crls.pem": str(pki.crl_file),
                "ssl_ocsp on;": "ssl_ocsp on;" if ocsp else "ssl_ocsp off;",
                # The loopback proxy to MyCert's responder.
                "127.0.0.1:8079": f"127.0.0.1:{free_port()}",
                "proxy_pass http://mycert.esante.lu;": (
                    f"proxy_pass {_responder(pki, ocsp).removesuffix('/pki/ocsp/')};"
                ),
            },
        )
        self.nginx.start(site, port)

    def reload_command(self) -> list[str]:
        return ["true"]  # the script's RELOAD argument; nginx -s reload, done below

    def after_reload(self) -> None:
        self.nginx.reload()  # SIGHUP, then wait for the new worker

    def log(self) -> str:
        return self.nginx.log.read_text(errors="replace")

    def stop(self) -> None:
        self.nginx.stop()


class ApacheServer:
    def __init__(
        self, pki: Pki, port: int, ocsp: str | bool = True, *, nonce: bool = False
    ) -> None:
        self.url = f"https://127.0.0.1:{port}/whoami.txt"
        docroot = pki.directory / f"www-{port}"
        docroot.mkdir()
        (docroot / "whoami.txt").write_text("MyCert service\n")
        for path in docroot.iterdir():
            path.chmod(0o644)
        docroot.chmod(0o755)
        self.apache = Apache(pki.directory / f"apache-{port}")
        site = _shipped(
            "apache/mycert-relying-party.conf",
            {
                "Listen 443": f"Listen 127.0.0.1:{port}",
                "<VirtualHost *:443>": f"<VirtualHost 127.0.0.1:{port}>",
                "/var/www/eprescription": str(docroot),
                "/etc/ssl/service/server.crt": str(pki.server_cert),
                "/etc/ssl/service/server.key": str(pki.server_key),
                "/etc/ssl/mycert/mycert-ca.pem": str(pki.ca_file),
                "/etc/ssl/mycert/mycert-crls.pem": str(pki.crl_file),
                SHIPPED_RESPONDER: _responder(pki, ocsp),
                "SSLOCSPEnable on": "SSLOCSPEnable on" if ocsp else "SSLOCSPEnable off",
                # The trap the shipped file avoids: Apache's default.
                "SSLOCSPUseRequestNonce off": f"SSLOCSPUseRequestNonce {'on' if nonce else 'off'}",
            },
        )
        self.apache.start(site, port)

    def reload_command(self) -> list[str]:
        return ["true"]  # the script's RELOAD argument; apachectl graceful, done below

    def after_reload(self) -> None:
        self.apache.reload()  # SIGUSR1, then wait for the new generation

    def log(self) -> str:
        return self.apache.log.read_text(errors="replace")

    def stop(self) -> None:
        self.apache.stop()


class PythonServer:
    def __init__(
        self, pki: Pki, port: int, ocsp: str | bool = True, *, soft_fail: bool = False
    ) -> None:
        self.url = f"https://127.0.0.1:{port}/whoami"
        self.log_path = pki.directory / f"python-{port}.log"
        self.log_file = self.log_path.open("wb")
        options = ["--no-ocsp"]
        if ocsp:
            options = ["--ocsp-responder", _responder(pki, ocsp)]
            options += ["--ocsp-soft-fail"] if soft_fail else []
        self.process = subprocess.Popen(
            [
                sys.executable, str(DEPLOY / "python" / "mycert_relying_party.py"), str(port),
                str(pki.server_cert), str(pki.server_key), str(pki.ca_file), str(pki.crl_file),
                *options,
            ],
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(port, process=self.process, log=self.log_path)

    def reload_command(self) -> list[str]:
        return ["kill", "-HUP", str(self.process.pid)]

    def after_reload(self) -> None:
        deadline = 150
        while "reloaded" not in self.log() and deadline:
            deadline -= 1
            subprocess.run(["sleep", "0.1"], check=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.log_file.close()


class JavaServer:
    """deploy/clients/MyCertService.java: PKIX, OCSP for the whole path, CRL fallback."""

    def __init__(
        self,
        pki: Pki,
        port: int,
        ocsp: str | bool = True,
        *,
        soft_fail: bool = False,
        hard_fail: bool = False,
    ) -> None:
        java = shutil.which("java")
        if java is None:
            pytest.fail(
                "java is missing: apt-get install default-jdk-headless (make tls-test-deps)"
            )
        self.url = f"https://127.0.0.1:{port}/whoami"
        self.log_path = pki.directory / f"java-{port}.log"
        self.log_file = self.log_path.open("wb")
        # Java has no CRL-only switch here: without OCSP it is the platform's plain PKIX.
        options = [_responder(pki, ocsp)] if ocsp else []
        options += ["--soft-fail"] if soft_fail else []
        options += ["--hard-fail"] if hard_fail else []
        self.process = subprocess.Popen(
            [
                java, str(DEPLOY / "clients" / "MyCertService.java"), str(port),
                str(pki.server_cert), str(pki.server_key), str(pki.ca_file), str(pki.crl_file),
                *options,
            ],
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait_for_log(self, "listening on", timeout=180)

    def reload_command(self) -> list[str]:
        return ["true"]  # it reads the CRL file again when it changes

    def after_reload(self) -> None:
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.log_file.close()


def _wait_for_log(server: JavaServer, text: str, *, timeout: float) -> None:
    """Java compiles the single-file source first: seconds on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return
        if server.process.poll() is not None:
            raise RuntimeError(f"java exited: {server.log()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"java did not start: {server.log()[-2000:]}")


SERVERS: dict[str, Callable[..., Server]] = {
    "nginx": NginxServer,
    "apache": ApacheServer,
    "python-ssl": PythonServer,
}

#: The kit's servers with OCSP (the shipped files and programs).
OCSP_SERVERS: dict[str, Callable[..., Server]] = {
    "nginx": NginxServer,
    "apache": ApacheServer,
    "python-ssl": PythonServer,
    "java": JavaServer,
}


@dataclass
class Answer:
    exit_code: int
    output: str

    @property
    def accepted(self) -> bool:
        return self.exit_code == 0 and bool(re.search(r"^HTTP/\S+ 200", self.output, re.M))


def curl(url: str, pki: Pki, keystore: keystores.Keystore | None, name: str) -> Answer:
    args = ["curl", "-sS", "-i", "--max-time", "20", "--cacert", str(pki.server_cert)]
    if keystore is not None:
        path = keystore.write(pki.directory, name)
        args += ["--cert-type", "P12", "--cert", f"{path}:{keystore.password}"]
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=60)
    return Answer(result.returncode, result.stdout + result.stderr)


@pytest.mark.parametrize("kind", list(SERVERS))
def test_server_accepts_valid_and_refuses_revoked_foreign_and_expired(kind: str, pki: Pki) -> None:
    valid = keystores.issue(professional_id="LU-MED-500100")
    revoked = keystores.issue(professional_id="LU-MED-500200")
    expired = keystores.expired(keystores.issue(professional_id="LU-MED-500300"))
    other, _ = keystores.foreign()
    # A MyCert-signed certificate without the clientAuth EKU (serverAuth only).
    server_only = keystores.variant(keystores.issue(), server_auth_only=True)
    # CRLs only here (the shipped files with OCSP off): what the CRL refresh does alone.
    server = SERVERS[kind](pki, free_port(), False)
    try:
        answer = curl(server.url, pki, valid, "valid")
        assert answer.accepted, answer.output
        # Mapped to the professional by the subject's serialNumber.
        assert "LU-MED-500100" in answer.output

        # Revoked at MyCert: still accepted until the relying service refreshes its CRL.
        assert revoked.record is not None
        certificate_revoke(
            certificate_id=revoked.record.pk,
            reason="keyCompromise",
            via="helpdesk",
            actor=None,
            now=timezone.now(),
        )
        crl_publish(now=timezone.now())
        assert curl(server.url, pki, revoked, "revoked").accepted
        pki.refresh(*server.reload_command())
        server.after_reload()
        refused = curl(server.url, pki, revoked, "revoked")
        assert not refused.accepted, refused.output
        assert curl(server.url, pki, valid, "valid").accepted  # the valid one still is

        assert not curl(server.url, pki, other, "other").accepted
        assert not curl(server.url, pki, expired, "expired").accepted
        assert not curl(server.url, pki, server_only, "server-only").accepted
        assert not curl(server.url, pki, None, "none").accepted
        log = server.log()  # each server says why it refused
        assert "certificate revoked" in log
        assert "certificate has expired" in log
        assert "unsuitable certificate purpose" in log  # no clientAuth EKU
    finally:
        server.stop()


@pytest.fixture
def nginx_service(pki: Pki) -> Iterator[NginxServer]:
    server = NginxServer(pki, free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("key_type", "legacy"),
    [("ec-p256", False), ("rsa-3072", False), ("rsa-2048", True)],
    ids=["ec-p256-aes", "rsa-3072-aes", "rsa-2048-legacy-3des"],
)
def test_clients_curl_openssl_requests_and_java_present_the_keystore(
    pki: Pki, nginx_service: NginxServer, key_type: str, legacy: bool
) -> None:
    issued = keystores.issue(key_type=key_type, legacy=legacy, professional_id="LU-MED-600100")
    p12 = issued.write(pki.directory, "client")
    env = {**os.environ, "MYCERT_KEYSTORE_PASSWORD": issued.password}

    # curl, with the .p12 as delivered.
    assert "LU-MED-600100" in curl(nginx_service.url, pki, issued, "client").output

    # openssl s_client, with the .p12 as delivered: OpenSSL 3 recognises PKCS#12 given to
    # -cert (and takes the key from it too), though -certform accepts only PEM and DER.
    port = nginx_service.url.split(":")[2].split("/")[0]
    s_client = subprocess.run(
        [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
            "-CAfile", str(pki.server_cert), "-verify_return_error",
            "-cert", str(p12), "-pass", "env:MYCERT_KEYSTORE_PASSWORD",
        ],
        input="GET /whoami HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "200 OK" in s_client.stdout, s_client.stderr
    assert "LU-MED-600100" in s_client.stdout

    # Python requests: PEM files, converted as docs/relying-parties.md shows.
    cert_pem, key_pem = pki.directory / "client-cert.pem", pki.directory / "client-key.pem"
    for what, out in (("-clcerts -nokeys", cert_pem), ("-nocerts -noenc", key_pem)):
        subprocess.run(
            ["openssl", "pkcs12", "-in", str(p12), *what.split(), "-out", str(out),
             "-passin", "env:MYCERT_KEYSTORE_PASSWORD"],
            check=True, capture_output=True, timeout=60, env=env,
        )  # fmt: skip
    response = requests.get(
        nginx_service.url,
        cert=(str(cert_pem), str(key_pem)),
        verify=str(pki.server_cert),
        timeout=20,
    )
    assert response.status_code == 200
    assert "LU-MED-600100" in response.text
    assert (
        requests.get(nginx_service.url, verify=str(pki.server_cert), timeout=20).status_code == 400
    )

    # Java HttpClient, the .p12 as KeyStore (single-file source launch).
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is missing: apt-get install default-jdk-headless (make tls-test-deps)")
    result = subprocess.run(
        [java, str(DEPLOY / "clients" / "MyCertClient.java"), nginx_service.url, str(p12),
         str(pki.server_cert)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200\n")
    assert "LU-MED-600100" in result.stdout


def test_the_certificate_the_kit_describes_is_what_mycert_issues(ca: Any) -> None:
    """The kit's facts (EKU, policy OID, addresses, serialNumber) hold for issued ones."""
    from cryptography import x509
    from django.conf import settings

    issued = keystores.issue(professional_id="LU-MED-700100")
    certificate = issued.certificate
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [
        settings.MYCERT_CERT_POLICY_OID
    ]
    subject = certificate.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    assert subject[0].value == "LU-MED-700100"
    assert certificate.public_bytes(serialization.Encoding.PEM)
    kit = (REPO / "docs" / "relying-parties.md").read_text()
    for fact in ("clientAuth", settings.MYCERT_CERT_POLICY_OID, "/pki/crl/issuing.crl",
                 "/pki/crl/root.crl", "/pki/ocsp/", "serialNumber"):  # fmt: skip
        assert fact in kit


def test_an_unreachable_crl_keeps_the_installed_one_and_fails_loudly(pki: Pki) -> None:
    before = pki.crl_file.read_bytes()
    result = subprocess.run(
        [str(REFRESH), "http://127.0.0.1:9", str(pki.ca_file), str(pki.crl_file), "false"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert pki.crl_file.read_bytes() == before


def test_an_expired_crl_refuses_every_client(pki: Pki, nginx_service: NginxServer) -> None:
    """Fail closed: once the installed CRL is past its nextUpdate, nobody gets in."""
    valid = keystores.issue()
    assert curl(nginx_service.url, pki, valid, "valid").accepted
    now = timezone.now()
    stale = build_crl(
        issuer=custody.ca_load().issuing,
        entries=[],
        crl_number=10**6,
        this_update=now - timedelta(days=2),
        next_update=now - timedelta(days=1),
    )
    root_crl = pki.crl_file.read_bytes().split(b"-----END X509 CRL-----\n", 1)[1]
    pki.crl_file.write_bytes(stale.public_bytes(serialization.Encoding.PEM) + root_crl)
    nginx_service.after_reload()
    assert not curl(nginx_service.url, pki, valid, "valid").accepted
    assert "CRL has expired" in nginx_service.log()


# --- OCSP: the kit's servers ask MyCert at each handshake, about the whole chain ------------


def _revoke(issued: keystores.Keystore) -> None:
    assert issued.record is not None
    certificate_revoke(
        certificate_id=issued.record.pk,
        reason="keyCompromise",
        via="helpdesk",
        actor=None,
        now=timezone.now(),
    )


@pytest.mark.parametrize("kind", list(OCSP_SERVERS))
def test_ocsp_whole_chain_accepts_valid_and_refuses_revoked_without_a_crl_refresh(
    kind: str, pki: Pki, eager_tasks: None
) -> None:
    """Before: MyCert answered ``unauthorized`` about the issuing CA: everyone refused."""
    valid = keystores.issue(professional_id="LU-MED-510100")
    revoked = keystores.issue(professional_id="LU-MED-510200")
    server = OCSP_SERVERS[kind](pki, free_port())
    try:
        answer = curl(server.url, pki, valid, "valid")
        assert answer.accepted, answer.output + server.log()[-3000:]
        assert "LU-MED-510100" in answer.output
        assert curl(server.url, pki, revoked, "revoked").accepted

        _revoke(revoked)  # the revoked answer is signed on commit (eager: at once)
        # No CRL refresh, no reload: the next handshake asks MyCert. The Python server
        # may keep its earlier "good" for its cache's 30 s.
        deadline = time.monotonic() + 60
        while curl(server.url, pki, revoked, "revoked").accepted:
            assert time.monotonic() < deadline, "still accepted 60 s after the revocation"
            time.sleep(0.5)
        assert curl(server.url, pki, valid, "valid").accepted
        assert "revoked" in server.log().lower()
    finally:
        server.stop()


def test_apache_with_its_default_nonce_refuses_every_professional(pki: Pki) -> None:
    """The trap the shipped file avoids: pre-signed answers carry no nonce."""
    valid = keystores.issue()
    server = ApacheServer(pki, free_port(), nonce=True)
    try:
        assert not curl(server.url, pki, valid, "valid").accepted
        assert "bad nonce" in server.log()
    finally:
        server.stop()


# When MyCert's OCSP cannot be reached: (server, soft fail) → valid accepted?, revoked
# (listed in the installed CRL) accepted? docs/relying-parties.md §2 says the same.
WHEN_DOWN = {
    ("nginx", False): (False, False),  # hard fail: everyone refused
    ("apache", False): (False, False),  # hard fail: everyone refused
    ("python-ssl", False): (False, False),  # hard fail (the kit's default)
    ("python-ssl", True): (True, False),  # --ocsp-soft-fail: the CRL alone decides
    ("java", False): (True, False),  # OCSP fails over to the CRL file
    ("java", True): (False, False),  # --hard-fail (NO_FALLBACK): everyone refused
}


@pytest.mark.parametrize(("kind", "soft_fail"), list(WHEN_DOWN), ids=lambda v: str(v))
def test_when_mycerts_ocsp_cannot_be_reached(kind: str, soft_fail: bool, pki: Pki) -> None:
    valid = keystores.issue()
    revoked = keystores.issue()
    _revoke(revoked)
    crl_publish(now=timezone.now())
    pki.refresh()  # the installed CRL lists it
    down = f"http://127.0.0.1:{free_port()}/pki/ocsp/"  # nothing listens there
    # The flag: Python's --ocsp-soft-fail; Java's --hard-fail (its default falls back).
    options = {("hard_fail" if kind == "java" else "soft_fail"): True} if soft_fail else {}
    server = OCSP_SERVERS[kind](pki, free_port(), down, **options)
    try:
        valid_accepted, revoked_accepted = WHEN_DOWN[kind, soft_fail]
        answer = curl(server.url, pki, valid, "valid")
        assert answer.accepted is valid_accepted, answer.output + server.log()[-3000:]
        assert curl(server.url, pki, revoked, "revoked").accepted is revoked_accepted
    finally:
        server.stop()


def test_nginx_refuses_a_leaf_of_a_revoked_issuing_ca(
    live_server: Any, settings: Any, ca: custody.CaPaths, offline_root: Path, tmp_path: Path
) -> None:
    """Issue 22: after ``sign_root_crl --revoke-issuing``, with CRLs and with OCSP."""
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    shutil.copytree(ca.directory, settings.MYCERT_CA_DIR)
    custody.cache_clear()
    own = custody.ca_paths()
    with _relying_pki(live_server, settings, own) as relying:
        leaf = keystores.issue(professional_id="LU-MED-520100")
        with_crls = NginxServer(relying, free_port(), False)
        with_ocsp = NginxServer(relying, free_port())
        try:
            for server in (with_crls, with_ocsp):
                assert curl(server.url, relying, leaf, "leaf").accepted
            issuing = custody.ca_certificates_load().issuing
            call_command(
                "sign_root_crl",
                revoke_issuing=f"{issuing.serial_number:x}",
                reason="cACompromise",
            )
            # OCSP, whole chain: the root's answer on the issuing CA says revoked, at once.
            refused = curl(with_ocsp.url, relying, leaf, "leaf")
            assert not refused.accepted, refused.output
            # CRLs: once the refresh has fetched the root's new CRL and nginx reloaded.
            assert curl(with_crls.url, relying, leaf, "leaf").accepted
            relying.refresh()
            with_crls.after_reload()
            assert not curl(with_crls.url, relying, leaf, "leaf").accepted
            for server in (with_crls, with_ocsp):
                assert "certificate revoked" in server.log()
        finally:
            with_crls.stop()
            with_ocsp.stop()


# When MyCert's OCSP takes the connection and never answers (a black hole: a hung web
# host, a dropping firewall): (server) → (valid accepted?, seconds it takes at most).
WHEN_SILENT = {
    # nginx's ssl_ocsp has no timeout of its own (without the shipped proxy the handshake
    # hangs until the client gives up: curl's 20 s); the proxy's proxy_read_timeout 5 s.
    "nginx": (False, 15.0),
    "apache": (False, 15.0),  # SSLOCSPResponderTimeout 5, then refused
    "python-ssl": (False, 15.0),  # --ocsp-timeout 5, then refused
    "java": (True, 40.0),  # ocsp.timeout 5 s per certificate of the path, then the CRL decides
}


@pytest.mark.parametrize("kind", list(WHEN_SILENT))
def test_when_mycerts_ocsp_does_not_answer(kind: str, pki: Pki) -> None:
    valid = keystores.issue()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the TCP handshake; nobody ever reads
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/pki/ocsp/"
        server = OCSP_SERVERS[kind](pki, free_port(), url)
        try:
            accepted, at_most = WHEN_SILENT[kind]
            started = time.monotonic()
            answer = curl(server.url, pki, valid, "valid")
            took = time.monotonic() - started
            assert answer.accepted is accepted, answer.output + server.log()[-3000:]
            assert took <= at_most, f"{kind} took {took:.1f} s"
            print(f"[{kind}] silent responder: accepted={answer.accepted} after {took:.1f} s")
        finally:
            server.stop()
