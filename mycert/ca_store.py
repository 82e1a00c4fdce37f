"""The agency's CA on disk (``MYCERT_CA_DIR``): create, import, load once per process.

Layout (PEM; keys are PKCS#8 encrypted with ``MYCERT_CA_KEY_PASSPHRASE``)::

    root.pem        root-key.pem        root CA (long-lived, offline in production)
    issuing.pem     issuing-key.pem     issuing CA, signs professionals' certificates
    ocsp.pem        ocsp-key.pem        delegated OCSP responder (RFC 6960 §4.2.2.2)
    root.crl                            the root's CRL over the issuing CA (DER)

The CA key is loaded once per process: pyca validates an RSA key on every load.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    build_crl,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    encrypt_private_key_pem,
    key_matches_certificate,
    load_private_key_pem,
)

ROOT_CRL_VALIDITY = timedelta(days=365)
OCSP_RESPONDER_VALIDITY_DAYS = 30
# Renew the responder certificate when less than this is left (automatic, by beat).
OCSP_RESPONDER_RENEW_BEFORE = timedelta(days=10)


class CaStoreError(Exception):
    """The CA on disk is missing, unreadable or inconsistent (message says which)."""

    def __init__(self, message: str, *, code: str = "invalid") -> None:
        super().__init__(message)
        #: ``missing``, ``unreadable``, ``passphrase``, ``mismatch``, ``exists`` or ``invalid``
        self.code = code


@dataclass(frozen=True)
class CaPaths:
    directory: Path

    @property
    def root_cert(self) -> Path:
        return self.directory / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.directory / "root-key.pem"

    @property
    def issuing_cert(self) -> Path:
        return self.directory / "issuing.pem"

    @property
    def issuing_key(self) -> Path:
        return self.directory / "issuing-key.pem"

    @property
    def ocsp_cert(self) -> Path:
        return self.directory / "ocsp.pem"

    @property
    def ocsp_key(self) -> Path:
        return self.directory / "ocsp-key.pem"

    @property
    def root_crl(self) -> Path:
        return self.directory / "root.crl"

    def all_files(self) -> list[Path]:
        return [
            self.root_cert,
            self.root_key,
            self.issuing_cert,
            self.issuing_key,
            self.ocsp_cert,
            self.ocsp_key,
            self.root_crl,
        ]


def configured_paths() -> CaPaths:
    return CaPaths(Path(settings.MYCERT_CA_DIR))


def configured_passphrase() -> bytes:
    passphrase: str = settings.MYCERT_CA_KEY_PASSPHRASE
    if not passphrase:
        raise CaStoreError("MYCERT_CA_KEY_PASSPHRASE is not set.", code="passphrase")
    return passphrase.encode()


# --- URLs written into certificates (served by mycert.views_pki) -------------------------


def crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/issuing.crl"


def root_crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/root.crl"


def ocsp_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ocsp/"


def ca_issuers_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/issuing.cer"


# --- Writing ---------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _refuse_existing(paths: CaPaths) -> None:
    existing = [p.name for p in paths.all_files() if p.exists()]
    if existing:
        raise CaStoreError(
            f"{paths.directory} already holds a CA ({', '.join(existing)}); refusing to overwrite it.",
            code="exists",
        )


def _sign_root_crl(root: CertificateAuthority, *, now: datetime) -> bytes:
    crl = build_crl(
        issuer=root, entries=[], crl_number=1, this_update=now, next_update=now + ROOT_CRL_VALIDITY
    )
    return crl.public_bytes(serialization.Encoding.DER)


def create_ca(
    paths: CaPaths,
    passphrase: bytes,
    *,
    organization: str,
    country: str,
    key_type: KeyType,
    now: datetime,
) -> None:
    """Create a root, an issuing CA and an OCSP responder; refuse if any file exists."""
    _refuse_existing(paths)
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = create_root_ca(
        subject=DistinguishedName(
            common_name=f"{organization} MyCert Root CA", organization=organization, country=country
        ),
        key_type=key_type,
        now=now,
    )
    issuing = create_issuing_ca(
        root=root,
        subject=DistinguishedName(
            common_name=f"{organization} MyCert Issuing CA",
            organization=organization,
            country=country,
        ),
        key_type=key_type,
        now=now,
        crl_url=root_crl_url(),
    )
    _write_all(paths, passphrase, root=root, issuing=issuing, now=now)


def import_ca(
    paths: CaPaths,
    passphrase: bytes,
    *,
    root_cert_pem: bytes,
    root_key_pem: bytes,
    root_key_passphrase: bytes,
    issuing_cert_pem: bytes,
    issuing_key_pem: bytes,
    issuing_key_passphrase: bytes,
    now: datetime,
) -> None:
    """Take an existing root and issuing CA, re-encrypt their keys, add an OCSP responder."""
    _refuse_existing(paths)
    try:
        root_cert = x509.load_pem_x509_certificate(root_cert_pem)
        issuing_cert = x509.load_pem_x509_certificate(issuing_cert_pem)
    except ValueError as exc:
        raise CaStoreError(f"A CA certificate is not valid PEM: {exc}") from exc
    try:
        root = CertificateAuthority(
            root_cert, load_private_key_pem(root_key_pem, root_key_passphrase)
        )
        issuing = CertificateAuthority(
            issuing_cert, load_private_key_pem(issuing_key_pem, issuing_key_passphrase)
        )
    except ValueError as exc:
        raise CaStoreError(str(exc)) from exc
    if issuing_cert.issuer != root_cert.subject:
        raise CaStoreError(
            "The issuing CA was not issued by the given root (issuer ≠ root subject)."
        )
    try:
        issuing_cert.verify_directly_issued_by(root_cert)
    except (ValueError, TypeError, Exception) as exc:
        raise CaStoreError(
            f"The issuing CA's signature does not verify with the root: {exc}"
        ) from exc
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_all(paths, passphrase, root=root, issuing=issuing, now=now)


def _write_all(
    paths: CaPaths,
    passphrase: bytes,
    *,
    root: CertificateAuthority,
    issuing: CertificateAuthority,
    now: datetime,
) -> None:
    responder = _new_ocsp_responder(issuing, now=now)
    _write_private(paths.root_key, encrypt_private_key_pem(root.private_key, passphrase))
    _write_public(paths.root_cert, _pem(root.certificate))
    _write_private(paths.issuing_key, encrypt_private_key_pem(issuing.private_key, passphrase))
    _write_public(paths.issuing_cert, _pem(issuing.certificate))
    _write_private(paths.ocsp_key, encrypt_private_key_pem(responder.private_key, passphrase))
    _write_public(paths.ocsp_cert, _pem(responder.certificate))
    _write_public(paths.root_crl, _sign_root_crl(root, now=now))
    clear_cache()


def _new_ocsp_responder(issuing: CertificateAuthority, *, now: datetime) -> CertificateAuthority:
    organization = issuing.certificate.subject.get_attributes_for_oid(
        x509.NameOID.ORGANIZATION_NAME
    )
    country = issuing.certificate.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)
    org = str(organization[0].value) if organization else "MyCert"
    # EC P-256: an OCSP signature costs microseconds, which keeps the responder fast.
    return create_ocsp_responder(
        issuer=issuing,
        subject=DistinguishedName(
            common_name=f"{org} MyCert OCSP Responder",
            organization=org,
            country=str(country[0].value) if country else "LU",
        ),
        key_type=KeyType.EC_P256,
        now=now,
        validity_days=OCSP_RESPONDER_VALIDITY_DAYS,
    )


# --- Loading (once per process) -----------------------------------------------------------


@dataclass(frozen=True)
class LoadedCa:
    issuing: CertificateAuthority
    root_certificate: x509.Certificate

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """The chain a keystore carries above the leaf: issuing CA, then root."""
        return (self.issuing.certificate, self.root_certificate)


_lock = threading.Lock()
_loaded: dict[tuple[str, str], object] = {}


def clear_cache() -> None:
    with _lock:
        _loaded.clear()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CaStoreError(
            f"The {what} is missing at {path}; run `python manage.py init_ca` first.",
            code="missing",
        ) from exc
    except OSError as exc:
        raise CaStoreError(
            f"The {what} at {path} cannot be read: {exc.strerror}.", code="unreadable"
        ) from exc


def _load_pair(
    cert_path: Path, key_path: Path, passphrase: bytes, what: str
) -> CertificateAuthority:
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert_path, f"{what} certificate"))
    except ValueError as exc:
        raise CaStoreError(f"The {what} certificate at {cert_path} is not valid PEM.") from exc
    try:
        key = load_private_key_pem(_read(key_path, f"{what} private key"), passphrase)
    except ValueError as exc:
        raise CaStoreError(
            f"The {what} private key at {key_path} cannot be opened: {exc} "
            "(is MYCERT_CA_KEY_PASSPHRASE right?)",
            code="passphrase",
        ) from exc
    if not key_matches_certificate(key, certificate):
        raise CaStoreError(
            f"The {what} private key does not match its certificate.", code="mismatch"
        )
    return CertificateAuthority(certificate, key)


def _cache_key(path: Path) -> tuple[str, str]:
    try:
        stamp = str(path.stat().st_mtime_ns)
    except OSError:
        stamp = "missing"
    return (str(path), stamp)


def load_ca() -> LoadedCa:
    """Return the issuing CA (with its key) and the root certificate."""
    paths = configured_paths()
    key = _cache_key(paths.issuing_key)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, LoadedCa):
            return cached
        issuing = _load_pair(
            paths.issuing_cert, paths.issuing_key, configured_passphrase(), "issuing CA"
        )
        try:
            root = x509.load_pem_x509_certificate(_read(paths.root_cert, "root CA certificate"))
        except ValueError as exc:
            raise CaStoreError(
                f"The root CA certificate at {paths.root_cert} is not valid PEM."
            ) from exc
        loaded = LoadedCa(issuing=issuing, root_certificate=root)
        _loaded[key] = loaded
        return loaded


@dataclass(frozen=True)
class CaCertificates:
    issuing: x509.Certificate
    root: x509.Certificate


def load_ca_certificates() -> CaCertificates:
    """Return the issuing and root CA certificates (public; no key, no passphrase)."""
    paths = configured_paths()
    key = _cache_key(paths.issuing_cert)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, CaCertificates):
            return cached
        try:
            loaded = CaCertificates(
                issuing=x509.load_pem_x509_certificate(
                    _read(paths.issuing_cert, "issuing CA certificate")
                ),
                root=x509.load_pem_x509_certificate(_read(paths.root_cert, "root CA certificate")),
            )
        except ValueError as exc:
            raise CaStoreError(f"A CA certificate in {paths.directory} is not valid PEM.") from exc
        _loaded[key] = loaded
        return loaded


def load_ocsp_responder() -> CertificateAuthority:
    """Return the delegated OCSP responder (certificate and key)."""
    paths = configured_paths()
    key = _cache_key(paths.ocsp_cert)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, CertificateAuthority):
            return cached
        responder = _load_pair(
            paths.ocsp_cert, paths.ocsp_key, configured_passphrase(), "OCSP responder"
        )
        _loaded[key] = responder
        return responder


def renew_ocsp_responder_if_due(*, now: datetime) -> bool:
    """Issue a fresh responder certificate when the current one nears its end."""
    paths = configured_paths()
    current = load_ocsp_responder()
    if current.certificate.not_valid_after_utc - now > OCSP_RESPONDER_RENEW_BEFORE:
        return False
    responder = _new_ocsp_responder(load_ca().issuing, now=now)
    passphrase = configured_passphrase()
    # Write beside, then rename: readers never see a key without its certificate.
    tmp_key = paths.ocsp_key.with_suffix(".new")
    tmp_cert = paths.ocsp_cert.with_suffix(".new")
    for tmp in (tmp_key, tmp_cert):
        tmp.unlink(missing_ok=True)
    _write_private(tmp_key, encrypt_private_key_pem(responder.private_key, passphrase))
    _write_public(tmp_cert, _pem(responder.certificate))
    os.replace(tmp_key, paths.ocsp_key)
    os.replace(tmp_cert, paths.ocsp_cert)
    clear_cache()
    return True
