"""Seal the outbox's secret payloads (keystore, password) at rest.

They wait in the database only until their e-mail is accepted, then are wiped
(ETSI EN 319 411-1, DESIGN.md §4). Fernet (AES-128-CBC + HMAC-SHA256) with a key from
``MYCERT_OUTBOX_KEY``, or derived from ``DJANGO_SECRET_KEY`` with HKDF when unset.
"""

from __future__ import annotations

import base64
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["SealError", "seal", "unseal"]


class SealError(Exception):
    """A sealed payload could not be opened (wrong key or altered data)."""


@cache
def _fernet(configured_key: str, secret_key: str) -> Fernet:
    if configured_key:
        return Fernet(configured_key.encode())
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mycert outbox seal v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
    return _fernet(settings.MYCERT_OUTBOX_KEY, settings.SECRET_KEY)


def seal(payload: bytes) -> bytes:
    """Encrypt and authenticate ``payload`` for storage."""
    return _current().encrypt(payload)


def unseal(token: bytes) -> bytes:
    """Open a sealed payload; raise ``SealError`` if it cannot be trusted."""
    try:
        return _current().decrypt(bytes(token))
    except InvalidToken as exc:
        raise SealError("The sealed payload cannot be opened with the configured key.") from exc
