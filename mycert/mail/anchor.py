"""Where vendor copies may go: what a security officer confirmed on this worker host.

Issue 20 §3. A vendor's row in the database says where its copies go (``email``) and
to which OpenPGP key they are encrypted (``pgp_fingerprint``), and anyone who can write
to the database can change both. The workers do not believe it. The source of truth is
on the worker host, beside its GnuPG keyring (``MYCERT_GNUPG_HOME``), out of reach of
the web hosts and of the database:

- the keyring holds the keys a person confirmed (``add_vendor``, ``confirm_vendor``);
- ``mycert-vendors.json`` in the same folder says, per vendor, the address and the key
  fingerprint that person confirmed, or no fingerprint for a vendor without a key.

A vendor copy leaves only when its row agrees with both (:meth:`VendorAnchor.refusal`):
its vendor is confirmed here, its address and fingerprint are the confirmed ones, the
key is in the keyring, and the address is one of the key's valid user IDs. The binding
to the vendor stops a row of vendor A from borrowing vendor B's confirmed key and
address. A vendor without a key is anchored by its address alone: its copies go in
clear only if ``MYCERT_VENDOR_COPY_REQUIRES_PGP`` is off, and only to that address.

No Django setting is read here but in :func:`vendor_anchor`; the file is written only by
the management commands, atomically (rename), under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from mycert.mail.gpg import KeyInfo, OpenPgp, normalize_fingerprint, openpgp

__all__ = ["ANCHOR_FILE", "AnchoredVendor", "VendorAnchor", "vendor_anchor"]

#: The anchor file's name, in the GnuPG home.
ANCHOR_FILE = "mycert-vendors.json"


@dataclass(frozen=True)
class AnchoredVendor:
    """One vendor as a security officer confirmed it on this host."""

    vendor_id: int
    name: str
    #: Lower-cased; the only address the vendor's copies may go to.
    email: str
    #: The only key its copies may be encrypted to; empty for a vendor without a key.
    fingerprint: str
    confirmed_at: str
    confirmed_by: str


class VendorAnchor:
    """The confirmed vendors of one worker host: its keyring and its anchor file."""

    def __init__(self, keyring: OpenPgp) -> None:
        self.keyring = keyring
        self.path = Path(keyring.home) / ANCHOR_FILE
        self._cache: tuple[tuple[int, int, int], dict[int, AnchoredVendor]] | None = None

    # --- Reading -------------------------------------------------------------------------

    def _version(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def entries(self) -> dict[int, AnchoredVendor]:
        """Every confirmed vendor, by id (read again whenever the file changed)."""
        version = self._version()
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        entries: dict[int, AnchoredVendor] = {}
        if version != (0, 0, 0):
            try:
                raw = json.loads(self.path.read_text("utf-8"))
                for item in raw.get("vendors", []):
                    entry = AnchoredVendor(**item)
                    entries[entry.vendor_id] = entry
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # Unreadable is not "nobody confirmed": no copy leaves until it is fixed.
                raise ValueError(f"The vendor anchor {self.path} is unreadable: {exc}") from exc
        self._cache = (version, entries)
        return entries

    def get(self, vendor_id: int) -> AnchoredVendor | None:
        return self.entries().get(vendor_id)

    def refusal(self, *, vendor_id: int | None, email: str, fingerprint: str, now: datetime) -> str:
        """Why a vendor copy to ``email``, encrypted to ``fingerprint`` (empty: in clear),
        disagrees with what was confirmed here; empty when it may go."""
        if vendor_id is None:
            return "a vendor copy names no vendor"
        try:
            entry = self.get(vendor_id)
        except ValueError as exc:
            return str(exc)
        if entry is None:
            return (
                f"vendor {vendor_id} has not been confirmed on this worker host "
                f"(python manage.py confirm_vendor {vendor_id})"
            )
        if email.strip().lower() != entry.email:
            return (
                f"the copy's address is not the address confirmed for vendor {vendor_id} "
                "on this worker host"
            )
        pinned = fingerprint.strip().upper()
        if pinned != entry.fingerprint:
            return (
                f"the copy is pinned to OpenPGP key {pinned or '(none)'}, not to the key "
                f"confirmed for vendor {vendor_id} on this worker host "
                f"({entry.fingerprint or 'none'})"
            )
        if not pinned:
            return ""
        key = self.keyring.key_in_keyring(pinned, now=now)
        if key is None:
            return f"OpenPGP key {pinned} is not in this worker host's keyring"
        if not key.can_encrypt or (key.expires_at is not None and key.expires_at <= now):
            # The confirmed key itself expired or was revoked (its user IDs with it): not
            # a redirection but a key to renew; encrypting refuses it and says why.
            return ""
        if not key.carries(email):
            return f"the copy's address is not a user ID of OpenPGP key {pinned}"
        return ""

    # --- Writing (management commands on a worker host) ------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(f"{ANCHOR_FILE}.lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, entries: dict[int, AnchoredVendor]) -> None:
        data = {"vendors": [asdict(entries[key]) for key in sorted(entries)]}
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".anchor-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._cache = None

    def confirm(
        self,
        *,
        vendor_id: int,
        name: str,
        email: str,
        armored_key: str,
        actor: str,
        now: datetime,
    ) -> AnchoredVendor:
        """Anchor a vendor as it is now: import its key, record its address and key.

        ``ValueError`` (nothing changed) when the key is unusable or does not carry the
        address as a user ID. A key the vendor no longer uses leaves the keyring unless
        another confirmed vendor uses it too.
        """
        address = email.strip().lower()
        if "@" not in address:
            raise ValueError(f"{email!r} is not an e-mail address.")
        info: KeyInfo | None = None
        if armored_key.strip():
            info = self.keyring.inspect_public_key(armored_key, now=now)
            if not info.carries(address):
                raise ValueError(
                    f"The key {info.fingerprint} does not carry the vendor's address "
                    f"{email} as a user ID (it carries: {', '.join(info.addresses) or 'none'}). "
                    "Copies go only to an address of the key they are encrypted to: ask the "
                    "vendor for a key with that user ID, or correct the address."
                )
        with self._locked():
            entries = dict(self.entries())
            previous = entries.get(vendor_id)
            if info is not None:
                self.keyring.import_public_key(armored_key, now=now)
            entry = AnchoredVendor(
                vendor_id=vendor_id,
                name=name,
                email=address,
                fingerprint=info.fingerprint if info is not None else "",
                confirmed_at=now.isoformat(),
                confirmed_by=actor,
            )
            entries[vendor_id] = entry
            self._write(entries)
            if previous is not None and previous.fingerprint != entry.fingerprint:
                self._drop_unused_key(previous.fingerprint, entries)
        return entry

    def forget(self, *, vendor_id: int) -> AnchoredVendor | None:
        """Withdraw a vendor (deactivated): no copy goes to it from this host any more."""
        with self._locked():
            entries = dict(self.entries())
            previous = entries.pop(vendor_id, None)
            if previous is None:
                return None
            self._write(entries)
            self._drop_unused_key(previous.fingerprint, entries)
        return previous

    def _drop_unused_key(self, fingerprint: str, entries: dict[int, AnchoredVendor]) -> None:
        if fingerprint and all(entry.fingerprint != fingerprint for entry in entries.values()):
            self.keyring.remove_public_key(normalize_fingerprint(fingerprint))


def vendor_anchor() -> VendorAnchor:
    """This host's anchor, beside ``MYCERT_GNUPG_HOME``'s keyring (one per process)."""
    return _anchor_for(openpgp())


@cache
def _anchor_for(keyring: OpenPgp) -> VendorAnchor:
    return VendorAnchor(keyring)
