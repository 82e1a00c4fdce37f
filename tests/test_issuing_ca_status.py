"""The issuing CA's own status: the root's CRL entry and OCSP answer (issues 21 and 22).

Relying services that check the whole chain (nginx ``ssl_ocsp on``, Apache
``SSLOCSPEnable on``, Java PKIX without ONLY_END_ENTITY) ask MyCert's responder about
the issuing CA too. The root answers, signed at its ceremony; ``sign_root_crl
--revoke-issuing`` makes both the root CRL and that answer say revoked.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from mycert import custody
from mycert.pki import build_crl, create_root_ca
from mycert.pki.keys import KeyType, encrypt_private_key_pem, load_private_key_pem
from mycert.pki.names import DistinguishedName


@pytest.fixture
def own_ca(
    settings: Any, tmp_path: Path, ca: custody.CaPaths, offline_root: Path
) -> custody.CaPaths:
    """A copy of the run's CA that the ceremonies below may change.

    The root key stays where the run keeps it, offline beside the CA folder, under its own
    passphrase: the ceremonies take it from there (tests/conftest.py's session CA).
    """
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    shutil.copytree(ca.directory, settings.MYCERT_CA_DIR)
    custody.cache_clear()
    return custody.ca_paths()


def _certificates(paths: custody.CaPaths) -> tuple[x509.Certificate, x509.Certificate]:
    root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
    issuing = x509.load_pem_x509_certificate(paths.issuing_cert.read_bytes())
    return root, issuing


def _ask(
    client: Client, certificate: x509.Certificate, issuer: x509.Certificate, algorithm: Any
) -> ocsp.OCSPResponse:
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm).build()
    ).public_bytes(serialization.Encoding.DER)
    if isinstance(algorithm, hashes.SHA256):
        response = client.post("/pki/ocsp/", data=request, content_type="application/ocsp-request")
    else:
        response = client.get("/pki/ocsp/" + quote(base64.b64encode(request).decode(), safe=""))
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.content)


@pytest.mark.django_db
@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])  # noqa: S303 - CertID
def test_the_responder_answers_for_the_issuing_ca_signed_by_the_root(
    client: Client, ca: custody.CaPaths, algorithm: Any
) -> None:
    """Before: ``unauthorized``, so every whole-chain client refused every professional."""
    root, issuing = _certificates(ca)
    answer = _ask(client, issuing, root, algorithm)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == issuing.serial_number
    # Signed by the root itself (RFC 6960 §4.2.2.2), valid as long as the root CRL.
    public_key = root.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(
        answer.signature,
        answer.tbs_response_bytes,
        ec.ECDSA(answer.signature_hash_algorithm),  # type: ignore[arg-type]
    )
    root_crl = x509.load_der_x509_crl(ca.root_crl.read_bytes())
    assert answer.next_update_utc == root_crl.next_update_utc
    # Not a year in shared caches: a revocation at the ceremony must get through.
    response = client.get(
        "/pki/ocsp/"
        + quote(
            base64.b64encode(
                ocsp.OCSPRequestBuilder()
                .add_certificate(issuing, root, algorithm)
                .build()
                .public_bytes(serialization.Encoding.DER)
            ).decode(),
            safe="",
        )
    )
    assert "max-age=3600," in response["Cache-Control"]


@pytest.mark.django_db
def test_openssl_verifies_the_roots_answer(
    client: Client, ca: custody.CaPaths, live_server: Any
) -> None:
    result = subprocess.run(
        ["openssl", "ocsp", "-url", f"{live_server.url}/pki/ocsp/", "-issuer", str(ca.root_cert),
         "-cert", str(ca.issuing_cert), "-CAfile", str(ca.root_cert), "-no_nonce",
         "-timeout", "10"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    assert ": good" in result.stdout


@pytest.mark.django_db
def test_a_serial_the_root_never_issued_is_unauthorized(
    client: Client, ca: custody.CaPaths
) -> None:
    root, issuing = _certificates(ca)
    other = x509.CertificateBuilder(
        issuer_name=issuing.issuer,
        subject_name=issuing.subject,
        public_key=issuing.public_key(),
        serial_number=issuing.serial_number + 1,
        not_valid_before=issuing.not_valid_before_utc,
        not_valid_after=issuing.not_valid_after_utc,
    ).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    answer = _ask(client, other, root, hashes.SHA1())  # noqa: S303 - CertID
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.django_db
def test_sign_root_crl_revokes_the_issuing_ca_in_the_crl_and_in_ocsp(
    client: Client, own_ca: custody.CaPaths
) -> None:
    root, issuing = _certificates(own_ca)
    call_command(
        "sign_root_crl", revoke_issuing=f"{issuing.serial_number:X}", reason="cACompromise"
    )
    crl = x509.load_der_x509_crl(own_ca.root_crl.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(issuing.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.ca_compromise
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303 - CertID
        answer = _ask(client, issuing, root, algorithm)
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason is x509.ReasonFlags.ca_compromise

    # The next yearly ceremony keeps it revoked (the entries are carried over).
    call_command("sign_root_crl")
    again = x509.load_der_x509_crl(own_ca.root_crl.read_bytes())
    assert again.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
    number = again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    answer = _ask(client, issuing, root, hashes.SHA1())  # noqa: S303 - CertID
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED

    # openssl, as a relying service checks the chain with the root CRL.
    assert "certificate revoked" in _openssl_verify_issuing(own_ca)


def _openssl_verify_issuing(paths: custody.CaPaths) -> str:
    crl_pem = paths.directory / "root-crl.pem"
    crl_pem.write_bytes(
        x509.load_der_x509_crl(paths.root_crl.read_bytes()).public_bytes(serialization.Encoding.PEM)
    )
    result = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(paths.root_cert), "-CRLfile",
         str(crl_pem), str(paths.issuing_cert)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"revoke_issuing": "abc123", "reason": "cACompromise"}, "not an issuing CA certificate"),
        ({"revoke_issuing": "zz", "reason": "cACompromise"}, "not a serial number"),
        ({"revoke_issuing": "abc123"}, "needs --reason"),
        ({"reason": "cACompromise"}, "only goes with --revoke-issuing"),
    ],
)
def test_sign_root_crl_refuses_a_wrong_revocation_and_changes_nothing(
    own_ca: custody.CaPaths, options: dict[str, str], message: str
) -> None:
    before = own_ca.root_crl.read_bytes()
    with pytest.raises(CommandError, match=message):
        call_command("sign_root_crl", **options)
    assert own_ca.root_crl.read_bytes() == before


def test_a_root_crl_not_signed_by_the_root_is_not_carried_over(
    own_ca: custody.CaPaths,
) -> None:
    """A forged root.crl on the root host must not un-revoke (or revoke) anything."""
    now = timezone.now()
    stranger = create_root_ca(
        subject=DistinguishedName(common_name="Not MyCert", organization="X", country="LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    forged = build_crl(
        issuer=stranger,
        entries=[],
        crl_number=1,
        this_update=now,
        next_update=now + timedelta(days=1),
    )
    own_ca.root_crl.write_bytes(forged.public_bytes(serialization.Encoding.DER))
    with pytest.raises(CommandError, match="not signed by this root"):
        call_command("sign_root_crl")


@pytest.mark.django_db
def test_a_renewed_issuing_ca_is_answered_for_too(client: Client, own_ca: custody.CaPaths) -> None:
    root, old = _certificates(own_ca)
    call_command("renew_issuing_ca")
    _, renewed = _certificates(own_ca)
    assert renewed.serial_number != old.serial_number
    for certificate in (old, renewed):  # relying parties may still be sent the old one
        answer = _ask(client, certificate, root, hashes.SHA1())  # noqa: S303 - CertID
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.django_db
def test_a_revocation_survives_the_import_into_a_new_folder(
    settings: Any, client: Client, own_ca: custody.CaPaths, tmp_path: Path
) -> None:
    """The compromise runbook moves to a new folder (init_ca --import --root-crl …)."""
    root, issuing = _certificates(own_ca)
    call_command(
        "sign_root_crl", revoke_issuing=f"{issuing.serial_number:x}", reason="cACompromise"
    )
    # The import takes both keys under one passphrase: the root's brought from its medium.
    passphrase = settings.MYCERT_CA_KEY_PASSPHRASE.encode()
    root_key = load_private_key_pem(
        Path(settings.MYCERT_ROOT_KEY_FILE).read_bytes(),
        settings.MYCERT_ROOT_KEY_PASSPHRASE.encode(),
    )
    brought = tmp_path / "root-key-brought.pem"
    brought.write_bytes(encrypt_private_key_pem(root_key, passphrase))
    settings.MYCERT_CA_DIR = tmp_path / "ca-2"
    custody.cache_clear()
    os.environ["MYCERT_TEST_IMPORT_PASSPHRASE"] = settings.MYCERT_CA_KEY_PASSPHRASE
    call_command(
        "init_ca",
        import_ca=True,
        root_cert=own_ca.root_cert,
        root_key=brought,
        root_key_out=tmp_path / "offline-2" / "root-key.pem",
        issuing_cert=own_ca.issuing_cert,
        issuing_key=own_ca.issuing_key,
        key_passphrase_env="MYCERT_TEST_IMPORT_PASSPHRASE",
        root_crl=own_ca.root_crl,
    )
    moved = custody.ca_paths()
    crl = x509.load_der_x509_crl(moved.root_crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
    answer = _ask(client, issuing, root, hashes.SHA256())
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED


@pytest.mark.django_db
def test_healthz_warns_when_the_roots_answer_is_missing(
    client: Client, own_ca: custody.CaPaths
) -> None:
    """An upgrade without a ceremony since: whole-chain clients would refuse everyone."""
    from mycert.ops import health

    health.clear_cache()
    assert "root_ocsp_missing" not in client.get("/healthz").json()["checks"]["ca"].get(
        "warnings", ""
    )
    shutil.rmtree(own_ca.directory / custody.ROOT_OCSP_DIRECTORY)
    check = client.get("/healthz").json()["checks"]["ca"]
    assert check["status"] == "ok"  # the service works; relying services need the ceremony
    assert "root_ocsp_missing" in check["warnings"]
