"""From the helpdesk's "Yes, revoke" to relying services seeing it, on real parts:
the admin over HTTP, a real Celery worker re-signing the CRL, OCSP and CRL fetched over
HTTP from the addresses in the certificate, read by openssl."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert import ca_store
from mycert.models import Certificate
from mycert.services.issuance import request_issue
from mycert.services.publication import crl_publish
from tests.factories import CertificateRequestFactory
from tests.support.worker import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _issued(request_id: int) -> int:
    """Issue the request's certificate; return its id."""
    certificate_id = request_issue(request_id=request_id, now=timezone.now()).certificate_id
    assert certificate_id is not None
    return certificate_id


@pytest.fixture
def pki_worker(settings, ca, live_server, worker_env, tmp_path):  # type: ignore[no-untyped-def]
    settings.MYCERT_PKI_BASE_URL = live_server.url
    worker_env["MYCERT_PKI_BASE_URL"] = live_server.url
    crl_publish(now=timezone.now())
    workers = WorkerProcess(env=worker_env, log_path=tmp_path / "worker.log")
    workers.start("w1")
    try:
        yield live_server.url
    finally:
        workers.stop_all()


def _ocsp_status(url: str, leaf: Path, ca_dir: Path) -> str:
    result = subprocess.run(
        [
            "openssl", "ocsp", "-url", url, "-issuer", str(ca_dir / "issuing.pem"),
            "-cert", str(leaf), "-CAfile", str(ca_dir / "root.pem"), "-timeout", "10",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )  # fmt: skip
    assert "Response verify OK" in result.stderr
    return result.stdout


def _crl_lists(url: str, serial: int) -> bool:
    crl = x509.load_der_x509_crl(requests.get(url, timeout=10).content)
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_revoke_click_reaches_crl_and_ocsp(
    pki_worker: str, helpdesk_group: Group, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = CertificateRequestFactory.create()
    record = Certificate.objects.get(pk=_issued(request.pk))
    certificate = x509.load_pem_x509_certificate(record.pem.encode())
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    ca_dir = ca_store.configured_paths().directory
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_url = next(
        str(d.access_location.value)
        for d in aia
        if d.access_method.dotted_string == "1.3.6.1.5.5.7.48.1"
    )
    cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = str(cdp[0].full_name[0].value)  # type: ignore[index]
    assert ": good" in _ocsp_status(ocsp_url, leaf, ca_dir)
    assert not _crl_lists(crl_url, certificate.serial_number)

    agent = User.objects.create_user("agent", password=None, is_staff=True)
    agent.groups.add(helpdesk_group)
    helpdesk = Client(HTTP_ACCEPT_LANGUAGE="en")
    helpdesk.force_login(agent)
    changelist = reverse("admin:mycert_certificate_changelist")
    form = {"action": "revoke_selected", "_selected_action": [record.pk]}
    assert helpdesk.post(changelist, form).status_code == 200  # the confirmation page
    clicked = time.monotonic()
    done = helpdesk.post(
        changelist, {**form, "post": "yes", "reason": "keyCompromise", "comment": "ticket 1"}
    )
    assert done.status_code == 302

    answer = _ocsp_status(ocsp_url, leaf, ca_dir)
    ocsp_seconds = time.monotonic() - clicked
    assert ": revoked" in answer
    assert "Reason: keyCompromise" in answer
    wait_until(
        lambda: _crl_lists(crl_url, certificate.serial_number),
        timeout=60,
        what="the CRL to list it",
    )
    crl_seconds = time.monotonic() - clicked
    with capsys.disabled():
        print(
            f"\n[revocation] click → OCSP revoked: {ocsp_seconds * 1000:.0f} ms; click → CRL lists it: {crl_seconds * 1000:.0f} ms"
        )
