"""The CA folder (``MYCERT_CA_DIR``): where each file is, how it is read and written.

Keys and certificates are created, never overwritten (``O_EXCL``); public files that
change (the root CRL, a renewed certificate, the root's OCSP answers) are replaced
atomically, so a reader sees the old file or the new one, whole.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from mycert.custody.errors import CustodyError

__all__ = [
    "ROOT_OCSP_DIRECTORY",
    "CaPaths",
    "ca_paths",
    "certificate_pem",
    "file_read",
    "issuing_certificates",
    "private_file_write",
    "public_file_replace",
    "public_file_write",
    "root_key_default_path",
    "root_key_files_online",
    "root_ocsp_path",
]


@dataclass(frozen=True)
class CaPaths:
    # Each path built once (cached_property): the OCSP responder checks the issuing
    # certificate's file on every request.
    directory: Path

    @functools.cached_property
    def root_cert(self) -> Path:
        return self.directory / "root.pem"

    @functools.cached_property
    def root_key(self) -> Path:
        return self.directory / "root-key.pem"

    @functools.cached_property
    def issuing_cert(self) -> Path:
        return self.directory / "issuing.pem"

    @functools.cached_property
    def issuing_key(self) -> Path:
        return self.directory / "issuing-key.pem"

    @functools.cached_property
    def ocsp_cert(self) -> Path:
        return self.directory / "ocsp.pem"

    @functools.cached_property
    def ocsp_key(self) -> Path:
        return self.directory / "ocsp-key.pem"

    @functools.cached_property
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


def ca_paths() -> CaPaths:
    return _ca_paths(settings.MYCERT_CA_DIR)


@functools.lru_cache(maxsize=8)
def _ca_paths(directory: str | Path) -> CaPaths:
    return CaPaths(Path(directory))


def root_key_default_path(paths: CaPaths) -> Path:
    """Where the root key file is (file backend): MYCERT_ROOT_KEY_FILE, or the CA folder."""
    configured: str = settings.MYCERT_ROOT_KEY_FILE
    return Path(configured) if configured else paths.root_key


def root_key_files_online(paths: CaPaths) -> list[Path]:
    """Root key files this host can read: the CA folder's, MYCERT_ROOT_KEY_FILE's."""
    candidates = dict.fromkeys((paths.root_key, root_key_default_path(paths)))
    return [path for path in candidates if path.exists()]


ROOT_OCSP_DIRECTORY = "root-ocsp"


def root_ocsp_path(paths: CaPaths, serial_number: int, hash_name: str) -> Path:
    """Where the root's signed answer on one issuing CA certificate is kept (DER)."""
    return paths.directory / ROOT_OCSP_DIRECTORY / f"{serial_number:x}.{hash_name}.der"


def issuing_certificates(paths: CaPaths, root: x509.Certificate) -> list[x509.Certificate]:
    """issuing.pem and the earlier ones kept beside it (issuing-<serial>.pem)."""
    found = []
    for path in sorted(paths.directory.glob("issuing*.pem")):
        if path.name.endswith("-key.pem"):
            continue
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        if certificate.issuer == root.subject:
            found.append(certificate)
    return found


def file_read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CustodyError(
            f"The {what} is missing at {path}; run `python manage.py init_ca` first.",
            code="missing",
        ) from exc
    except OSError as exc:
        raise CustodyError(
            f"The {what} at {path} cannot be read: {exc.strerror}.", code="unreadable"
        ) from exc


def private_file_write(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def public_file_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def public_file_replace(path: Path, data: bytes) -> None:
    """Replace a public file atomically (readers see the old or the new one, whole)."""
    tmp = path.with_suffix(path.suffix + ".new")
    tmp.unlink(missing_ok=True)
    public_file_write(tmp, data)
    os.replace(tmp, path)
