"""Key custody (issue 11): file keys and PKCS#11 tokens, the root's ceremonies, warnings."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mycert import checks, custody
from mycert.models import Certificate, OperatorAlert
from mycert.ops import health
from mycert.pki import (
    DistinguishedName,
    KeyType,
    build_crl,
    create_issuing_ca,
    create_root_ca,
    encrypt_private_key_pem,
    load_private_key_pem,
)
from mycert.pki.token import TokenError
from mycert.services.issuance import request_issue
from tests.factories import CertificateRequestFactory
from tests.pki.helpers import run_command
from tests.support.softhsm import PIN as SOFTHSM_PIN
from tests.support.softhsm import SoftHsm
from tests.test_issuance import _keystore_and_password

STRONG = "a-strong-passphrase-of-32-chars!"
ROOT = "the-root-key-s-own-passphrase-32"


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is required")
    return path


@pytest.fixture(scope="module")
def _file_ca_made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA made for the module: each key file costs its 600,000 PBKDF2 rounds."""
    paths = custody.CaPaths(tmp_path_factory.mktemp("file-ca") / "ca")
    custody.ca_create(
        paths,
        STRONG.encode(),
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.EC_P256,
        now=timezone.now(),
        root_passphrase=ROOT.encode(),
    )
    return paths.directory


@pytest.fixture
def file_ca(settings: Any, tmp_path: Path, _file_ca_made: Path) -> custody.CaPaths:
    """A CA of our own in a temporary folder (the ceremonies change it): a copy, modes kept."""
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.MYCERT_CA_KEY_PASSPHRASE = STRONG
    settings.MYCERT_ROOT_KEY_PASSPHRASE = ROOT
    shutil.copytree(_file_ca_made, settings.MYCERT_CA_DIR)
    custody.cache_clear()
    return custody.ca_paths()


@pytest.fixture
def token_settings(settings: Any, tmp_path: Path, softhsm: SoftHsm) -> Any:
    """MYCERT_CA_BACKEND=pkcs11 on a fresh SoftHSM2 token; nothing secret in the CA dir."""
    label = softhsm.init_token(f"t{tmp_path.name[-20:]}")
    settings.MYCERT_CA_BACKEND = "pkcs11"
    settings.MYCERT_PKCS11_MODULE = softhsm.module
    settings.MYCERT_PKCS11_TOKEN_LABEL = label
    # The root's own token (offline in production: the workers are never told of it).
    settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = softhsm.init_token(f"r{tmp_path.name[-20:]}")
    settings.MYCERT_PKCS11_PIN = softhsm.pin
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.MYCERT_CA_KEY_PASSPHRASE = ""
    custody.cache_clear()
    yield settings
    custody.cache_clear()


# --- File keys ----------------------------------------------------------------------------


