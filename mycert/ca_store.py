"""The agency's CA (``MYCERT_CA_DIR``): create, import, load once per process.

Layout (PEM; with ``MYCERT_CA_BACKEND=file`` the keys are PKCS#8 encrypted with
``MYCERT_CA_KEY_PASSPHRASE``, the responder's with ``MYCERT_OCSP_KEY_PASSPHRASE``)::

    root.pem        root-key.pem        root CA (long-lived, offline: see below)
    issuing.pem     issuing-key.pem     issuing CA, signs professionals' certificates
    ocsp.pem        ocsp-key.pem        delegated OCSP responder (RFC 6960 §4.2.2.2)
    root.crl                            the root's CRL over the issuing CA (DER)
    root-ocsp/<serial>.<hash>.der       the root's OCSP answers on the issuing CA (DER)

With ``MYCERT_CA_BACKEND=pkcs11`` there is no key file: the keys live in the token
(``MYCERT_PKCS11_*``), labelled ``mycert-root``/``mycert-issuing``/``mycert-ocsp`` with
CKA_ID = the certificate's SubjectKeyIdentifier, so each certificate finds its key.

The root key is offline by default (issue 22): in its own token
(``MYCERT_PKCS11_ROOT_TOKEN_LABEL``), or in its own file under its own passphrase
(``MYCERT_ROOT_KEY_PASSPHRASE``), which ``init_ca`` writes for the operator to take away
and the ceremonies read from ``MYCERT_ROOT_KEY_FILE`` or ``--root-key``. Workers never
hold it: ``check`` reports an error on a worker whose token or CA folder does, unless
``MYCERT_ROOT_KEY_ONLINE`` says the operator accepts that a worker can sign a CA.

The CA key is loaded once per process: pyca validates an RSA key on every load, and the
PBKDF2 of a key file costs about 0.1 s (docs/deploy.md).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.dispatch import Signal

from mycert.pki import (
    CertificateAuthority,
    CertificateStatus,
    DistinguishedName,
    KeyType,
    PrivateKey,
    build_crl,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    encrypt_private_key_pem,
    key_matches_certificate,
    load_private_key_pem,
    reissue_issuing_ca,
)
from mycert.pki.crl import RevokedEntry
from mycert.pki.ocsp import StatusAnswer
from mycert.pki.ocsp_presigned import sign_ca_status_responses
from mycert.pki.token import Token, TokenError, key_id_for

ROOT_CRL_VALIDITY = timedelta(days=365)
OCSP_RESPONDER_VALIDITY_DAYS = 30
# Renew the responder certificate when less than this is left (automatic, by beat).
OCSP_RESPONDER_RENEW_BEFORE = timedelta(days=10)
# /healthz and /metrics warn this long before the root CRL, the responder or the CA ends.
EXPIRY_WARNING = timedelta(days=30)
# Passphrases of CA key files in production (DEBUG off): at least this long.
MIN_PASSPHRASE_LENGTH = 20

ROOT_LABEL = "mycert-root"
ISSUING_LABEL = "mycert-issuing"
OCSP_LABEL = "mycert-ocsp"


class CaStoreError(Exception):
    """The CA on disk is missing, unreadable or inconsistent (message says which)."""

    def __init__(self, message: str, *, code: str = "invalid") -> None:
        super().__init__(message)
        #: ``missing``, ``unreadable``, ``passphrase``, ``mismatch``, ``exists``, ``invalid``,
        #: or for the token: ``token`` (module or token unreachable), ``pin``, ``key``
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


def configured_ocsp_passphrase() -> bytes:
    """The responder key's own passphrase; the CA's when it is not set.

    Only workers sign OCSP responses (they are pre-signed), and workers hold the CA
    passphrase anyway; a separate one lets the responder key move without the CA's.
    """
    passphrase: str = settings.MYCERT_OCSP_KEY_PASSPHRASE
    return passphrase.encode() if passphrase else configured_passphrase()


def uses_token() -> bool:
    return bool(settings.MYCERT_CA_BACKEND == "pkcs11")


#: What MYCERT_ROOT_KEY_ONLINE means, said wherever it takes effect.
ROOT_ONLINE_MEANING = (
    "MYCERT_ROOT_KEY_ONLINE=true keeps the root key with the workers (their token, their "
    "CA folder, their passphrase): whoever compromises a worker can sign a new issuing CA "
    "that every relying service trusts. Use it for throwaway and test set-ups only."
)


def root_key_online() -> bool:
    """Whether the operator chose to keep the root key with the workers."""
    return bool(settings.MYCERT_ROOT_KEY_ONLINE)


def configured_root_key_path(paths: CaPaths) -> Path:
    """Where the root key file is (file backend): MYCERT_ROOT_KEY_FILE, or the CA folder."""
    configured: str = settings.MYCERT_ROOT_KEY_FILE
    return Path(configured) if configured else paths.root_key


def configured_root_passphrase() -> bytes:
    """The root key file's own passphrase; never the workers' MYCERT_CA_KEY_PASSPHRASE."""
    passphrase: str = settings.MYCERT_ROOT_KEY_PASSPHRASE
    if not passphrase:
        if root_key_online():
            return configured_passphrase()
        raise CaStoreError(
            "MYCERT_ROOT_KEY_PASSPHRASE is not set: the root key file is encrypted with its "
            "own passphrase, which workers never hold (or set MYCERT_ROOT_KEY_ONLINE=true "
            "to keep it under MYCERT_CA_KEY_PASSPHRASE, for test set-ups only).",
            code="passphrase",
        )
    if passphrase == settings.MYCERT_CA_KEY_PASSPHRASE and not root_key_online():
        raise CaStoreError(
            "MYCERT_ROOT_KEY_PASSPHRASE is the same as MYCERT_CA_KEY_PASSPHRASE, which every "
            "worker holds: give the root key a passphrase of its own.",
            code="passphrase",
        )
    return passphrase.encode()


def root_token_label() -> str:
    """The root's own token: MYCERT_PKCS11_ROOT_TOKEN_LABEL, never the workers' token."""
    root_label: str = settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL
    label: str = settings.MYCERT_PKCS11_TOKEN_LABEL
    if root_key_online():
        return root_label or label
    if not root_label:
        raise CaStoreError(
            "MYCERT_PKCS11_ROOT_TOKEN_LABEL is not set: the root key lives in a token of "
            "its own, kept offline, never in the workers' token (or set "
            "MYCERT_ROOT_KEY_ONLINE=true to keep it there, for test set-ups only).",
            code="token",
        )
    if root_label == label:
        raise CaStoreError(
            f"MYCERT_PKCS11_ROOT_TOKEN_LABEL is the workers' token {label!r}: the root key "
            "needs a token of its own, kept offline.",
            code="token",
        )
    return root_label


def weak_passphrases() -> list[str]:
    """Names of the configured key-file passphrases shorter than the production minimum."""
    if uses_token():
        return []
    weak = []
    for name in (
        "MYCERT_CA_KEY_PASSPHRASE",
        "MYCERT_OCSP_KEY_PASSPHRASE",
        "MYCERT_ROOT_KEY_PASSPHRASE",
    ):
        value: str = getattr(settings, name)
        if value and len(value) < MIN_PASSPHRASE_LENGTH:
            weak.append(name)
    return weak


_tokens: dict[tuple[str, str], Token] = {}
_tokens_lock = threading.Lock()

#: The token refused a login of this process (once per process and PIN; the process
#: then declines to log in with that PIN): ``token_label``, ``message`` (no secret).
token_pin_refused = Signal()
#: A token key was found after a login: whatever refused the PIN before is mended.
token_key_found = Signal()
# True in the probe's forked child: it shares the parent's database connection, so it
# sends no signal (whose receivers write to the database and the cache).
_quiet = False

#: CaStoreError codes after which the same work may succeed later with nothing changed
#: here: the token or its module out of reach, a PIN the operator is replacing, a file
#: briefly unreadable. Work that meets them is retried with back-off, not failed.
TEMPORARY_CODES = frozenset({"token", "pin", "unreadable"})


def is_temporary(exc: BaseException) -> bool:
    """Whether ``exc`` is a custody outage to wait out (HSM down, PIN being fixed)."""
    if isinstance(exc, CaStoreError):
        return exc.code in TEMPORARY_CODES
    if isinstance(exc, TokenError):
        return exc.code in {"module", "token", "session", "pin"}
    return False


def is_hsm_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the token, its module or the session is out of reach."""
    if isinstance(exc, CaStoreError):
        return exc.code == "token"
    if isinstance(exc, TokenError):
        return exc.code in {"module", "token", "session"}
    return False


