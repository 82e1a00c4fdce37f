"""Create the agency's CA (``init_ca``), or import an existing one (``init_ca --import``).

Both refuse to overwrite anything, in the CA folder or in the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from django.conf import settings

from mycert.custody.addresses import root_ca_url, root_crl_url
from mycert.custody.ceremonies import (
    crl_entries,
    root_crl_der,
    root_crl_number_next,
    root_ocsp_write,
)
from mycert.custody.errors import CustodyError
from mycert.custody.files import (
    CaPaths,
    certificate_pem,
    private_file_write,
    public_file_write,
    root_key_default_path,
)
from mycert.custody.keys import (
    ISSUING_LABEL,
    OCSP_LABEL,
    ROOT_LABEL,
    ca_token,
    ocsp_passphrase,
    root_file_passphrase,
    token_failure,
    uses_token,
)
from mycert.custody.loading import cache_clear
from mycert.custody.responder import ocsp_responder_build
from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    PrivateKey,
    create_issuing_ca,
    create_root_ca,
    encrypt_private_key_pem,
    load_private_key_pem,
)
from mycert.pki.crl import RevokedEntry
from mycert.pki.token import TokenError

__all__ = ["RootKeyFile", "ca_create", "ca_import"]


def _refuse_existing(paths: CaPaths, root_file: RootKeyFile | None = None) -> None:
    existing = [p.name for p in paths.all_files() if p.exists()]
    if root_file is not None and root_file.path.exists() and root_file.path != paths.root_key:
        existing.append(str(root_file.path))
    if existing:
        raise CustodyError(
            f"{paths.directory} already holds a CA ({', '.join(existing)}); refusing to overwrite it.",
            code="exists",
        )


def ca_create(
    paths: CaPaths,
    passphrase: bytes,
    *,
    organization: str,
    country: str,
    key_type: KeyType,
    now: datetime,
    root_passphrase: bytes | None = None,
    root_key_path: Path | None = None,
) -> None:
    """Create a root, an issuing CA and an OCSP responder; refuse if any exists.

    With the token backend the three keys are generated inside the tokens (the root's in
    its own) and only the certificates and the root CRL are written to ``paths``. With
    key files the root key goes to ``root_key_path`` (default
    :func:`root_key_default_path`) under ``root_passphrase`` (default
    MYCERT_ROOT_KEY_PASSPHRASE), for the operator to take offline.
    """
    root_file = _root_file(paths, root_passphrase, root_key_path)
    _refuse_existing(paths, root_file)
    keys: dict[str, PrivateKey | None] = {"root": None, "issuing": None, "ocsp": None}
    if uses_token():
        keys = _generate_token_keys(key_type)
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = create_root_ca(
        subject=DistinguishedName(
            common_name=f"{organization} MyCert Root CA", organization=organization, country=country
        ),
        key_type=key_type,
        now=now,
        key=keys["root"],
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
        policy_oid=settings.MYCERT_CERT_POLICY_OID,
        ca_issuers_url=root_ca_url(),
        key=keys["issuing"],
    )
    _write_all(
        paths,
        passphrase,
        root=root,
        issuing=issuing,
        now=now,
        ocsp_key=keys["ocsp"],
        root_file=root_file,
    )


@dataclass(frozen=True)
class RootKeyFile:
    path: Path
    passphrase: bytes


def _root_file(paths: CaPaths, passphrase: bytes | None, path: Path | None) -> RootKeyFile | None:
    """Where and under which passphrase the root key file goes (None: in a token)."""
    if uses_token():
        return None
    return RootKeyFile(
        path=path or root_key_default_path(paths),
        passphrase=passphrase if passphrase is not None else root_file_passphrase(),
    )


def _generate_token_keys(key_type: KeyType) -> dict[str, PrivateKey | None]:
    """Generate the three CA keys in the token; refuse if any label is taken."""
    try:
        root_token = ca_token(root=True)
        token = ca_token()
        taken = (root_token.labels() & {ROOT_LABEL}) | (
            token.labels() & {ISSUING_LABEL, OCSP_LABEL}
        )
        if taken:
            raise CustodyError(
                f"The token already holds {', '.join(sorted(taken))}; refusing to overwrite "
                "(a CA exists: use the renewal commands, or a fresh token).",
                code="exists",
            )
        return {
            "root": root_token.generate_key(key_type, ROOT_LABEL),
            "issuing": token.generate_key(key_type, ISSUING_LABEL),
            # EC P-256: an OCSP signature costs microseconds, also in a token.
            "ocsp": token.generate_key(KeyType.EC_P256, OCSP_LABEL),
        }
    except TokenError as exc:
        if exc.code == "exists":
            raise CustodyError(str(exc), code="exists") from exc
        raise token_failure(exc, "CA") from exc


def ca_import(
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
    previous_root_crl_der: bytes | None = None,
    root_passphrase: bytes | None = None,
    root_key_path: Path | None = None,
) -> None:
    """Take an existing root and issuing CA, re-encrypt their keys, add an OCSP responder.

    ``previous_root_crl_der``, the root's latest CRL, makes the new root CRL's number
    continue from it (it is time-based anyway, which suffices unless the previous CRL
    was signed within the same second).
    """
    if uses_token():
        raise CustodyError(
            "init_ca --import takes key files (MYCERT_CA_BACKEND=file); with a token, import "
            "the keys with the HSM's own tools, then the certificates (docs/deploy.md).",
            code="invalid",
        )
    root_file = _root_file(paths, root_passphrase, root_key_path)
    _refuse_existing(paths, root_file)
    try:
        root_cert = x509.load_pem_x509_certificate(root_cert_pem)
        issuing_cert = x509.load_pem_x509_certificate(issuing_cert_pem)
    except ValueError as exc:
        raise CustodyError(f"A CA certificate is not valid PEM: {exc}") from exc
    try:
        root = CertificateAuthority(
            root_cert, load_private_key_pem(root_key_pem, root_key_passphrase)
        )
        issuing = CertificateAuthority(
            issuing_cert, load_private_key_pem(issuing_key_pem, issuing_key_passphrase)
        )
    except ValueError as exc:
        raise CustodyError(str(exc)) from exc
    if issuing_cert.issuer != root_cert.subject:
        raise CustodyError(
            "The issuing CA was not issued by the given root (issuer ≠ root subject)."
        )
    try:
        issuing_cert.verify_directly_issued_by(root_cert)
    except (ValueError, TypeError, Exception) as exc:
        raise CustodyError(
            f"The issuing CA's signature does not verify with the root: {exc}"
        ) from exc
    previous_number = 0
    previous_entries: list[RevokedEntry] = []
    if previous_root_crl_der is not None:
        try:
            previous = x509.load_der_x509_crl(previous_root_crl_der)
        except ValueError:
            try:
                previous = x509.load_pem_x509_crl(previous_root_crl_der)
            except ValueError as exc:
                raise CustodyError("The previous root CRL is neither DER nor PEM.") from exc
        if previous.issuer != root_cert.subject or not previous.is_signature_valid(
            root_cert.public_key()  # type: ignore[arg-type]
        ):
            raise CustodyError("The previous root CRL was not signed by the given root.")
        previous_number = int(
            previous.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        )
        # A revoked issuing CA stays revoked in the new folder's root CRL and OCSP answers.
        previous_entries = crl_entries(previous)
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_all(
        paths,
        passphrase,
        root=root,
        issuing=issuing,
        now=now,
        previous_root_crl_number=previous_number,
        previous_root_crl_entries=previous_entries,
        root_file=root_file,
    )


def _write_all(
    paths: CaPaths,
    passphrase: bytes,
    *,
    root: CertificateAuthority,
    issuing: CertificateAuthority,
    now: datetime,
    ocsp_key: PrivateKey | None = None,
    previous_root_crl_number: int = 0,
    previous_root_crl_entries: Sequence[RevokedEntry] = (),
    root_file: RootKeyFile | None = None,
) -> None:
    responder = ocsp_responder_build(issuing, now=now, key=ocsp_key)
    if root_file is not None:
        responder_passphrase = ocsp_passphrase()
        root_file.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_file_write(
            root_file.path, encrypt_private_key_pem(root.private_key, root_file.passphrase)
        )
        private_file_write(
            paths.issuing_key, encrypt_private_key_pem(issuing.private_key, passphrase)
        )
        private_file_write(
            paths.ocsp_key, encrypt_private_key_pem(responder.private_key, responder_passphrase)
        )
    public_file_write(paths.root_cert, certificate_pem(root.certificate))
    public_file_write(paths.issuing_cert, certificate_pem(issuing.certificate))
    public_file_write(paths.ocsp_cert, certificate_pem(responder.certificate))
    # Time-based: never below a CRL this root signed before, also after --import.
    number = root_crl_number_next(previous_root_crl_number, now=now)
    public_file_write(
        paths.root_crl,
        root_crl_der(root, now=now, crl_number=number, entries=previous_root_crl_entries),
    )
    root_ocsp_write(paths, root, entries=previous_root_crl_entries, now=now)
    cache_clear()
