"""Seal the outbox's secret payloads (keystore, password) at rest.

They wait in the database only until their e-mail is accepted, then are wiped
(ETSI EN 319 411-1, docs/architecture.md « Delivery: the outbox »). Fernet (AES-128-CBC +
HMAC-SHA256) with the key in
``MYCERT_OUTBOX_KEY``, which only workers hold (docs/architecture.md « Hosts and trust boundaries
»): web hosts neither seal
nor unseal (issuance and sending run on workers), so they start and serve without it.

Outside ``DJANGO_DEBUG`` the key is required at first use; it is never derived from
``DJANGO_SECRET_KEY``, which every web host holds. In debug (``make run``, tests) a key
is derived from the secret key with HKDF when none is set.

``MYCERT_OUTBOX_KEY`` may list several keys, separated by commas, to rotate the key with
mail pending: the first seals, any opens (Fernet's ``MultiFernet``); ``reseal`` moves a
payload to the first key (``manage.py reseal_outbox``, docs/deploy.md).
"""

from __future__ import annotations

import base64
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "ADDRESS_MISMATCH",
    "SealError",
    "outbox_key_problem",
    "outbox_keys",
    "reseal",
    "seal",
    "unseal",
]

#: In the error of a payload opened for another address than it was sealed for: the
#: delivery's row was rewritten, which the security officer must hear of.
ADDRESS_MISMATCH = "sealed for another address"


class SealError(Exception):
    """A sealed payload could not be opened (wrong key or altered data)."""


def outbox_keys(configured_key: str) -> list[str]:
    """The keys listed in MYCERT_OUTBOX_KEY, first (the sealing key) first."""
    return [key.strip() for key in configured_key.split(",") if key.strip()]


def outbox_key_problem(configured_key: str, *, debug: bool) -> str | None:
    """What is wrong with the configured outbox key for this mode (None: nothing)."""
    if not configured_key:
        if debug:
            return None
        return (
            "MYCERT_OUTBOX_KEY is not set: workers need it to seal keystores and passwords "
            "(generate one with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`; web hosts do not need it)."
        )
    keys = outbox_keys(configured_key)
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            which = "" if len(keys) == 1 else f"'s key n° {position}"
            return (
                f"MYCERT_OUTBOX_KEY{which} is not a Fernet key (32 bytes, URL-safe base64; "
                "several keys are separated by commas)."
            )
    if len(set(keys)) != len(keys):
        return "MYCERT_OUTBOX_KEY lists the same key twice."
    return None


@cache
def _fernet(configured_key: str, secret_key: str, debug: bool) -> MultiFernet:
    problem = outbox_key_problem(configured_key, debug=debug)
    if problem:
        raise ImproperlyConfigured(problem)
    if configured_key:
        return MultiFernet([Fernet(key.encode()) for key in outbox_keys(configured_key)])
    # Debug only: a web host holds DJANGO_SECRET_KEY, so this key would be no secret.
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mycert outbox seal v1"
    ).derive(secret_key.encode())
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def _current() -> MultiFernet:
    return _fernet(settings.MYCERT_OUTBOX_KEY, settings.SECRET_KEY, settings.DEBUG)


#: Marks a payload sealed for one address: the address is inside the authenticated
#: plaintext, so a database writer who rewrites the row's ``to_email`` (or copies the
#: sealed bytes into another row) gets an e-mail that the worker refuses to send
#: (issue 20: where a keystore goes is never decided by a row alone).
_ADDRESSED = b"mycert-to:v1\n"


def seal(payload: bytes, *, recipient: str = "") -> bytes:
    """Encrypt and authenticate ``payload`` for storage, bound to ``recipient`` if given."""
    if recipient:
        payload = _ADDRESSED + recipient.strip().lower().encode() + b"\n" + payload
    return _current().encrypt(payload)


def unseal(token: bytes, *, recipient: str | None = None) -> bytes:
    """Open a sealed payload; raise ``SealError`` if it cannot be trusted.

    With ``recipient``, a payload sealed for another address is refused. A payload
    sealed without an address (before issue 20) opens for any: such rows are sent or
    wiped within ``MYCERT_FAILED_PAYLOAD_DAYS`` of the upgrade.
    """
    try:
        plain = _current().decrypt(bytes(token))
    except InvalidToken as exc:
        raise SealError(
            "The sealed payload cannot be opened with any key in MYCERT_OUTBOX_KEY."
        ) from exc
    if not plain.startswith(_ADDRESSED):
        return plain
    address, _, payload = plain[len(_ADDRESSED) :].partition(b"\n")
    if recipient is not None and address != recipient.strip().lower().encode():
        raise SealError(f"The payload was {ADDRESS_MISMATCH} than this row's.")
    return payload


def reseal(token: bytes) -> bytes:
    """Seal a payload again with the first key (a rotation); raise ``SealError`` if none opens it.

    Fernet's rotation keeps the plaintext as it is, the address it was sealed for included.
    """
    try:
        return _current().rotate(bytes(token))
    except InvalidToken as exc:
        raise SealError(
            "The sealed payload cannot be opened with any key in MYCERT_OUTBOX_KEY."
        ) from exc