def _pin_refused(label: str) -> Callable[[TokenError], None]:
    def notify(error: TokenError) -> None:
        if not _quiet:
            token_pin_refused.send_robust(sender=Token, token_label=label, message=str(error))

    return notify


def _configured_pin(*, root: bool = False) -> str:
    pin: str = settings.MYCERT_PKCS11_PIN
    pin_file: str = settings.MYCERT_PKCS11_PIN_FILE
    setting = "MYCERT_PKCS11_PIN_FILE"
    if root and settings.MYCERT_PKCS11_ROOT_PIN_FILE:
        # The root's own token has its own PIN, given at the ceremony only.
        pin_file, setting = settings.MYCERT_PKCS11_ROOT_PIN_FILE, "MYCERT_PKCS11_ROOT_PIN_FILE"
    if pin_file:
        try:
            # One line; the newline an editor adds is not part of the PIN.
            return Path(pin_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CaStoreError(
                f"{setting} {pin_file} cannot be read: {exc.strerror}.", code="pin"
            ) from exc
    if not pin:
        raise CaStoreError("MYCERT_PKCS11_PIN (or MYCERT_PKCS11_PIN_FILE) is not set.", code="pin")
    return pin


def configured_token(*, root: bool = False) -> Token:
    """The process's token (one session per process, opened on first use)."""
    module: str = settings.MYCERT_PKCS11_MODULE
    label: str = root_token_label() if root else settings.MYCERT_PKCS11_TOKEN_LABEL
    if not module or not label:
        raise CaStoreError(
            "MYCERT_CA_BACKEND=pkcs11 needs MYCERT_PKCS11_MODULE and MYCERT_PKCS11_TOKEN_LABEL.",
            code="token",
        )
    pin = _configured_pin(root=root)
    with _tokens_lock:
        token = _tokens.get((module, label))
        if token is None:
            token = Token(
                module=module,
                token_label=label,
                pin=pin,
                # The workers' token only: the root's is used at ceremonies, by a person
                # who sees the refusal, often on a host with no database.
                on_pin_refused=None if root else _pin_refused(label),
            )
            _tokens[(module, label)] = token
        elif token.pin != pin:
            # The PIN source changed: the next login (and only it) tries the new PIN.
            token.pin = pin
        return token


def close_tokens() -> None:
    """Close this process's PKCS#11 sessions (the next use opens them again)."""
    with _tokens_lock:
        tokens = list(_tokens.values())
    for token in tokens:
        token.close()


def forget_tokens() -> None:
    """Close the sessions and forget the tokens (settings changed: tests, ceremonies)."""
    close_tokens()
    with _tokens_lock:
        _tokens.clear()


def open_token_session() -> None:
    """Open this process's session now (Celery's ``worker_process_init``, after fork)."""
    if uses_token():
        try:
            configured_token().session()
        except (CaStoreError, TokenError):
            # The first task reports it with its context; a worker child must not die here.
            return


def _token_error(exc: TokenError, what: str) -> CaStoreError:
    code = {"module": "token", "token": "token", "session": "token", "pin": "pin"}.get(
        exc.code, "key"
    )
    return CaStoreError(f"The {what} key cannot be used: {exc}", code=code)


def _token_key(certificate: x509.Certificate, what: str, *, root: bool = False) -> PrivateKey:
    """The token key whose CKA_ID is ``certificate``'s SubjectKeyIdentifier."""
    try:
        key_id = key_id_for(certificate.public_key())  # type: ignore[arg-type]
        token = configured_token(root=root)
        key = token.private_key(key_id)
    except TokenError as exc:
        raise _token_error(exc, what) from exc
    if not _quiet:
        token_key_found.send_robust(sender=Token, token_label=token.token_label)
    return key


# --- URLs written into certificates (served by mycert.views.pki) -------------------------


def crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/issuing.crl"


def root_crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/root.crl"


def ocsp_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ocsp/"


def ca_issuers_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/issuing.cer"


def root_ca_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/root.cer"


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


def _write_public_replace(path: Path, data: bytes) -> None:
    """Replace a public file atomically (readers see the old or the new one, whole)."""
    tmp = path.with_suffix(path.suffix + ".new")
    tmp.unlink(missing_ok=True)
    _write_public(tmp, data)
    os.replace(tmp, path)


def _refuse_existing(paths: CaPaths, root_file: RootKeyFile | None = None) -> None:
    existing = [p.name for p in paths.all_files() if p.exists()]
    if root_file is not None and root_file.path.exists() and root_file.path != paths.root_key:
        existing.append(str(root_file.path))
    if existing:
        raise CaStoreError(
            f"{paths.directory} already holds a CA ({', '.join(existing)}); refusing to overwrite it.",
            code="exists",
        )


def current_root_crl_number(paths: CaPaths) -> int:
    """The cRLNumber of the root CRL on disk (0 when there is none)."""
    try:
        data = paths.root_crl.read_bytes()
    except FileNotFoundError:
        return 0
    try:
        crl = x509.load_der_x509_crl(data)
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise CaStoreError(f"The root CRL at {paths.root_crl} is unreadable: {exc}") from exc


def next_root_crl_number(previous: int, *, now: datetime) -> int:
    """The root CRL's next cRLNumber: above the previous one and at least Unix time.

    RFC 5280 §5.2.3 wants it to increase for as long as the root signs CRLs. Time keeps
    it increasing with no state at all: after `init_ca --import` of a root whose old
    CRLs are elsewhere, or a lost root.crl, the number still beats every earlier one.
    """
    return max(previous + 1, int(now.timestamp()))


def _sign_root_crl(
    root: CertificateAuthority,
    *,
    now: datetime,
    crl_number: int,
    entries: Sequence[RevokedEntry] = (),
) -> bytes:
    crl = build_crl(
        issuer=root,
        entries=entries,
        crl_number=crl_number,
        this_update=now,
        next_update=now + ROOT_CRL_VALIDITY,
    )
    return crl.public_bytes(serialization.Encoding.DER)


def load_root(*, root_key_path: Path | None = None) -> CertificateAuthority:
    """The root CA with its key: the offline ceremonies only (file or root token)."""
    paths = configured_paths()
    try:
        certificate = x509.load_pem_x509_certificate(_read(paths.root_cert, "root CA certificate"))
    except ValueError as exc:
        raise CaStoreError(
            f"The root CA certificate at {paths.root_cert} is not valid PEM."
        ) from exc
    if uses_token() and root_key_path is None:
        key = _token_key(certificate, "root CA", root=True)
    else:
        key = _load_key_file(
            root_key_path or configured_root_key_path(paths),
            configured_root_passphrase(),
            "root CA",
        )
    if not key_matches_certificate(key, certificate):
        raise CaStoreError(
            "The root CA private key does not match its certificate.", code="mismatch"
        )
    return CertificateAuthority(certificate, key)


def sign_root_crl(
    *,
    now: datetime,
    root_key_path: Path | None = None,
    revoke_issuing: tuple[int, x509.ReasonFlags] | None = None,
) -> int:
    """Re-sign root.crl with the next cRLNumber (RFC 5280 §5.2.3); return that number.

    The entries of the root CRL on disk are carried over (a revoked issuing CA stays
    revoked), ``revoke_issuing`` (serial, reason) adds one, and the root's own OCSP
    answers on the issuing CA certificates are signed again with the CRL's validity
    (``root-ocsp/``, served by the web's responder for whole-chain checking).
    """
    paths = configured_paths()
    root = load_root(root_key_path=root_key_path)
    entries = root_crl_entries(paths, root.certificate)
    if revoke_issuing is not None:
        serial, reason = revoke_issuing
        if not any(entry.serial_number == serial for entry in entries):
            # The moment of the ceremony: the root host knows no earlier compromise
            # time; RFC 5280 §5.3.2's invalidityDate is for that, not given here.
            entries.append(
                RevokedEntry(
                    serial_number=serial, revoked_at=now.replace(microsecond=0), reason=reason
                )
            )
    number = next_root_crl_number(current_root_crl_number(paths), now=now)
    _write_public_replace(
        paths.root_crl, _sign_root_crl(root, now=now, crl_number=number, entries=entries)
    )
    _write_root_ocsp(paths, root, entries=entries, now=now)
    clear_cache()
    return number


# --- The root's answers on the issuing CA (whole-chain OCSP) -----------------------------

ROOT_OCSP_DIRECTORY = "root-ocsp"


def root_ocsp_path(paths: CaPaths, serial_number: int, hash_name: str) -> Path:
    """Where the root's signed answer on one issuing CA certificate is kept (DER)."""
    return paths.directory / ROOT_OCSP_DIRECTORY / f"{serial_number:x}.{hash_name}.der"


def root_crl_entries(paths: CaPaths, root_certificate: x509.Certificate) -> list[RevokedEntry]:
    """The entries of the root CRL on disk, which must be the root's own (none if absent)."""
    try:
        data = paths.root_crl.read_bytes()
    except FileNotFoundError:
        return []
    try:
        crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CaStoreError(f"The root CRL at {paths.root_crl} is unreadable: {exc}") from exc
    if crl.issuer != root_certificate.subject or not crl.is_signature_valid(
        root_certificate.public_key()  # type: ignore[arg-type]
    ):
        # Carrying its entries over would let a forged file un-revoke an issuing CA.
        raise CaStoreError(f"The root CRL at {paths.root_crl} was not signed by this root.")
    return _crl_entries(crl)


def _crl_entries(crl: x509.CertificateRevocationList) -> list[RevokedEntry]:
    entries = []
    for revoked in crl:
        try:
            reason: x509.ReasonFlags | None = revoked.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            reason = None
        entries.append(
            RevokedEntry(
                serial_number=revoked.serial_number,
                revoked_at=revoked.revocation_date_utc,
                reason=reason,
            )
        )
    return entries


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


def _write_root_ocsp(
    paths: CaPaths, root: CertificateAuthority, *, entries: Sequence[RevokedEntry], now: datetime
) -> None:
    """Sign the root's answer on every issuing CA certificate, valid as long as its CRL."""
    revoked = {entry.serial_number: entry for entry in entries}
    serials = {c.serial_number for c in issuing_certificates(paths, root.certificate)}
    serials |= set(revoked)
    this_update = now.replace(microsecond=0)
    directory = paths.directory / ROOT_OCSP_DIRECTORY
    directory.mkdir(mode=0o755, exist_ok=True)
    written = set()
    for serial in sorted(serials):
        entry = revoked.get(serial)
        answer = (
            StatusAnswer(CertificateStatus.GOOD)
            if entry is None
            else StatusAnswer(
                CertificateStatus.REVOKED, revoked_at=entry.revoked_at, reason=entry.reason
            )
        )
        signed = sign_ca_status_responses(
            root=root,
            serial_number=serial,
            answer=answer,
            this_update=this_update,
            next_update=this_update + ROOT_CRL_VALIDITY,
        )
        for hash_name, der in signed.items():
            path = root_ocsp_path(paths, serial, hash_name)
            _write_public_replace(path, der)
            written.add(path)
    for stale in directory.glob("*.der"):
        if stale not in written:
            stale.unlink()


def renew_issuing_ca(*, now: datetime, root_key_path: Path | None = None) -> x509.Certificate:
    """Re-issue the issuing CA's certificate by the root, same key, current profile.

    This is how an existing CA gets CertificatePolicies and AIA caIssuers. The same key
    keeps every certificate already issued, every CRL and OCSP answer valid. Needs the
    root key and issuing.pem only: it runs on the offline root host.
    """
    paths = configured_paths()
    root = load_root(root_key_path=root_key_path)
    current = load_ca_certificates().issuing
    renewed = reissue_issuing_ca(
        root=root,
        current=current,
        now=now,
        crl_url=root_crl_url(),
        policy_oid=settings.MYCERT_CERT_POLICY_OID,
        ca_issuers_url=root_ca_url(),
    )
    # Keep the previous certificate beside it: relying parties may still send it.
    previous = paths.directory / f"issuing-{current.serial_number:x}.pem"
    if not previous.exists():
        _write_public(previous, _pem(current))
    _write_public_replace(paths.issuing_cert, _pem(renewed))
    # The renewed certificate's serial needs the root's answer too (whole-chain OCSP).
    _write_root_ocsp(paths, root, entries=root_crl_entries(paths, root.certificate), now=now)
    clear_cache()
    return renewed


def create_ca(
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
    :func:`configured_root_key_path`) under ``root_passphrase`` (default
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
        path=path or configured_root_key_path(paths),
        passphrase=passphrase if passphrase is not None else configured_root_passphrase(),
    )


def _generate_token_keys(key_type: KeyType) -> dict[str, PrivateKey | None]:
    """Generate the three CA keys in the token; refuse if any label is taken."""
    try:
        root_token = configured_token(root=True)
        token = configured_token()
        taken = (root_token.labels() & {ROOT_LABEL}) | (
            token.labels() & {ISSUING_LABEL, OCSP_LABEL}
        )
        if taken:
            raise CaStoreError(
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
            raise CaStoreError(str(exc), code="exists") from exc
        raise _token_error(exc, "CA") from exc


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
        raise CaStoreError(
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
    previous_number = 0
    previous_entries: list[RevokedEntry] = []
    if previous_root_crl_der is not None:
        try:
            previous = x509.load_der_x509_crl(previous_root_crl_der)
        except ValueError:
            try:
                previous = x509.load_pem_x509_crl(previous_root_crl_der)
            except ValueError as exc:
                raise CaStoreError("The previous root CRL is neither DER nor PEM.") from exc
        if previous.issuer != root_cert.subject or not previous.is_signature_valid(
            root_cert.public_key()  # type: ignore[arg-type]
        ):
            raise CaStoreError("The previous root CRL was not signed by the given root.")
        previous_number = int(
            previous.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        )
        # A revoked issuing CA stays revoked in the new folder's root CRL and OCSP answers.
        previous_entries = _crl_entries(previous)
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
    responder = _new_ocsp_responder(issuing, now=now, key=ocsp_key)
    if root_file is not None:
        ocsp_passphrase = configured_ocsp_passphrase()
        root_file.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(
            root_file.path, encrypt_private_key_pem(root.private_key, root_file.passphrase)
        )
        _write_private(paths.issuing_key, encrypt_private_key_pem(issuing.private_key, passphrase))
        _write_private(
            paths.ocsp_key, encrypt_private_key_pem(responder.private_key, ocsp_passphrase)
        )
    _write_public(paths.root_cert, _pem(root.certificate))
    _write_public(paths.issuing_cert, _pem(issuing.certificate))
    _write_public(paths.ocsp_cert, _pem(responder.certificate))
    # Time-based: never below a CRL this root signed before, also after --import.
    number = next_root_crl_number(previous_root_crl_number, now=now)
    _write_public(
        paths.root_crl,
        _sign_root_crl(root, now=now, crl_number=number, entries=previous_root_crl_entries),
    )
    _write_root_ocsp(paths, root, entries=previous_root_crl_entries, now=now)
    clear_cache()


def _new_ocsp_responder(
    issuing: CertificateAuthority, *, now: datetime, key: PrivateKey | None = None
) -> CertificateAuthority:
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
        key=key,
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
    forget_tokens()


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


def _load_key_file(key_path: Path, passphrase: bytes, what: str) -> PrivateKey:
    try:
        return load_private_key_pem(_read(key_path, f"{what} private key"), passphrase)
    except ValueError as exc:
        setting = {
            "OCSP responder": "MYCERT_OCSP_KEY_PASSPHRASE",
            "root CA": "MYCERT_ROOT_KEY_PASSPHRASE",
        }.get(what, "MYCERT_CA_KEY_PASSPHRASE")
        raise CaStoreError(
            f"The {what} private key at {key_path} cannot be opened: {exc} (is {setting} right?)",
            code="passphrase",
        ) from exc


def _load_pair(
    cert_path: Path, key_path: Path, passphrase: Callable[[], bytes], what: str
) -> CertificateAuthority:
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert_path, f"{what} certificate"))
    except ValueError as exc:
        raise CaStoreError(f"The {what} certificate at {cert_path} is not valid PEM.") from exc
    if uses_token():
        key = _token_key(certificate, what)
    else:
        key = _load_key_file(key_path, passphrase(), what)
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
    key = _cache_key(paths.issuing_cert if uses_token() else paths.issuing_key)
    with _lock:
        cached = _loaded.get(key)
        if isinstance(cached, LoadedCa):
            return cached
        issuing = _load_pair(
            paths.issuing_cert, paths.issuing_key, configured_passphrase, "issuing CA"
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
            paths.ocsp_cert, paths.ocsp_key, configured_ocsp_passphrase, "OCSP responder"
        )
        _loaded[key] = responder
        return responder


def renew_ocsp_responder_if_due(*, now: datetime, force: bool = False) -> bool:
    """Issue a fresh responder certificate when the current one nears its end.

    File backend: a new key, written with ``MYCERT_OCSP_KEY_PASSPHRASE``. Token backend:
    the same token key certified again (keys are created at ceremonies, not by beat).
    """
    paths = configured_paths()
    if not force:
        # The certificate alone says whether it is due (no key to open for that).
        current_certificate = x509.load_pem_x509_certificate(
            _read(paths.ocsp_cert, "OCSP responder certificate")
        )
        if current_certificate.not_valid_after_utc - now > OCSP_RESPONDER_RENEW_BEFORE:
            return False
    issuing = load_ca().issuing
    if uses_token():
        current = load_ocsp_responder()
        responder = _new_ocsp_responder(issuing, now=now, key=current.private_key)
        _write_public_replace(paths.ocsp_cert, _pem(responder.certificate))
        clear_cache()
        return True
    responder = _new_ocsp_responder(issuing, now=now)
    passphrase = configured_ocsp_passphrase()
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


# The responder certificate lives 30 days and beat renews it 10 days before its end, so
# a 30-day warning would always be on. Its warning means "automatic renewal is late":
# a day past the renewal point (beat tries every 6 hours).
OCSP_RESPONDER_WARNING = OCSP_RESPONDER_RENEW_BEFORE - timedelta(days=1)


@dataclass(frozen=True)
class Deadline:
    """Something a ceremony (or beat) must renew before it runs out."""

    name: str
    expires: datetime
    warn_before: timedelta = EXPIRY_WARNING

    def due(self, now: datetime) -> bool:
        """Whether the warning is on: the end is within ``warn_before``."""
        return self.expires - now <= self.warn_before


def ceremony_deadlines() -> list[Deadline]:
    """The root CRL's nextUpdate, the OCSP responder's and the issuing CA's notAfter.

    Public files only: a web host without any secret can report them.
    """
    paths = configured_paths()
    certificates = load_ca_certificates()
    responder = x509.load_pem_x509_certificate(_read(paths.ocsp_cert, "OCSP responder certificate"))
    deadlines = [
        Deadline("issuing_ca", certificates.issuing.not_valid_after_utc),
        Deadline("ocsp_responder", responder.not_valid_after_utc, OCSP_RESPONDER_WARNING),
    ]
    try:
        root_crl = x509.load_der_x509_crl(_read(paths.root_crl, "root CRL"))
    except ValueError as exc:
        raise CaStoreError(f"The root CRL at {paths.root_crl} is unreadable.") from exc
    if root_crl.next_update_utc is not None:
        deadlines.append(Deadline("root_crl", root_crl.next_update_utc))
    return deadlines


@dataclass(frozen=True)
class Probe:
    """What :func:`probe_ca` found besides working keys."""

    #: The workers' token holds the root key (CKA_ID of root.pem's key, or its label).
    root_key_in_token: bool = False


def _root_key_in_workers_token() -> bool:
    certificates = load_ca_certificates()
    key_id = key_id_for(certificates.root.public_key())  # type: ignore[arg-type]
    try:
        token = configured_token()
        return token.has_private_key(key_id) or ROOT_LABEL in token.labels()
    except TokenError as exc:
        raise _token_error(exc, "root CA") from exc


def root_key_files_online(paths: CaPaths) -> list[Path]:
    """Root key files this host can read: the CA folder's, MYCERT_ROOT_KEY_FILE's."""
    candidates = dict.fromkeys((paths.root_key, configured_root_key_path(paths)))
    return [path for path in candidates if path.exists()]


def probe_ca() -> Probe:
    """Open the CA keys to see that they work; raise :class:`CaStoreError` if not.

    With the token backend the probe runs in a forked child: checks also run in Celery's
    parent process before it forks its pool, and that parent must never initialise the
    PKCS#11 library (children would inherit its state, PKCS#11 v2.40 §6.7.6).
    """
    if not uses_token():
        load_ca()
        load_ocsp_responder()
        return Probe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: probe, report, exit without running the parent's cleanup
        global _quiet  # this process only probes, then exits
        _quiet = True
        status = 0
        try:
            os.close(read_end)
            try:
                load_ca()
                load_ocsp_responder()
                report: dict[str, object] = {
                    "ok": True,
                    "root_key_in_token": _root_key_in_workers_token(),
                }
            except CaStoreError as exc:
                report = {"ok": False, "code": exc.code, "message": str(exc)}
            os.write(write_end, json.dumps(report).encode())
            close_tokens()
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into Django
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        raise CaStoreError(
            f"The PKCS#11 probe process failed (exit status {os.waitstatus_to_exitcode(wait_status)}).",
            code="token",
        ) from None
    if not report["ok"]:
        raise CaStoreError(str(report["message"]), code=str(report["code"]))
    return Probe(root_key_in_token=bool(report["root_key_in_token"]))


def _worker_process_init(**kwargs: object) -> None:
    open_token_session()


def connect_worker_signals() -> None:
    """Open the PKCS#11 session in each Celery prefork child, after the fork."""
    from celery import signals

    signals.worker_process_init.connect(_worker_process_init, weak=False)
