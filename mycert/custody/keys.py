"""Who holds the CA keys: passphrases, the offline root, the PKCS#11 token.

With key files, each key has its passphrase (``MYCERT_CA_KEY_PASSPHRASE``,
``MYCERT_OCSP_KEY_PASSPHRASE``, the root's own ``MYCERT_ROOT_KEY_PASSPHRASE``). With a
token, each process keeps one session per token, opened on first use (after the fork in
a Celery child), and a certificate finds its key by CKA_ID = its SubjectKeyIdentifier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.dispatch import Signal

from mycert.custody.errors import CustodyError
from mycert.pki import PrivateKey
from mycert.pki.token import Token, TokenError, key_id_for

__all__ = [
    "ISSUING_LABEL",
    "MIN_PASSPHRASE_LENGTH",
    "OCSP_LABEL",
    "ROOT_LABEL",
    "ROOT_ONLINE_MEANING",
    "ca_passphrase",
    "ca_token",
    "ocsp_passphrase",
    "root_file_passphrase",
    "root_key_online",
    "root_token_label",
    "token_failure",
    "token_key",
    "token_key_found",
    "token_pin_refused",
    "token_session_open",
    "token_signals_mute",
    "tokens_close",
    "tokens_forget",
    "uses_token",
    "weak_passphrases",
    "worker_signals_connect",
]

# Passphrases of CA key files in production (DEBUG off): at least this long.
MIN_PASSPHRASE_LENGTH = 20

ROOT_LABEL = "mycert-root"
ISSUING_LABEL = "mycert-issuing"
OCSP_LABEL = "mycert-ocsp"


def ca_passphrase() -> bytes:
    passphrase: str = settings.MYCERT_CA_KEY_PASSPHRASE
    if not passphrase:
        raise CustodyError("MYCERT_CA_KEY_PASSPHRASE is not set.", code="passphrase")
    return passphrase.encode()


def ocsp_passphrase() -> bytes:
    """The responder key's own passphrase; the CA's when it is not set.

    Only workers sign OCSP responses (they are pre-signed), and workers hold the CA
    passphrase anyway; a separate one lets the responder key move without the CA's.
    """
    passphrase: str = settings.MYCERT_OCSP_KEY_PASSPHRASE
    return passphrase.encode() if passphrase else ca_passphrase()


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


def root_file_passphrase() -> bytes:
    """The root key file's own passphrase; never the workers' MYCERT_CA_KEY_PASSPHRASE."""
    passphrase: str = settings.MYCERT_ROOT_KEY_PASSPHRASE
    if not passphrase:
        if root_key_online():
            return ca_passphrase()
        raise CustodyError(
            "MYCERT_ROOT_KEY_PASSPHRASE is not set: the root key file is encrypted with its "
            "own passphrase, which workers never hold (or set MYCERT_ROOT_KEY_ONLINE=true "
            "to keep it under MYCERT_CA_KEY_PASSPHRASE, for test set-ups only).",
            code="passphrase",
        )
    if passphrase == settings.MYCERT_CA_KEY_PASSPHRASE and not root_key_online():
        raise CustodyError(
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
        raise CustodyError(
            "MYCERT_PKCS11_ROOT_TOKEN_LABEL is not set: the root key lives in a token of "
            "its own, kept offline, never in the workers' token (or set "
            "MYCERT_ROOT_KEY_ONLINE=true to keep it there, for test set-ups only).",
            code="token",
        )
    if root_label == label:
        raise CustodyError(
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


def token_signals_mute() -> None:
    """Send no token signal from this process (the probe's forked child, see above)."""
    global _quiet  # one flag for the whole process, set once before the child exits
    _quiet = True


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
            raise CustodyError(
                f"{setting} {pin_file} cannot be read: {exc.strerror}.", code="pin"
            ) from exc
    if not pin:
        raise CustodyError("MYCERT_PKCS11_PIN (or MYCERT_PKCS11_PIN_FILE) is not set.", code="pin")
    return pin


def ca_token(*, root: bool = False) -> Token:
    """The process's token (one session per process, opened on first use)."""
    module: str = settings.MYCERT_PKCS11_MODULE
    label: str = root_token_label() if root else settings.MYCERT_PKCS11_TOKEN_LABEL
    if not module or not label:
        raise CustodyError(
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


def tokens_close() -> None:
    """Close this process's PKCS#11 sessions (the next use opens them again)."""
    with _tokens_lock:
        tokens = list(_tokens.values())
    for token in tokens:
        token.close()


def tokens_forget() -> None:
    """Close the sessions and forget the tokens (settings changed: tests, ceremonies)."""
    tokens_close()
    with _tokens_lock:
        _tokens.clear()


def token_session_open() -> None:
    """Open this process's session now (Celery's ``worker_process_init``, after fork)."""
    if uses_token():
        try:
            ca_token().session()
        except (CustodyError, TokenError):
            # The first task reports it with its context; a worker child must not die here.
            return


def token_failure(exc: TokenError, what: str) -> CustodyError:
    code = {"module": "token", "token": "token", "session": "token", "pin": "pin"}.get(
        exc.code, "key"
    )
    return CustodyError(f"The {what} key cannot be used: {exc}", code=code)


def token_key(certificate: x509.Certificate, what: str, *, root: bool = False) -> PrivateKey:
    """The token key whose CKA_ID is ``certificate``'s SubjectKeyIdentifier."""
    try:
        key_id = key_id_for(certificate.public_key())  # type: ignore[arg-type]
        token = ca_token(root=root)
        key = token.private_key(key_id)
    except TokenError as exc:
        raise token_failure(exc, what) from exc
    if not _quiet:
        token_key_found.send_robust(sender=Token, token_label=token.token_label)
    return key


def _worker_process_init(**kwargs: object) -> None:
    token_session_open()


def worker_signals_connect() -> None:
    """Open the PKCS#11 session in each Celery prefork child, after the fork."""
    from celery import signals

    signals.worker_process_init.connect(_worker_process_init, weak=False)
