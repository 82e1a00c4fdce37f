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

    armored = keyring.encrypt(
        secret, vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public
    )

    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert secret not in armored
    assert vendor_key.decrypt(armored) == secret
    # Now in the keyring: a second encryption needs no key text.
    assert vendor_key.decrypt(keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW)) == b"x"


def test_encrypt_to_exactly_the_pinned_key(
    keyring: OpenPgp, vendor_key: GpgKey, gpg_home: Path, key_factory: KeyFactory
) -> None:
    """gpg.conf's encrypt-to must not add a recipient (ETSI: no other copy)."""
    other = key_factory("Archive <archive@esante.example.lu>")
    keyring.encrypt(b"", other.fingerprint, now=NOW, armored_key=other.public)
    (gpg_home / "gpg.conf").write_text(f"encrypt-to {other.fingerprint}\n")

    armored = keyring.encrypt(
        b"data", vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public
    )

    packets = gpg(gpg_home, "--list-packets", "--list-only", input=armored).decode()
    assert packets.count(":pubkey enc packet:") == 1
    with pytest.raises(RuntimeError):
        other.decrypt(armored)


def test_encrypt_refuses_another_fingerprint(
    keyring: OpenPgp, vendor_key: GpgKey, sign_only_key: GpgKey
) -> None:
    with pytest.raises(OpenPgpError, match="not the pinned"):
        keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW, armored_key=sign_only_key.public)


def test_encrypt_refuses_a_subkey_fingerprint(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.encrypt(b"", vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public)
    listing = gpg(vendor_key.home, "--with-colons", "--list-keys", vendor_key.fingerprint).decode()
    subkey = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][1]

    with pytest.raises(OpenPgpError, match="exactly"):
        keyring.encrypt(b"x", subkey, now=NOW)


def test_encrypt_refuses_a_key_not_in_the_keyring(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    with pytest.raises(OpenPgpError, match="not in the keyring"):
        keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW)


def test_encrypt_refuses_an_expired_key_already_imported(
    keyring: OpenPgp, expired_key: GpgKey, gpg_home: Path
) -> None:
    gpg(gpg_home, "--import", input=expired_key.public.encode())

    with pytest.raises(OpenPgpError, match="expired"):
        keyring.encrypt(b"x", expired_key.fingerprint, now=NOW)


def test_encrypt_refuses_when_the_pinned_key_expires(keyring: OpenPgp, vendor_key: GpgKey) -> None:
    keyring.encrypt(b"", vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public)

    with pytest.raises(OpenPgpError, match="expired"):
        keyring.encrypt(b"x", vendor_key.fingerprint, now=NOW + timedelta(days=400))


def test_encrypt_refuses_a_key_revoked_since(keyring: OpenPgp, key_factory: KeyFactory) -> None:
    key = key_factory("Later Revoked <later@vendor.example.lu>")
    keyring.encrypt(b"", key.fingerprint, now=NOW, armored_key=key.public)
    key.revoke()

    # The key on file now carries the revocation: importing it merges it into the keyring.
    with pytest.raises(OpenPgpError, match="revoked"):
        keyring.encrypt(b"x", key.fingerprint, now=NOW, armored_key=key.public)


def test_home_path_must_be_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        OpenPgp(tmp_path / ("x" * 100))


def test_normalize_fingerprint() -> None:
    assert normalize_fingerprint("a613 9de5 7b04 e13b f32f  c6c0 d1bf c2fd 6261 8d70") == (
        "A6139DE57B04E13BF32FC6C0D1BFC2FD62618D70"
    )
    with pytest.raises(ValueError, match="fingerprint"):
        normalize_fingerprint("D1BFC2FD62618D70")  # a key id is not a fingerprint


def test_encrypt_imports_the_same_key_text_once(
    keyring: OpenPgp, vendor_key: GpgKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("scan_keys_mem", "import_keys", "list_keys"):
        original = getattr(keyring._gpg, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(keyring._gpg, name, counted)

    for secret in (b"first", b"second", b"third"):
        armored = keyring.encrypt(
            secret, vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public
        )
        assert vendor_key.decrypt(armored) == secret

    # One scan, one import, one listing for the key text; then only `gpg --encrypt`.
    assert sorted(calls) == ["import_keys", "list_keys", "scan_keys_mem"]


def test_encrypt_checks_expiry_each_time_for_a_key_text_already_imported(
    keyring: OpenPgp, vendor_key: GpgKey
) -> None:
    keyring.encrypt(b"", vendor_key.fingerprint, now=NOW, armored_key=vendor_key.public)

    with pytest.raises(OpenPgpError, match="expired"):
        keyring.encrypt(
            b"x",
            vendor_key.fingerprint,
            now=NOW + timedelta(days=400),
            armored_key=vendor_key.public,
        )
