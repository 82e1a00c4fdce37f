"""The OpenPGP wrapper against the real ``gpg``: key checks on entry, encryption."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mycert.mail.gpg import OpenPgp, OpenPgpError, normalize_fingerprint
from tests.support.gpg import GpgKey, gpg

NOW = datetime.now(UTC)
KeyFactory = Callable[[str], GpgKey]


@pytest.fixture
def keyring(gpg_home: Path) -> OpenPgp:
    return OpenPgp(gpg_home)


def test_inspect_accepts_a_usable_key(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    info = keyring.inspect_public_key(vendor_key.public, now=NOW)

    assert info.fingerprint == vendor_key.fingerprint
    assert info.uids == ("Support Éditeur <support@vendor.example.lu>",)
    assert info.can_encrypt
    assert info.expires_at is not None
    assert NOW + timedelta(days=360) < info.expires_at < NOW + timedelta(days=370)


def test_inspect_does_not_import(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.inspect_public_key(vendor_key.public, now=NOW)

    assert keyring.key_in_keyring(vendor_key.fingerprint, now=NOW) is None


def test_inspect_uses_the_given_time(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    with pytest.raises(ValueError, match="expired"):
        keyring.inspect_public_key(vendor_key.public, now=NOW + timedelta(days=400))


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("expired_key", "expired on 2020-01-03"),
        ("sign_only_key", "no valid \\(sub\\)key for encryption"),
        ("revoked_key", "revoked"),
    ],
)
def test_inspect_refuses_unusable_keys(
    keyring: OpenPgp, request: pytest.FixtureRequest, fixture: str, message: str
) -> None:
    key: GpgKey = request.getfixturevalue(fixture)

    with pytest.raises(ValueError, match=message):
        keyring.inspect_public_key(key.public, now=NOW)


def test_inspect_refuses_a_private_key(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    with pytest.raises(ValueError, match="private"):
        keyring.inspect_public_key(vendor_key.secret, now=NOW)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 at all\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_inspect_refuses_what_is_not_a_key(keyring: OpenPgp, text: str) -> None:
    with pytest.raises(ValueError, match=r"not an ASCII-armored|no valid OpenPGP"):
        keyring.inspect_public_key(text, now=NOW)


def test_inspect_refuses_several_keys(
    keyring: OpenPgp, vendor_key: GpgKey, sign_only_key: GpgKey
) -> None:
    with pytest.raises(ValueError, match="2 key blocks"):
        keyring.inspect_public_key(vendor_key.public + sign_only_key.public, now=NOW)
    # Two keys exported as one armored block.
    both = gpg(
        vendor_key.home, "--armor", "--export", vendor_key.fingerprint, sign_only_key.fingerprint
    ).decode()
    with pytest.raises(ValueError, match="holds 2 keys"):
        keyring.inspect_public_key(both, now=NOW)


def test_encrypt_round_trip(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    secret = "mot de passe très secret".encode()
    keyring.import_public_key(vendor_key.public, now=NOW)

    armored = keyring.encrypt(secret, vendor_key.fingerprint, now=NOW)

    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert secret not in armored
    assert vendor_key.decrypt(armored) == secret


def test_encrypt_to_exactly_the_pinned_key(
    keyring: OpenPgp, vendor_key: GpgKey, gpg_home: Path, key_factory: KeyFactory
) -> None:
    """gpg.conf's encrypt-to must not add a recipient (ETSI: no other copy)."""
    other = key_factory("Archive <archive@esante.example.lu>")
    keyring.import_public_key(other.public, now=NOW)
    keyring.import_public_key(vendor_key.public, now=NOW)
    (gpg_home / "gpg.conf").write_text(f"encrypt-to {other.fingerprint}\n")

    armored = keyring.encrypt(b"data", vendor_key.fingerprint, now=NOW)

    packets = gpg(gpg_home, "--list-packets", "--list-only", input=armored).decode()
    assert packets.count(":pubkey enc packet:") == 1
    with pytest.raises(RuntimeError):
        other.decrypt(armored)


def test_encrypt_refuses_a_subkey_fingerprint(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.import_public_key(vendor_key.public, now=NOW)
    listing = gpg(vendor_key.home, "--with-colons", "--list-keys", vendor_key.fingerprint).decode()
    subkey = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][1]

    with pytest.raises(OpenPgpError, match="exactly"):
        keyring.encrypt(b"x", subkey, now=NOW)


def test_encrypt_refuses_a_key_not_in_the_keyring(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    """Issue 20 §3: no key text is imported when mail is encrypted, so a key written into
    the database never becomes a recipient; only the worker's keyring counts."""
    with pytest.raises(OpenPgpError, match="not in the keyring"):
        keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW)
    assert keyring.key_in_keyring(vendor_key.fingerprint, now=NOW) is None


