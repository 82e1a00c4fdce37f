"""A certificate's revocation code: what its holder types to revoke it without logging in.

The code travels once, inside the professional's password e-mail; MyCert keeps only a
slow hash of it (``mycert.services.revocation_codes``). It is drawn from the keystore
password's alphabet (no look-alikes) but grouped by five, not by four, so that it is
never mistaken for the password it is sent with: 25 symbols, about 145 bits.
"""

from __future__ import annotations

import math
import re
import secrets

from mycert.pki.pkcs12 import KEYSTORE_PASSWORD_ALPHABET

__all__ = [
    "REVOCATION_CODE_ENTROPY_BITS",
    "canonical_revocation_code",
    "generate_revocation_code",
]

_GROUP_LENGTH = 5
_GROUPS = 5
_LENGTH = _GROUP_LENGTH * _GROUPS
# 25 x log2(56) = 145 bits: no rate limit or hash speed is needed to keep it unguessable;
# both are defence in depth.
REVOCATION_CODE_ENTROPY_BITS = math.floor(_LENGTH * math.log2(len(KEYSTORE_PASSWORD_ALPHABET)))

# What people put between the groups when they copy or type a code: the hyphen, the
# dashes a word processor or a mail client turns it into, spaces of every width.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212_.]+")


def _grouped(symbols: str) -> str:
    return "-".join(
        symbols[start : start + _GROUP_LENGTH] for start in range(0, _LENGTH, _GROUP_LENGTH)
    )


def generate_revocation_code() -> str:
    """Return a fresh random revocation code, e.g. ``7Kq4x-V9mPa-…`` (145 bits)."""
    return _grouped("".join(secrets.choice(KEYSTORE_PASSWORD_ALPHABET) for _ in range(_LENGTH)))


def canonical_revocation_code(text: str) -> str | None:
    """The code as generated (``XXXXX-XXXXX-…``) from what a person typed, or None.

    Separators and surrounding blanks are forgiven; letter case is not (it carries the
    code's entropy). None when ``text`` cannot be a code: wrong length or a symbol the
    alphabet does not have.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    symbols = _SEPARATORS.sub("", text)
    if len(symbols) != _LENGTH or any(c not in KEYSTORE_PASSWORD_ALPHABET for c in symbols):
        return None
    return _grouped(symbols)
