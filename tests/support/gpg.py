"""Throwaway GnuPG homes and keys for tests: real ``gpg``, no mocks.

Fixtures (register with ``pytest_plugins = ["tests.support.gpg"]``):

- ``gpg_home`` — an empty GnuPG home in a short folder under /tmp (gpg-agent's socket
  path must stay under ~107 bytes; pytest's tmp_path is too long);
- ``vendor_key`` — a vendor's keypair (ed25519 + cv25519, no passphrase) in its own
  home: ``.fingerprint``, ``.public`` (armored), ``.secret`` (armored), ``.decrypt()``;
- ``expired_key``, ``sign_only_key``, ``revoked_key`` — for refusals;
- ``key_factory`` — ``key_factory(uid)`` makes one more usable keypair;
- ``mycert_gpg_home`` — ``MYCERT_GNUPG_HOME`` pointed at a fresh, empty home.

``confirm_on_worker(vendor)`` confirms a vendor in MyCert's keyring, as ``confirm_vendor``
does on a worker host.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "GpgKey",
    "confirm_expired_key_on_worker",
    "confirm_on_worker",
    "decrypt",
    "expired_key",
    "gpg_home",
    "key_factory",
    "make_key",
    "mycert_gpg_home",
    "new_gpg_home",
    "revoked_key",
    "sign_only_key",
    "vendor_key",
]

GPG = os.environ.get("MYCERT_GPG_BINARY", "gpg")


def new_gpg_home() -> Path:
    """A fresh GnuPG home with a short path (``/tmp/gXXXXXXXX``), mode 0700."""
    return Path(tempfile.mkdtemp(dir="/tmp", prefix="g"))


def _kill_agent(home: Path) -> None:
    # Secret-key operations start a gpg-agent for this home; stop it with the home.
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"],
        check=False,
        capture_output=True,
    )


def _remove_home(home: Path) -> None:
    if shutil.which("gpgconf"):
        _kill_agent(home)
    shutil.rmtree(home, ignore_errors=True)


def gpg(home: Path, *args: str, input: bytes | None = None, faked_time: str | None = None) -> bytes:
    """Run ``gpg`` in batch mode on ``home``; return stdout, raise with stderr on failure."""
    command = [GPG, "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback"]
    command += ["--passphrase", ""]
    if faked_time:
        command += ["--faked-system-time", faked_time]
    result = subprocess.run([*command, *args], input=input, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


@dataclass
class GpgKey:
    """A keypair living in its own GnuPG home (the recipient's side)."""

    home: Path
    fingerprint: str
    uid: str

    @property
    def uid_address(self) -> str:
        """The e-mail address of the key's user ID."""
        return email.utils.parseaddr(self.uid)[1]

    @property
    def public(self) -> str:
        return gpg(self.home, "--armor", "--export", self.fingerprint).decode()

    @property
    def secret(self) -> str:
        return gpg(self.home, "--armor", "--export-secret-keys", self.fingerprint).decode()

    def decrypt(self, armored: bytes | str) -> bytes:
        """Decrypt with the real ``gpg --decrypt`` and this key's secret."""
        data = armored.encode() if isinstance(armored, str) else armored
        return gpg(self.home, "--decrypt", input=data)

    def revoke(self) -> None:
        """Import the revocation certificate GnuPG made when the key was created."""
        rev = (self.home / "openpgp-revocs.d" / f"{self.fingerprint}.rev").read_text()
        # GnuPG prefixes the armor line with ":" so that it is not imported by accident.
        gpg(self.home, "--import", input=rev.replace(":-----BEGIN", "-----BEGIN").encode())


def _fingerprint(home: Path, uid: str) -> str:
    listing = gpg(home, "--with-colons", "--list-keys", uid).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def make_key(
    home: Path,
    uid: str,
    *,
    encrypt: bool = True,
    expire: str = "1y",
    faked_time: str | None = None,
) -> GpgKey:
    """Make an ed25519 primary key (sign, certify) with a cv25519 encryption subkey."""
    gpg(home, "--quick-gen-key", uid, "ed25519", "sign,cert", expire, faked_time=faked_time)
    fingerprint = _fingerprint(home, uid)
    if encrypt:
        gpg(home, "--quick-add-key", fingerprint, "cv25519", "encr", expire, faked_time=faked_time)
    return GpgKey(home=home, fingerprint=fingerprint, uid=uid)


def decrypt(key: GpgKey, message: Message) -> Message:
    """Decrypt a PGP/MIME message (RFC 3156 §4) and parse the inner MIME entity."""
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 2
    data = parts[1]
    assert isinstance(data, Message)
    armored = data.get_payload(decode=True)
    assert isinstance(armored, bytes)
    return email.message_from_bytes(key.decrypt(armored), policy=email.policy.compat32)


@pytest.fixture
def gpg_home() -> Iterator[Path]:
    home = new_gpg_home()
    try:
        yield home
    finally:
        _remove_home(home)


@pytest.fixture
def mycert_gpg_home(settings: Any) -> Iterator[Path]:
    """MyCert's own keyring, empty, in a short folder."""
    home = new_gpg_home()
    settings.MYCERT_GNUPG_HOME = home
    try:
        yield home
    finally:
        _remove_home(home)


@pytest.fixture
def key_factory() -> Iterator[Callable[[str], GpgKey]]:
    """Make usable keys, each in its own home, removed after the test."""
    homes: list[Path] = []

    def factory(uid: str) -> GpgKey:
        homes.append(new_gpg_home())
        return make_key(homes[-1], uid)

    try:
        yield factory
    finally:
        for home in homes:
            _remove_home(home)


@pytest.fixture(scope="session")
def _vendor_home() -> Iterator[Path]:
    home = new_gpg_home()
    try:
        yield home
    finally:
        _remove_home(home)


@pytest.fixture(scope="session")
def vendor_key(_vendor_home: Path) -> GpgKey:
    """A vendor's usable keypair (made once per run)."""
    return make_key(_vendor_home, "Support Éditeur <support@vendor.example.lu>")


@pytest.fixture(scope="session")
def expired_key(_vendor_home: Path) -> GpgKey:
    """A key that expired in January 2020."""
    return make_key(
        _vendor_home, "Expired <old@vendor.example.lu>", expire="2d", faked_time="20200101T000000"
    )


@pytest.fixture(scope="session")
def sign_only_key(_vendor_home: Path) -> GpgKey:
    """A key with no encryption (sub)key."""
    return make_key(_vendor_home, "Signer <sign@vendor.example.lu>", encrypt=False)


@pytest.fixture(scope="session")
def revoked_key(_vendor_home: Path) -> GpgKey:
    key = make_key(_vendor_home, "Revoked <revoked@vendor.example.lu>")
    key.revoke()
    return key


def confirm_on_worker(vendor: Any) -> None:
    """Confirm ``vendor`` as its row says now on this test's worker host (``confirm_vendor``).

    The workers send a vendor's copies only where a security officer confirmed them
    (``mycert.mail.anchor``); tests that deliver vendor copies confirm their vendor,
    as the operator does after ``add_vendor`` on another host or a change in the admin.
    """
    from django.utils import timezone

    from mycert.services.vendors import vendor_confirm

    vendor.refresh_from_db()
    vendor_confirm(
        vendor_id=vendor.pk,
        fingerprint=vendor.pgp_fingerprint,
        email=vendor.email,
        actor="test",
        now=timezone.now(),
    )


def confirm_expired_key_on_worker(vendor: Any, key: GpgKey, home: Path) -> None:
    """Anchor ``vendor`` with ``key`` in MyCert's keyring ``home`` as a confirmation made
    while the key was valid would have (``confirm_vendor`` refuses an expired key now)."""
    import json

    from mycert.mail.anchor import ANCHOR_FILE

    gpg(home, "--import", input=key.public.encode())
    anchor = home / ANCHOR_FILE
    entries = json.loads(anchor.read_text())["vendors"] if anchor.exists() else []
    entries.append(
        {
            "vendor_id": vendor.pk,
            "name": vendor.name,
            "email": vendor.email.lower(),
            "fingerprint": key.fingerprint,
            "confirmed_at": "2020-01-02T00:00:00+00:00",
            "confirmed_by": "test",
        }
    )
    anchor.write_text(json.dumps({"vendors": entries}))