def test_encrypt_refuses_an_expired_key_already_imported(
    keyring: OpenPgp, expired_key: GpgKey, gpg_home: Path
) -> None:
    gpg(gpg_home, "--import", input=expired_key.public.encode())

    with pytest.raises(OpenPgpError, match="expired"):
        keyring.encrypt(b"x", expired_key.fingerprint, now=NOW)


def test_encrypt_refuses_when_the_key_expires(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.import_public_key(vendor_key.public, now=NOW)

    with pytest.raises(OpenPgpError, match="expired"):
        keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW + timedelta(days=400))


def test_encrypt_refuses_a_key_revoked_since(keyring: OpenPgp, key_factory: KeyFactory) -> None:
    key = key_factory("Later Revoked <later@vendor.example.lu>")
    keyring.import_public_key(key.public, now=NOW)
    keyring.encrypt(b"", key.fingerprint, now=NOW)
    key.revoke()

    # The revocation reaches the keyring (an operator's import), and counts at once.
    gpg(keyring.home, "--import", input=key.public.encode())
    with pytest.raises(OpenPgpError, match="revoked"):
        keyring.encrypt(b"x", key.fingerprint, now=NOW)
    # And it cannot be confirmed again.
    with pytest.raises(ValueError, match="revoked"):
        keyring.import_public_key(key.public, now=NOW)


def test_import_refuses_unusable_keys_and_imports_nothing(
    keyring: OpenPgp, expired_key: GpgKey, sign_only_key: GpgKey
) -> None:
    for key in (expired_key, sign_only_key):
        with pytest.raises(ValueError, match=r"expired|encryption"):
            keyring.import_public_key(key.public, now=NOW)
        assert keyring.key_in_keyring(key.fingerprint, now=NOW) is None


def test_a_key_carries_the_addresses_of_its_valid_user_ids_only(
    keyring: OpenPgp, key_factory: KeyFactory
) -> None:
    key = key_factory("Support <Support@Vendor.example.lu>")
    gpg(key.home, "--quick-add-uid", key.fingerprint, "Old <old@vendor.example.lu>")
    gpg(key.home, "--quick-revoke-uid", key.fingerprint, "Old <old@vendor.example.lu>")

    info = keyring.import_public_key(key.public, now=NOW)

    assert info.addresses == ("support@vendor.example.lu",)
    assert info.carries("SUPPORT@vendor.example.lu ")
    assert not info.carries("old@vendor.example.lu")
    assert keyring.inspect_public_key(key.public, now=NOW).addresses == info.addresses


def test_remove_public_key(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.import_public_key(vendor_key.public, now=NOW)

    assert keyring.remove_public_key(vendor_key.fingerprint)
    assert keyring.key_in_keyring(vendor_key.fingerprint, now=NOW) is None
    assert not keyring.remove_public_key(vendor_key.fingerprint)


def test_home_path_must_be_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        OpenPgp(tmp_path / ("x" * 100))


def test_normalize_fingerprint() -> None:
    assert normalize_fingerprint("a613 9de5 7b04 e13b f32f  c6c0 d1bf c2fd 6261 8d70") == (
        "A6139DE57B04E13BF32FC6C0D1BFC2FD62618D70"
    )
    with pytest.raises(ValueError, match="fingerprint"):
        normalize_fingerprint("D1BFC2FD62618D70")  # a key id is not a fingerprint


def test_encrypt_lists_a_key_once_per_keyring_version(
    keyring: OpenPgp, vendor_key: GpgKey, key_factory: KeyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring.import_public_key(vendor_key.public, now=NOW)
    calls: list[str] = []
    original = keyring._gpg.list_keys

    def counted(*args: object, **kwargs: object) -> object:
        calls.append("list_keys")
        return original(*args, **kwargs)

    monkeypatch.setattr(keyring._gpg, "list_keys", counted)

    for secret in (b"first", b"second", b"third"):
        assert (
            vendor_key.decrypt(keyring.encrypt(secret, vendor_key.fingerprint, now=NOW)) == secret
        )
    assert calls == []  # listed when it was imported; the keyring has not changed since

    # Another confirmation changes the keyring: the key is listed again, once.
    keyring.import_public_key(key_factory("Other <o@vendor.example.lu>").public, now=NOW)
    calls.clear()
    keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW)
    keyring.encrypt(b"y", vendor_key.fingerprint, now=NOW)
    assert calls == ["list_keys"]
