"""OpenPGP through GnuPG (python-gnupg): check a vendor's public key, encrypt to it.

The only module that imports ``gnupg`` (DESIGN.md §7: depend on ``python-gnupg``, never
on the unrelated PyPI package of the same import name). :class:`OpenPgp` reads no Django
setting: the caller passes the GnuPG home, the binary and the time. :func:`openpgp` is
the one place that reads them (``MYCERT_GNUPG_HOME``, ``MYCERT_GPG_BINARY``), for the
vendor service and the outbox alike.

Trust: a vendor's key is checked when it is registered and its fingerprint pinned; mail
is then encrypted with ``--trust-model always`` to exactly that fingerprint. The pin,
not GnuPG's web of trust, is what authenticates the key; expired or revoked keys are
refused whatever the trust.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import gnupg
from django.conf import settings

__all__ = ["KeyInfo", "OpenPgp", "OpenPgpError", "normalize_fingerprint", "openpgp"]

# gpg-agent's sockets live in the home when /run/user/<uid> is missing; a Unix socket
# path holds at most 107 bytes and the longest name is "S.gpg-agent.browser".
MAX_HOME_LENGTH = 107 - len("/S.gpg-agent.browser")

_PUBLIC_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PRIVATE_BLOCK = "PRIVATE KEY BLOCK-----"
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # v4 (SHA-1) and v5/v6 keys
# Validity letters (GnuPG doc/DETAILS, field 2) that make a (sub)key unusable:
# e expired, r revoked, d disabled, i invalid.
_UNUSABLE = frozenset("erdi")


class OpenPgpError(Exception):
    """GnuPG refused to encrypt, or the pinned key is no longer usable."""


@dataclass(frozen=True)
class KeyInfo:
    """What MyCert records about a vendor's OpenPGP public key."""

    fingerprint: str
    uids: tuple[str, ...]
    expires_at: datetime | None
    can_encrypt: bool


def normalize_fingerprint(value: str) -> str:
    """Upper-case hex without spaces; raise ``ValueError`` if it is not a fingerprint."""
    fingerprint = re.sub(r"\s+", "", value).upper()
    if fingerprint.startswith("0X"):
        fingerprint = fingerprint[2:]
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"{value!r} is not a full OpenPGP fingerprint (40 or 64 hex digits).")
    return fingerprint


def _timestamp(value: str | None) -> datetime | None:
    if not value or not value.isdigit():
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


def _usable(fields: Mapping[str, Any], now: datetime) -> bool:
    if str(fields.get("trust") or "") in _UNUSABLE:
        return False
    expires = _timestamp(fields.get("expires"))
    return expires is None or expires > now


def _own_capabilities(cap: str, *, primary: bool) -> str:
    # On the primary key, lower-case letters are its own capabilities and upper-case
    # letters summarise the whole key; count only the primary's own.
    return "".join(c for c in cap if c.islower()) if primary else cap.lower()


def _key_info(key: Mapping[str, Any], now: datetime) -> KeyInfo:
    """Describe one key as listed by GnuPG (``--with-colons``)."""
    fingerprint = str(key.get("fingerprint") or "").upper()
    candidates: list[tuple[str, Mapping[str, Any]]] = [
        (_own_capabilities(str(key.get("cap") or ""), primary=True), key)
    ]
    candidates.extend(
        (_own_capabilities(str(info.get("cap") or ""), primary=False), info)
        for info in (key.get("subkey_info") or {}).values()
    )
    primary_usable = _usable(key, now)
    can_encrypt = primary_usable and any(
        "e" in cap and _usable(fields, now) for cap, fields in candidates
    )
    return KeyInfo(
        fingerprint=fingerprint,
        uids=tuple(str(uid) for uid in key.get("uids") or ()),
        expires_at=_timestamp(key.get("expires")),
        can_encrypt=can_encrypt,
    )


