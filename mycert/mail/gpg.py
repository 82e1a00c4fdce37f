"""OpenPGP through GnuPG (python-gnupg): check a vendor's public key, encrypt to it.

The only module that imports ``gnupg`` (docs/architecture.md « Known pitfalls »: depend on
``python-gnupg``, never
on the unrelated PyPI package of the same import name). :class:`OpenPgp` reads no Django
setting: the caller passes the GnuPG home, the binary and the time. :func:`openpgp` is
the one place that reads them (``MYCERT_GNUPG_HOME``, ``MYCERT_GPG_BINARY``), for the
vendor service and the outbox alike.

Trust: a vendor's key is checked when it is registered and its fingerprint pinned; mail
is then encrypted with ``--trust-model always`` to exactly that fingerprint. The pin,
not GnuPG's web of trust, is what authenticates the key; expired or revoked keys are
refused whatever the trust.

The keyring is the workers' own (issue 20 §3): a key enters it only through
:meth:`OpenPgp.import_public_key`, called by ``add_vendor`` and ``confirm_vendor`` on a
worker host, never from a key text read from the database at send time. A database
writer can put any key in a vendor's row; :meth:`OpenPgp.encrypt` encrypts only to a
fingerprint this keyring already holds (``mycert.mail.anchor`` says which vendor it
belongs to).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
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
    #: The e-mail addresses of the key's user IDs that are neither revoked nor expired,
    #: lower-cased: the only addresses mail encrypted to this key may be sent to.
    addresses: tuple[str, ...] = ()

    def carries(self, address: str) -> bool:
        """Whether ``address`` is the address of one of the key's valid user IDs."""
        return address.strip().lower() in self.addresses


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


def _addresses(uids: Sequence[str], uid_map: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The addresses of the usable user IDs (GnuPG doc/DETAILS: a uid's validity, field 2)."""
    found: list[str] = []
    for uid in uids:
        if str((uid_map.get(uid) or {}).get("trust") or "") in _UNUSABLE:
            continue
        address = parseaddr(uid)[1].strip().lower()
        if "@" in address and address not in found:
            found.append(address)
    return tuple(found)


def _key_info(
    key: Mapping[str, Any], now: datetime, uid_map: Mapping[str, Mapping[str, Any]] | None = None
) -> KeyInfo:
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
    uids = tuple(str(uid) for uid in key.get("uids") or ())
    return KeyInfo(
        fingerprint=fingerprint,
        uids=uids,
        expires_at=_timestamp(key.get("expires")),
        can_encrypt=can_encrypt,
        addresses=_addresses(uids, uid_map or {}),
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
        # Keys as GnuPG listed them, per fingerprint, while the keyring file is unchanged:
        # one ``gpg --list-keys`` per key and keyring version, not one per e-mail.
        self._listed: dict[tuple[str, tuple[int, int, int]], tuple[Mapping[str, Any], ...]] = {}
        self._listed_uids: dict[tuple[str, tuple[int, int, int]], Mapping[str, Any]] = {}

    # --- Checking a key on entry -----------------------------------------------------

    def inspect_public_key(self, armored: str, *, now: datetime) -> KeyInfo:
        """Describe one usable ASCII-armored public key; ``ValueError`` says why not."""
        key = self._scan_one(armored)
        info = _key_info(key, now, key["_uid_map"])
        self._refuse_unusable(key, info, now)
        return info

    # --- The workers' keyring ----------------------------------------------------------

    def import_public_key(self, armored: str, *, now: datetime) -> KeyInfo:
        """Add a usable public key to this keyring (or merge it into the copy it holds).

        Only ``add_vendor`` and ``confirm_vendor`` call this, on a worker host, after a
        person compared the fingerprint: it is how a key becomes one mail may be
        encrypted to. ``ValueError`` says why a key is refused; nothing is imported then.
        """
        offered = self.inspect_public_key(armored, now=now)
        result = self._gpg.import_keys(armored.strip())
        if offered.fingerprint not in {str(f).upper() for f in result.fingerprints}:
            raise ValueError(f"GnuPG did not import the key {offered.fingerprint}.")
        info = self.key_in_keyring(offered.fingerprint, now=now)
        if info is None:  # pragma: no cover - imported a moment ago
            raise ValueError(f"The key {offered.fingerprint} is not in the keyring after import.")
        # The keyring's copy may carry what the offered text lacks (a revocation imported
        # earlier): judge the merged key.
        key, _ = self._listing(offered.fingerprint)
        if key is not None:
            self._refuse_unusable(key, info, now)
        return info

    def remove_public_key(self, fingerprint: str) -> bool:
        """Remove a key from this keyring; whether it was there."""
        fingerprint = normalize_fingerprint(fingerprint)
        if self._listing(fingerprint)[0] is None:
            return False
        result = self._gpg.delete_keys(fingerprint)
        if str(result.status).strip() != "ok":
            raise ValueError(f"GnuPG did not remove the key {fingerprint}: {result.status}.")
        return True

    def _keyring_version(self) -> tuple[int, int, int]:
        """Identify the keyring file's current content (GnuPG replaces it on every change)."""
        for name in ("pubring.kbx", "pubring.gpg"):
            try:
                stat = (self.home / name).stat()
            except FileNotFoundError:
                continue
            return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return (0, 0, 0)

    def _listing(self, fingerprint: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
        """The keyring's key whose primary fingerprint is exactly ``fingerprint``, and its
        user IDs' validity; ``(None, {})`` when it holds none."""
        cache_key = (fingerprint, self._keyring_version())
        listed = self._listed.get(cache_key)
        if listed is None:
            keys = self._gpg.list_keys(keys=[fingerprint])
            # list-keys also matches a subkey's fingerprint: only the primary counts.
            listed = tuple(
                k for k in keys if str(k.get("fingerprint") or "").upper() == fingerprint
            )
            if len(self._listed) >= 64:
                self._listed.clear()
                self._listed_uids.clear()
            self._listed[cache_key] = listed
            self._listed_uids[cache_key] = dict(getattr(keys, "uid_map", {}) or {})
        if len(listed) != 1:
            return None, {}
        return listed[0], self._listed_uids.get(cache_key, {})

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
        scanned = self._gpg.scan_keys_mem(text)
        if not scanned:
            raise ValueError("GnuPG found no valid OpenPGP public key in this text.")
        if len(scanned) > 1:
            raise ValueError(f"The key block holds {len(scanned)} keys; give exactly one.")
        key = dict(scanned[0])
        # Kept with the key for _key_info: which of its user IDs are revoked or expired.
        key["_uid_map"] = dict(getattr(scanned, "uid_map", {}) or {})
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
        """The key as this keyring holds it now, or ``None``."""
        key, uid_map = self._listing(normalize_fingerprint(fingerprint))
        return None if key is None else _key_info(key, now, uid_map)

    def encrypt(self, data: bytes, fingerprint: str, *, now: datetime) -> bytes:
        """Encrypt ``data`` to exactly this key of the keyring; return ASCII-armored bytes.

        The key must already be in the keyring (``import_public_key``): no key text is
        imported here, so a key written into the database never becomes a recipient.
        """
        pinned = normalize_fingerprint(fingerprint)
        key, uid_map = self._listing(pinned)
        if key is None:
            raise OpenPgpError(
                f"The keyring holds no key whose fingerprint is exactly {pinned} "
                "(not in the keyring: confirm the vendor on this worker host)."
            )
        try:
            self._refuse_unusable(key, _key_info(key, now, uid_map), now)
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
