"""Seal the outbox's secret payloads (keystore, password) at rest.

They wait in the database only until their e-mail is accepted, then are wiped
(ETSI EN 319 411-1, DESIGN.md §4). Fernet (AES-128-CBC + HMAC-SHA256) with the key in
``MYCERT_OUTBOX_KEY``, which only workers hold (DESIGN.md §8): web hosts neither seal
nor unseal (issuance and sending run on workers), so they start and serve without it.

Outside ``DJANGO_DEBUG`` the key is required at first use; it is never derived from
``DJANGO_SECRET_KEY``, which every web host holds. In debug (``make run``, tests) a key
is derived from the secret key with HKDF when none is set.
"""

from __future__ import annotations

import base64
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["ADDRESS_MISMATCH", "SealError", "outbox_key_problem", "seal", "unseal"]

#: In the error of a payload opened for another address than it was sealed for: the
#: delivery's row was rewritten, which the security officer must hear of.
ADDRESS_MISMATCH = "sealed for another address"


class SealError(Exception):
    """A sealed payload could not be opened (wrong key or altered data)."""


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
    try:
        Fernet(configured_key.encode())
    except ValueError:
        return "MYCERT_OUTBOX_KEY is not a Fernet key (32 bytes, URL-safe base64)."
    return None


@cache
def _fernet(configured_key: str, secret_key: str, debug: bool) -> Fernet:
    problem = outbox_key_problem(configured_key, debug=debug)
    if problem:
        raise ImproperlyConfigured(problem)
    if configured_key:
        return Fernet(configured_key.encode())
    # Debug only: a web host holds DJANGO_SECRET_KEY, so this key would be no secret.
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mycert outbox seal v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
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
        raise SealError("The sealed payload cannot be opened with the configured key.") from exc
    if not plain.startswith(_ADDRESSED):
        return plain
    address, _, payload = plain[len(_ADDRESSED) :].partition(b"\n")
    if recipient is not None and address != recipient.strip().lower().encode():
        raise SealError(f"The payload was {ADDRESS_MISMATCH} than this row's.")
    return payload
