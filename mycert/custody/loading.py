"""Open the CA once per process and keep it.

pyca validates an RSA key on every load, and the PBKDF2 of a key file costs about
0.1 s (docs/deploy.md).

A cached entry is keyed by the file's path and mtime, so a replaced file (a renewed
responder, a renewed issuing CA) is read again; :func:`cache_clear` forgets everything,
token sessions included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from mycert.custody.errors import CustodyError
from mycert.custody.files import ca_paths, file_read, root_key_default_path
from mycert.custody.keys import (
    ca_passphrase,
    ocsp_passphrase,
    root_file_passphrase,
    token_key,
    tokens_forget,
    uses_token,
)
from mycert.pki import (
    CertificateAuthority,
    PrivateKey,
    key_matches_certificate,
    load_private_key_pem,
)

__all__ = [
    "CaCertificates",
    "LoadedCa",
    "ca_certificates_load",
    "ca_load",
    "cache_clear",
    "key_file_load",
    "ocsp_responder_load",
    "root_load",
]


@dataclass(frozen=True)
class LoadedCa:
    issuing: CertificateAuthority
    root_certificate: x509.Certificate

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """The chain a keystore carries above the leaf: issuing CA, then root."""
        return (self.issuing.certificate, self.root_certificate)


@dataclass(frozen=True)
class CaCertificates:
    issuing: x509.Certificate
    root: x509.Certificate


_lock = threading.Lock()
_loaded: dict[tuple[str, str], object] = {}


def cache_clear() -> None:
    with _lock:
        _loaded.clear()
    tokens_forget()


def key_file_load(key_path: Path, passphrase: bytes, what: str) -> PrivateKey:
    try:
        return load_private_key_pem(file_read(key_path, f"{what} private key"), passphrase)
    except ValueError as exc:
        setting = {
            "OCSP responder": "MYCERT_OCSP_KEY_PASSPHRASE",
            "root CA": "MYCERT_ROOT_KEY_PASSPHRASE",
        }.get(what, "MYCERT_CA_KEY_PASSPHRASE")
        raise CustodyError(
            f"The {what} private key at {key_path} cannot be opened: {exc} (is {setting} right?)",
            code="passphrase",
        ) from exc


def _load_pair(
    cert_path: Path, key_path: Path, passphrase: Callable[[], bytes], what: str
) -> CertificateAuthority:
    try:
        certificate = x509.load_pem_x509_certificate(file_read(cert_path, f"{what} certificate"))
    except ValueError as exc:
        raise CustodyError(f"The {what} certificate at {cert_path} is not valid PEM.") from exc
    if uses_token():
        key = token_key(certificate, what)
    else:
        key = key_file_load(key_path, passphrase(), what)
    if not key_matches_certificate(key, certificate):
        raise CustodyError(
            f"The {what} private key does not match its certificate.", code="mismatch"
        )
    return CertificateAuthority(certificate, key)


def _cache_key(path: Path) -> tuple[str, str]:
    try:
        stamp = str(path.stat().st_mtime_ns)
    except OSError:
        stamp = "missing"
    return (str(path), stamp)


def ca_load() -> LoadedCa:
    """Return the issuing CA (with its key) and the root certificate."""
    paths = ca_paths()
    key = _cache_key(paths.issuing_cert if uses_token() else paths.issuing_key)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, LoadedCa):
            return cached
        issuing = _load_pair(paths.issuing_cert, paths.issuing_key, ca_passphrase, "issuing CA")
        try:
            root = x509.load_pem_x509_certificate(file_read(paths.root_cert, "root CA certificate"))
        except ValueError as exc:
            raise CustodyError(
                f"The root CA certificate at {paths.root_cert} is not valid PEM."
            ) from exc
        loaded = LoadedCa(issuing=issuing, root_certificate=root)
        _loaded[key] = loaded
        return loaded


def ca_certificates_load() -> CaCertificates:
    """Return the issuing and root CA certificates (public; no key, no passphrase)."""
    paths = ca_paths()
    key = _cache_key(paths.issuing_cert)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, CaCertificates):
            return cached
        try:
            loaded = CaCertificates(
                issuing=x509.load_pem_x509_certificate(
                    file_read(paths.issuing_cert, "issuing CA certificate")
                ),
                root=x509.load_pem_x509_certificate(
                    file_read(paths.root_cert, "root CA certificate")
                ),
            )
        except ValueError as exc:
            raise CustodyError(f"A CA certificate in {paths.directory} is not valid PEM.") from exc
        _loaded[key] = loaded
        return loaded


def ocsp_responder_load() -> CertificateAuthority:
    """Return the delegated OCSP responder (certificate and key)."""
    paths = ca_paths()
    key = _cache_key(paths.ocsp_cert)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, CertificateAuthority):
            return cached
        responder = _load_pair(paths.ocsp_cert, paths.ocsp_key, ocsp_passphrase, "OCSP responder")
        _loaded[key] = responder
        return responder


def root_load(*, root_key_path: Path | None = None) -> CertificateAuthority:
    """The root CA with its key: the offline ceremonies only (file or root token)."""
    paths = ca_paths()
    try:
        certificate = x509.load_pem_x509_certificate(
            file_read(paths.root_cert, "root CA certificate")
        )
    except ValueError as exc:
        raise CustodyError(
            f"The root CA certificate at {paths.root_cert} is not valid PEM."
        ) from exc
    if uses_token() and root_key_path is None:
        key = token_key(certificate, "root CA", root=True)
    else:
        key = key_file_load(
            root_key_path or root_key_default_path(paths),
            root_file_passphrase(),
            "root CA",
        )
    if not key_matches_certificate(key, certificate):
        raise CustodyError(
            "The root CA private key does not match its certificate.", code="mismatch"
        )
    return CertificateAuthority(certificate, key)