class OpenPgp:
    """A GnuPG home used to check public keys and to encrypt mail to pinned keys."""

    def __init__(self, home: str | Path, *, binary: str = "gpg") -> None:
        home = Path(home)
        if len(str(home.absolute())) > MAX_HOME_LENGTH:
            raise ValueError(
                f"The GnuPG home {str(home)!r} is too long ({len(str(home.absolute()))} characters, "
                f"at most {MAX_HOME_LENGTH}): gpg-agent cannot create its sockets there. "
                "Use a shorter MYCERT_GNUPG_HOME."
            )
        # GnuPG warns about (and some versions refuse) a home others can read.
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home
        self._gpg = gnupg.GPG(gnupghome=str(home), gpgbinary=binary)
        self._gpg.encoding = "utf-8"
        # Pinned keys already imported from a given key text, as GnuPG listed them then.
        self._imported: dict[tuple[str, str], Mapping[str, Any]] = {}

    # --- Checking a key on entry -----------------------------------------------------

    def inspect_public_key(self, armored: str, *, now: datetime) -> KeyInfo:
        """Describe one usable ASCII-armored public key; ``ValueError`` says why not."""
        key = self._scan_one(armored)
        info = _key_info(key, now)
        self._refuse_unusable(key, info, now)
        return info

    def _scan_one(self, armored: str) -> Mapping[str, Any]:
        """List exactly one public key from armored text without importing it."""
        if not isinstance(armored, str):
            raise TypeError("The OpenPGP key must be given as ASCII-armored text.")
        text = armored.strip()
        if _PRIVATE_BLOCK in text:
            raise ValueError(
                "This is a private (secret) key. Send only the public key "
                "(gpg --armor --export FINGERPRINT); the private key must never leave its owner."
            )
        blocks = text.count(_PUBLIC_BLOCK)
        if blocks == 0:
            raise ValueError(
                f"This is not an ASCII-armored OpenPGP public key (it must start with {_PUBLIC_BLOCK})."
            )
        if blocks > 1:
            raise ValueError(f"The text holds {blocks} key blocks; give exactly one public key.")
        # A dry-run import lists the key without adding it to the keyring.
        scanned: Sequence[Mapping[str, Any]] = self._gpg.scan_keys_mem(text)
        if not scanned:
            raise ValueError("GnuPG found no valid OpenPGP public key in this text.")
        if len(scanned) > 1:
            raise ValueError(f"The key block holds {len(scanned)} keys; give exactly one.")
        key = scanned[0]
        if key.get("type") != "pub":
            raise ValueError("This is a private (secret) key. Send only the public key.")
        if not key.get("fingerprint"):
            raise ValueError("GnuPG could not read the key's fingerprint.")
        return key

    @staticmethod
    def _refuse_unusable(key: Mapping[str, Any], info: KeyInfo, now: datetime) -> None:
        validity = str(key.get("trust") or "")
        if validity == "r":
            raise ValueError(f"The key {info.fingerprint} has been revoked by its owner.")
        if validity in ("d", "i"):
            raise ValueError(f"The key {info.fingerprint} is disabled or invalid.")
        if validity == "e" or (info.expires_at is not None and info.expires_at <= now):
            when = f" on {info.expires_at:%Y-%m-%d}" if info.expires_at else ""
            raise ValueError(f"The key {info.fingerprint} expired{when}; ask for a current key.")
        if not info.can_encrypt:
            raise ValueError(
                f"The key {info.fingerprint} has no valid (sub)key for encryption "
                "(a signing-only key cannot receive encrypted mail)."
            )

    # --- Encrypting --------------------------------------------------------------------

    def key_in_keyring(self, fingerprint: str, *, now: datetime) -> KeyInfo | None:
        """The pinned key as the keyring holds it now, or ``None``."""
        fingerprint = normalize_fingerprint(fingerprint)
        keys: Sequence[Mapping[str, Any]] = self._gpg.list_keys(keys=[fingerprint])
        for key in keys:
            info = _key_info(key, now)
            if info.fingerprint == fingerprint:
                return info
        return None

    def _pinned_key(self, pinned: str, armored_key: str | None) -> Mapping[str, Any]:
        """The keyring's listing of the pinned key, after importing the key on file.

        Importing, scanning and listing are three gpg processes: done once per key text
        in this process, not for every e-mail. A changed key text (a new expiry, a
        revocation, another key) is a new entry and is imported again. Expiry is checked
        by the caller against ``now`` each time, and gpg refuses an unusable key anyway.
        """
        cache_key = (
            (pinned, hashlib.sha256(armored_key.encode()).hexdigest()) if armored_key else None
        )
        if cache_key is not None and (cached := self._imported.get(cache_key)) is not None:
            return cached
        if armored_key:
            # (Re)import the key on file when it is the pinned one: GnuPG merges new
            # self-signatures (an extended expiry) and revocations into its copy.
            try:
                offered = str(self._scan_one(armored_key).get("fingerprint") or "").upper()
            except ValueError as exc:
                raise OpenPgpError(str(exc)) from exc
            if offered != pinned:
                raise OpenPgpError(
                    f"The key on file has fingerprint {offered}, not the pinned {pinned}."
                )
            result = self._gpg.import_keys(armored_key)
            if pinned not in {str(f).upper() for f in result.fingerprints}:
                raise OpenPgpError(f"GnuPG did not import the key {pinned}.")
        keys: Sequence[Mapping[str, Any]] = self._gpg.list_keys(keys=[pinned])
        if not keys:
            raise OpenPgpError(f"The key {pinned} is not in the keyring.")
        # list-keys also matches a subkey's fingerprint: insist on the primary being the pin.
        matching = [k for k in keys if str(k.get("fingerprint") or "").upper() == pinned]
        if len(matching) != 1:
            raise OpenPgpError(f"The keyring holds no key whose fingerprint is exactly {pinned}.")
        key = matching[0]
        if cache_key is not None:
            if len(self._imported) >= 64:
                self._imported.clear()
            self._imported[cache_key] = key
        return key

    def encrypt(
        self, data: bytes, fingerprint: str, *, now: datetime, armored_key: str | None = None
    ) -> bytes:
        """Encrypt ``data`` to exactly the pinned key; return ASCII-armored bytes.

        ``armored_key`` (the key on file) is imported first; without it the keyring
        must already hold the pinned key.
        """
        pinned = normalize_fingerprint(fingerprint)
        key = self._pinned_key(pinned, armored_key)
        try:
            self._refuse_unusable(key, _key_info(key, now), now)
        except ValueError as exc:
            raise OpenPgpError(str(exc)) from exc
        encrypted = self._gpg.encrypt(
            data,
            [pinned],
            always_trust=True,  # the pinned fingerprint authenticates the key
            armor=True,
            # Exactly this recipient: no encrypt-to/default-recipient from gpg.conf.
            extra_args=["--no-encrypt-to"],
        )
        if not encrypted.ok:
            raise OpenPgpError(f"GnuPG could not encrypt to {pinned}: {encrypted.status}.")
        armored: bytes = encrypted.data
        return armored


@cache
def _openpgp(home: str, binary: str) -> OpenPgp:
    return OpenPgp(home, binary=binary)


def openpgp() -> OpenPgp:
    """MyCert's GnuPG home (``MYCERT_GNUPG_HOME``), one wrapper per process and home."""
    return _openpgp(str(settings.MYCERT_GNUPG_HOME), settings.MYCERT_GPG_BINARY)