def test_ca_key_files_use_600000_pbkdf2_rounds(file_ca: custody.CaPaths, openssl: str) -> None:
    for path in (file_ca.root_key, file_ca.issuing_key, file_ca.ocsp_key):
        dump = subprocess.run(
            [openssl, "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
        ).stdout
        assert "PBKDF2" in dump
        # openssl prints the iteration count in hex: 600,000 = 0x927C0.
        assert ":0927C0" in dump, dump


def test_short_passphrase_refused_in_production(settings: Any, tmp_path: Path) -> None:
    settings.DEBUG = False
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.MYCERT_CA_KEY_PASSPHRASE = "short-19-characters"
    messages = checks.check_ca()
    assert [m.id for m in messages] == ["mycert.E009"]
    assert "MYCERT_CA_KEY_PASSPHRASE is shorter than 20 characters" in messages[0].msg
    with pytest.raises(CommandError, match="at least 20 characters in production"):
        call_command("init_ca", key_type="ec-p256")
    assert not (tmp_path / "ca").exists()


def test_ocsp_key_has_its_own_passphrase(settings: Any, file_ca: custody.CaPaths) -> None:
    settings.MYCERT_OCSP_KEY_PASSPHRASE = "the-responder-s-own-passphrase"
    custody.cache_clear()
    # The existing responder key was written with the CA's passphrase: renewing writes
    # a new key with the responder's own.
    call_command("renew_ocsp_responder")
    responder = custody.ocsp_responder_load()
    settings.MYCERT_CA_KEY_PASSPHRASE = "not-the-ca-passphrase-anymore!!"
    custody.cache_clear()
    assert custody.ocsp_responder_load().certificate == responder.certificate
    with pytest.raises(custody.CustodyError):
        custody.ca_load()


# --- The issuing CA's profile (issue 13) --------------------------------------------------


@pytest.mark.django_db
def test_new_issuing_ca_has_policy_and_ca_issuers(
    client: Any, settings: Any, file_ca: custody.CaPaths
) -> None:
    issuing = custody.ca_certificates_load().issuing
    policies = issuing.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [
        settings.MYCERT_CERT_POLICY_OID
    ]
    aia = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = [d.access_location.value for d in aia]
    assert urls == [f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/root.cer"]
    # The address serves the root, in DER (RFC 5280 §4.2.2.1).
    response = client.get(urls[0].removeprefix(settings.MYCERT_PKI_BASE_URL))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.content) == custody.ca_certificates_load().root


@pytest.mark.django_db
def test_renew_issuing_ca_gives_an_old_ca_the_profile(
    settings: Any, tmp_path: Path, openssl: str
) -> None:
    """An existing CA (no policy, no AIA) gets both by a re-issue by the root."""
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.MYCERT_CA_KEY_PASSPHRASE = STRONG
    settings.MYCERT_ROOT_KEY_PASSPHRASE = ROOT
    paths = custody.ca_paths()
    paths.directory.mkdir()
    now = timezone.now()
    root = create_root_ca(
        subject=DistinguishedName("Old Root", "Agence eSanté", "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    old = create_issuing_ca(
        root=root,
        subject=DistinguishedName("Old Issuing", "Agence eSanté", "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    for path, data in (
        (tmp_path / "root.pem", root.certificate.public_bytes(Encoding.PEM)),
        (tmp_path / "root-key.pem", encrypt_private_key_pem(root.private_key, b"import")),
        (tmp_path / "issuing.pem", old.certificate.public_bytes(Encoding.PEM)),
        (tmp_path / "issuing-key.pem", encrypt_private_key_pem(old.private_key, b"import")),
    ):
        path.write_bytes(data)
    paths.directory.rmdir()
    os.environ["MYCERT_TEST_IMPORT_PASSPHRASE"] = "import"
    call_command(
        "init_ca",
        import_ca=True,
        root_cert=tmp_path / "root.pem",
        root_key=tmp_path / "root-key.pem",
        issuing_cert=tmp_path / "issuing.pem",
        issuing_key=tmp_path / "issuing-key.pem",
        key_passphrase_env="MYCERT_TEST_IMPORT_PASSPHRASE",
    )
    request = CertificateRequestFactory.create()
    leaf_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    assert leaf_id is not None
    leaf = x509.load_pem_x509_certificate(Certificate.objects.get(pk=leaf_id).pem.encode())
    before = custody.ca_certificates_load().issuing
    with pytest.raises(x509.ExtensionNotFound):
        before.extensions.get_extension_for_class(x509.CertificatePolicies)

    call_command("renew_issuing_ca")

    after = custody.ca_certificates_load().issuing
    assert after.public_key() == before.public_key()
    assert after.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert after.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert (paths.directory / f"issuing-{before.serial_number:x}.pem").exists()
    # The leaf issued before the re-issue validates under the new certificate, with the
    # explicit policy ETSI relying parties require.
    verifier = PolicyBuilder().store(Store([root.certificate])).time(timezone.now())
    verifier.build_client_verifier().verify(leaf, [after])
    leaf_pem = tmp_path / "leaf.pem"
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    subprocess.run(
        [
            openssl,
            "verify",
            "-explicit_policy",
            "-policy",
            settings.MYCERT_CERT_POLICY_OID,
            "-CAfile",
            str(paths.root_cert),
            "-untrusted",
            str(paths.issuing_cert),
            str(leaf_pem),
        ],
        check=True,
        capture_output=True,
    )
    # A later issuance loads the renewed certificate with the same key.
    assert custody.ca_load().issuing.certificate == after


# --- The root CRL ---------------------------------------------------------------------------


def _root_crl(paths: custody.CaPaths) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(paths.root_crl.read_bytes())


def _number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def test_sign_root_crl_increases_the_number(file_ca: custody.CaPaths) -> None:
    first = _root_crl(file_ca)
    call_command("sign_root_crl")
    second = _root_crl(file_ca)
    call_command("sign_root_crl")
    third = _root_crl(file_ca)
    assert _number(first) < _number(second) < _number(third)
    root = x509.load_pem_x509_certificate(file_ca.root_cert.read_bytes())
    assert third.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert third.next_update_utc is not None
    assert third.next_update_utc - timezone.now() > timedelta(days=364)


def test_sign_root_crl_with_the_root_key_elsewhere(
    file_ca: custody.CaPaths, tmp_path: Path
) -> None:
    """The root key lives offline: on removable media, not in MYCERT_CA_DIR."""
    offline = tmp_path / "usb-root-key.pem"
    file_ca.root_key.rename(offline)
    before = _number(_root_crl(file_ca))
    with pytest.raises(CommandError, match="root CA private key is missing"):
        call_command("sign_root_crl")
    call_command("sign_root_crl", root_key=offline)
    assert _number(_root_crl(file_ca)) > before


@pytest.mark.django_db
def test_root_crl_number_grows_across_import(
    settings: Any, file_ca: custody.CaPaths, tmp_path: Path
) -> None:
    """Re-importing the root elsewhere never goes back to a lower cRLNumber."""
    call_command("sign_root_crl")
    call_command("sign_root_crl")
    previous = _number(_root_crl(file_ca))
    os.environ["MYCERT_TEST_IMPORT_PASSPHRASE"] = STRONG
    # The root key is exported as it was sent: under the import's one passphrase.
    exported_root_key = tmp_path / "export-root-key.pem"
    exported_root_key.write_bytes(
        encrypt_private_key_pem(custody.root_load().private_key, STRONG.encode())
    )
    settings.MYCERT_CA_DIR = tmp_path / "imported"
    custody.cache_clear()
    call_command(
        "init_ca",
        import_ca=True,
        root_cert=file_ca.root_cert,
        root_key=exported_root_key,
        issuing_cert=file_ca.issuing_cert,
        issuing_key=file_ca.issuing_key,
        key_passphrase_env="MYCERT_TEST_IMPORT_PASSPHRASE",
        root_crl=file_ca.root_crl,
    )
    imported = custody.ca_paths()
    assert _number(_root_crl(imported)) > previous
    # Without the previous CRL the number is the time: above any earlier sequential one.
    now = timezone.now()
    assert custody.root_crl_number_next(0, now=now) == int(now.timestamp())
    assert custody.root_crl_number_next(int(now.timestamp()) + 5, now=now) == (
        int(now.timestamp()) + 6
    )


# --- Warnings before a ceremony is due ----------------------------------------------------


@pytest.mark.django_db
def test_healthz_and_metrics_warn_before_a_ceremony_is_due(
    client: Any, settings: Any, file_ca: custody.CaPaths, tmp_path: Path, smtp_settings: Any
) -> None:
    health.clear_cache()
    response = client.get("/healthz")
    ca = response.json()["checks"]["ca"]
    assert ca["status"] == "ok"
    assert "warnings" not in ca  # all three far off (the responder: renewed at 10 days)
    assert ca["root_crl_not_after"]

    # A CA made 22 days ago: its responder runs out in 8 days (beat missed the renewal
    # at 10), and a root CRL re-signed to run out in 29 days.
    settings.MYCERT_CA_DIR = tmp_path / "older-ca"
    paths = custody.ca_paths()
    now = timezone.now()
    custody.ca_create(
        paths,
        STRONG.encode(),
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.EC_P256,
        now=now - timedelta(days=22),
    )
    root = custody.root_load()
    paths.root_crl.write_bytes(
        build_crl(
            issuer=root,
            entries=[],
            crl_number=99,
            this_update=now - timedelta(days=336),
            next_update=now + timedelta(days=29),
        ).public_bytes(Encoding.DER)
    )
    custody.cache_clear()
    response = client.get("/healthz")
    ca = response.json()["checks"]["ca"]
    # A warning, not an outage: the load balancer keeps the host.
    assert response.status_code == 200
    assert ca["status"] == "ok"
    assert ca["warnings"] == "ocsp_responder_expires_soon,root_crl_expires_soon"

    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    warnings = {
        sample.labels["item"]: sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "mycert_ca_expiry_warning"
        for sample in family.samples
    }
    assert warnings == {"root_crl": 1.0, "ocsp_responder": 1.0, "issuing_ca": 0.0}


# --- PKCS#11 --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_init_ca_in_the_token_leaves_no_key_file(token_settings: Any) -> None:
    call_command("init_ca", key_type="ec-p256")
    paths = custody.ca_paths()
    assert sorted(p.name for p in paths.directory.iterdir()) == [
        "issuing.pem",
        "ocsp.pem",
        "root-ocsp",  # the root's OCSP answers on the issuing CA (public)
        "root.crl",
        "root.pem",
    ]
    for path in paths.directory.rglob("*"):
        assert path.is_dir() or b"PRIVATE KEY" not in path.read_bytes()
    # The root key in its own token, never in the workers'.
    assert custody.ca_token().labels() == {"mycert-issuing", "mycert-ocsp"}
    assert custody.ca_token(root=True).labels() == {"mycert-root"}
    loaded = custody.ca_load()
    assert type(loaded.issuing.private_key).__name__ == "TokenEcPrivateKey"
    assert checks.check_ca() == []


@pytest.mark.django_db
def test_init_ca_refuses_to_overwrite_token_keys(token_settings: Any, tmp_path: Path) -> None:
    call_command("init_ca", key_type="ec-p256")
    token_settings.MYCERT_CA_DIR = tmp_path / "another-ca"
    custody.cache_clear()
    with pytest.raises(
        CommandError, match="already holds mycert-issuing, mycert-ocsp, mycert-root"
    ):
        call_command("init_ca", key_type="ec-p256")
    assert not (tmp_path / "another-ca").exists()


@pytest.mark.django_db
def test_issuance_pipeline_with_token_keys(
    token_settings: Any, tmp_path: Path, openssl: str
) -> None:
    call_command("init_ca", key_type="rsa-2048")
    request = CertificateRequestFactory.create()
    certificate_id = request_issue(request_id=request.pk, now=timezone.now()).certificate_id
    assert certificate_id is not None
    certificate = Certificate.objects.get(pk=certificate_id)
    keystore, password = _keystore_and_password(certificate)
    path = tmp_path / "keystore.p12"
    path.write_bytes(keystore)
    # openssl opens the keystore; the leaf verifies against the token-signed chain.
    leaf_pem = subprocess.run(
        [openssl, "pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-nokeys", "-clcerts"],
        check=True,
        capture_output=True,
    ).stdout
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    paths = custody.ca_paths()
    run_command(
        [
            openssl,
            "verify",
            "-explicit_policy",
            "-policy",
            token_settings.MYCERT_CERT_POLICY_OID,
            "-CAfile",
            str(paths.root_cert),
            "-untrusted",
            str(paths.issuing_cert),
            str(tmp_path / "leaf.pem"),
        ]
    )
    # The ceremonies with the token: root CRL and re-issue, no key file anywhere.
    call_command("sign_root_crl")
    call_command("renew_issuing_ca")
    call_command("renew_ocsp_responder")
    assert not any(
        b"PRIVATE KEY" in p.read_bytes() for p in paths.directory.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize(
    ("change", "check_id", "message"),
    [
        ({"MYCERT_PKCS11_PIN": "wrong-pin"}, "mycert.E007", "PIN of the PKCS#11 token"),
        ({"MYCERT_PKCS11_TOKEN_LABEL": "absent"}, "mycert.E006", "No PKCS#11 token labelled"),
        ({"MYCERT_PKCS11_MODULE": "/nonexistent/libp11.so"}, "mycert.E006", "cannot be loaded"),
    ],
)
@pytest.mark.django_db
def test_check_explains_token_problems(
    token_settings: Any, change: dict[str, str], check_id: str, message: str
) -> None:
    call_command("init_ca", key_type="ec-p256")
    for name, value in change.items():
        setattr(token_settings, name, value)
    custody.cache_clear()
    messages = checks.check_ca()
    assert [m.id for m in messages] == [check_id]
    assert message in messages[0].msg
    assert "Traceback" not in messages[0].msg
    with pytest.raises(SystemCheckError, match=check_id):
        call_command("check")


# --- The root key offline by default (issue 22) ----------------------------------------------


@pytest.fixture
def fresh_file_settings(settings: Any, tmp_path: Path) -> Any:
    """File backend, an empty CA folder, a worker's passphrase and the root's own."""
    settings.MYCERT_CA_DIR = tmp_path / "ca"
    settings.MYCERT_CA_KEY_PASSPHRASE = STRONG
    settings.MYCERT_ROOT_KEY_PASSPHRASE = ROOT
    custody.cache_clear()
    yield settings
    custody.cache_clear()


@pytest.mark.django_db
def test_init_ca_writes_the_root_key_under_its_own_passphrase_and_says_how_to_take_it_offline(
    fresh_file_settings: Any, tmp_path: Path
) -> None:
    out = io.StringIO()
    call_command("init_ca", key_type="ec-p256", stdout=out)
    paths = custody.ca_paths()
    assert "Next step: take the root key offline" in out.getvalue()
    assert f"shred -u {paths.root_key}" in out.getvalue()
    # The workers' passphrase does not open the root key; the root's own does.
    with pytest.raises(ValueError, match=r"passphrase|decrypt|Bad"):
        load_private_key_pem(paths.root_key.read_bytes(), STRONG.encode())
    assert load_private_key_pem(paths.root_key.read_bytes(), ROOT.encode())
    # While it is on this worker, `check` says so, with the reason; then it goes offline.
    messages = checks.check_ca()
    assert [m.id for m in messages] == ["mycert.E013"]
    assert "holds the root CA key file" in messages[0].msg
    assert "sign a new issuing CA" in messages[0].msg
    offline = tmp_path / "usb" / "root-key.pem"
    offline.parent.mkdir()
    paths.root_key.rename(offline)
    assert checks.check_ca() == []
    # The ceremonies take it from where it lives offline.
    before = _number(_root_crl(paths))
    call_command("sign_root_crl", root_key=offline)
    assert _number(_root_crl(paths)) > before
    fresh_file_settings.MYCERT_ROOT_KEY_FILE = str(offline)
    call_command("renew_issuing_ca")
    call_command("sign_root_crl")
    # A worker that is told where the root key is holds it too.
    messages = checks.check_ca()
    assert [m.id for m in messages] == ["mycert.E013"]


@pytest.mark.parametrize(
    ("root_passphrase", "message"),
    [
        ("", "MYCERT_ROOT_KEY_PASSPHRASE is not set"),
        (STRONG, "MYCERT_ROOT_KEY_PASSPHRASE is the same as MYCERT_CA_KEY_PASSPHRASE"),
    ],
)
@pytest.mark.django_db
def test_init_ca_refuses_the_root_key_under_the_workers_passphrase(
    fresh_file_settings: Any, root_passphrase: str, message: str
) -> None:
    fresh_file_settings.MYCERT_ROOT_KEY_PASSPHRASE = root_passphrase
    with pytest.raises(CommandError, match=message):
        call_command("init_ca", key_type="ec-p256")
    assert not custody.ca_paths().directory.exists()


@pytest.mark.django_db
def test_init_ca_refuses_the_root_key_in_the_workers_token(token_settings: Any) -> None:
    token_settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = ""
    with pytest.raises(CommandError, match="MYCERT_PKCS11_ROOT_TOKEN_LABEL is not set"):
        call_command("init_ca", key_type="ec-p256")
    token_settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = token_settings.MYCERT_PKCS11_TOKEN_LABEL
    with pytest.raises(CommandError, match="is the workers' token"):
        call_command("init_ca", key_type="ec-p256")
    assert custody.ca_token().labels() == set()
    assert not custody.ca_paths().directory.exists()


@pytest.mark.django_db
def test_the_root_key_online_takes_a_flag_that_says_what_it_means(token_settings: Any) -> None:
    token_settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = ""
    token_settings.MYCERT_ROOT_KEY_ONLINE = True
    out = io.StringIO()
    call_command("init_ca", key_type="ec-p256", stdout=out)
    assert "whoever compromises a worker can sign a new issuing CA" in out.getvalue()
    assert "mycert-root" in custody.ca_token().labels()
    assert checks.check_ca() == []
    # Without the flag, `check` on the worker says that its token holds the root key.
    token_settings.MYCERT_ROOT_KEY_ONLINE = False
    custody.cache_clear()
    messages = checks.check_ca()
    assert [m.id for m in messages] == ["mycert.E012"]
    assert "holds the root CA key" in messages[0].msg
    with pytest.raises(SystemCheckError, match=r"mycert\.E012"):
        call_command("check")


# --- A refused PIN is not tried again (issue 22) ---------------------------------------------


class _LoginCounter:
    """Counts the logins the real SoftHSM2 refuses, around python-pkcs11's own objects."""

    def __init__(self, real_lib: Any) -> None:
        self.refused = 0
        self._real_lib = real_lib

    def lib(self, module: str) -> Any:
        counter = self
        real = self._real_lib(module)

        class Token:
            def __init__(self, token: Any) -> None:
                self._token = token

            def __getattr__(self, name: str) -> Any:
                return getattr(self._token, name)

            def open(self, **kwargs: Any) -> Any:
                try:
                    return self._token.open(**kwargs)
                except (pkcs11.PinIncorrect, pkcs11.PinLocked):
                    counter.refused += 1
                    raise

        class Lib:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def get_token(self, **kwargs: Any) -> Token:
                return Token(real.get_token(**kwargs))

        return Lib()


@pytest.mark.django_db
def test_a_refused_pin_is_tried_once_per_process_alerted_and_explained(
    token_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    call_command("init_ca", key_type="ec-p256")
    pin_file = tmp_path / "pin"
    pin_file.write_text("a-stale-pin\n")
    token_settings.MYCERT_PKCS11_PIN = ""
    token_settings.MYCERT_PKCS11_PIN_FILE = str(pin_file)
    custody.cache_clear()
    counter = _LoginCounter(pkcs11.lib)
    monkeypatch.setattr(pkcs11, "lib", counter.lib)

    # Ten rounds of what a worker does: a child's session at start, an issuance, the
    # OCSP refresh, the CRL task's retry after a cache reset.
    for _ in range(10):
        custody.token_session_open()
        for use in (custody.ca_load, custody.ocsp_responder_load):
            with pytest.raises(custody.CustodyError) as caught:
                use()
            assert caught.value.code == "pin"
        custody.cache_clear()
    assert counter.refused == 1
    assert "until the PIN changes" in str(caught.value)

    # One alert to the security officer; /healthz and `check` say why, in words.
    alerts = OperatorAlert.objects.filter(kind="hsm_pin_refused")
    assert alerts.count() == 1
    assert alerts.get().recipient == OperatorAlert.Recipient.SECURITY
    health.clear_cache()
    custody_check = client.get("/healthz").json()["checks"]["custody"]
    assert custody_check["warnings"] == "hsm_pin_refused"
    assert "refused the workers' PIN" in custody_check["reason"]
    assert "stops logging in until the PIN changes" in custody_check["reason"]
    messages = checks.check_ca()
    assert [m.id for m in messages] == ["mycert.E007"]
    assert "refused this PIN earlier" in messages[0].msg
    assert "so that the HSM does not lock it" in str(messages[0].hint)

    # The PIN file fixed: the next use logs in (once), signs, and the mark goes.
    pin_file.write_text(SOFTHSM_PIN + "\n")
    assert custody.ca_load().issuing.certificate
    assert counter.refused == 1
    health.clear_cache()
    assert "reason" not in client.get("/healthz").json()["checks"]["custody"]


@pytest.mark.django_db
def test_an_hsm_outage_is_waited_out_and_said_in_words(
    token_settings: Any, softhsm: SoftHsm, client: Any, smtp_settings: Any
) -> None:
    from mycert.models import CertificateRequest
    from mycert.tasks.issuance import issue_certificate

    call_command("init_ca", key_type="ec-p256")
    custody.ca_load()  # the worker's session is open, its key found
    request = CertificateRequestFactory.create()
    away = softhsm.directory.with_name(softhsm.directory.name + "-away")
    softhsm.directory.rename(away)
    try:
        # Called directly, the task's retry re-raises what it would retry on.
        with pytest.raises((custody.CustodyError, TokenError)) as caught:
            issue_certificate(request.pk)
    finally:
        away.rename(softhsm.directory)
    assert custody.is_temporary(caught.value)
    request.refresh_from_db()
    assert request.status == CertificateRequest.Status.ISSUING  # waiting, not failed
    assert not OperatorAlert.objects.filter(kind="request_failed").exists()
    health.clear_cache()
    custody_check = client.get("/healthz").json()["checks"]["custody"]
    assert custody_check["warnings"] == "hsm_unavailable"
    assert "could not reach the HSM" in custody_check["reason"]
    assert "retried with back-off; nothing is lost" in custody_check["reason"]

    # The HSM back: the retry issues the certificate, and the words go.
    met: list[bool] = []
    for _ in range(3):  # the first use may meet the session of before the outage
        try:
            issue_certificate(request.pk)
            break
        except (custody.CustodyError, TokenError) as exc:
            met.append(custody.is_temporary(exc))
    assert all(met)
    assert Certificate.objects.filter(request=request).count() == 1
    health.clear_cache()
    assert "reason" not in client.get("/healthz").json()["checks"]["custody"]


@pytest.mark.django_db
def test_the_root_token_has_its_own_pin(
    token_settings: Any, softhsm: SoftHsm, tmp_path: Path
) -> None:
    root_pin = tmp_path / "root-pin"
    root_pin.write_text("the-root-token-pin\n")
    token_settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL = softhsm.init_token(
        f"p{tmp_path.name[-20:]}", pin="the-root-token-pin"
    )
    token_settings.MYCERT_PKCS11_ROOT_PIN_FILE = str(root_pin)
    call_command("init_ca", key_type="ec-p256")
    assert custody.ca_token(root=True).labels() == {"mycert-root"}
    call_command("sign_root_crl")
    # The workers' PIN does not open the root's token.
    token_settings.MYCERT_PKCS11_ROOT_PIN_FILE = ""
    custody.cache_clear()
    with pytest.raises(CommandError, match="PIN of the PKCS#11 token"):
        call_command("sign_root_crl")
