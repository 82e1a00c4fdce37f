"""mycert.pki.keys: generation, PKCS#8 encryption at rest, loading."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mycert.pki import (
    CertificateAuthority,
    KeyType,
    encrypt_private_key_pem,
    generate_private_key,
    key_matches_certificate,
    load_private_key_pem,
)


@pytest.mark.parametrize(
    ("key_type", "expected_type", "size"),
    [
        (KeyType.RSA_2048, rsa.RSAPrivateKey, 2048),
        (KeyType.RSA_3072, rsa.RSAPrivateKey, 3072),
        (KeyType.EC_P256, ec.EllipticCurvePrivateKey, 256),
    ],
)
def test_generate_private_key(key_type: KeyType, expected_type: type, size: int) -> None:
    key = generate_private_key(key_type)
    assert isinstance(key, expected_type)
    assert key.key_size == size
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.public_key().public_numbers().e == 65537
    else:
        assert isinstance(key.curve, ec.SECP256R1)


def test_key_type_values_are_stable() -> None:
    # Stored in settings and the database: the strings are part of the contract.
    assert [member.value for member in KeyType] == ["rsa-2048", "rsa-3072", "ec-p256"]
    assert generate_private_key("ec-p256").curve.name == "secp256r1"  # type: ignore[arg-type,union-attr]


def test_generate_private_key_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match=r"unknown key type 'rsa-1024'; expected one of"):
        generate_private_key("rsa-1024")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key_type must be a KeyType"):
        generate_private_key(2048)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", [KeyType.RSA_2048, KeyType.EC_P256])
def test_encrypted_pem_round_trip(key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    pem = encrypt_private_key_pem(key, b"correct horse battery staple")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key_pem(pem, b"correct horse battery staple")
    assert loaded.private_numbers() == key.private_numbers()


def test_encrypt_refuses_empty_passphrase() -> None:
    key = generate_private_key(KeyType.EC_P256)
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        encrypt_private_key_pem(key, b"")
    with pytest.raises(TypeError, match="passphrase must be bytes"):
        encrypt_private_key_pem(key, "secret")  # type: ignore[arg-type]


def test_load_with_wrong_passphrase() -> None:
    pem = encrypt_private_key_pem(generate_private_key(KeyType.EC_P256), b"right")
    with pytest.raises(ValueError, match="wrong passphrase or unreadable PEM data"):
        load_private_key_pem(pem, b"wrong")


def test_load_garbage() -> None:
    with pytest.raises(ValueError, match="wrong passphrase or unreadable PEM data"):
        load_private_key_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"x"
        )
    with pytest.raises(ValueError, match="wrong passphrase or unreadable PEM data"):
        load_private_key_pem(b"not a pem at all", b"x")


def test_load_refuses_unencrypted_pem() -> None:
    plain = generate_private_key(KeyType.EC_P256).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="the PEM is not encrypted"):
        load_private_key_pem(plain, b"passphrase")


def test_load_refuses_other_key_algorithms() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ValueError, match="unsupported private key type"):
        load_private_key_pem(pem, b"pw")


def test_load_refuses_empty_passphrase() -> None:
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        load_private_key_pem(b"", b"")


def test_key_matches_certificate(issuing_ca: CertificateAuthority) -> None:
    assert key_matches_certificate(issuing_ca.private_key, issuing_ca.certificate)
    assert not key_matches_certificate(
        generate_private_key(KeyType.RSA_3072), issuing_ca.certificate
    )
    assert not key_matches_certificate(
        generate_private_key(KeyType.EC_P256), issuing_ca.certificate
    )
    with pytest.raises(TypeError, match=r"certificate must be an x509\.Certificate"):
        key_matches_certificate(issuing_ca.private_key, b"pem")  # type: ignore[arg-type]


def _pbes2_parameters(pem: bytes) -> Any:
    """The PBES2 parameters of an EncryptedPrivateKeyInfo, read with asn1crypto."""
    from asn1crypto import keys
    from asn1crypto import pem as pem_armor

    _kind, _headers, der = pem_armor.unarmor(pem)
    info = keys.EncryptedPrivateKeyInfo.load(der)
    algorithm = info["encryption_algorithm"]
    assert algorithm["algorithm"].native == "pbes2"
    return algorithm["parameters"]


def test_encryption_is_pbkdf2_sha256_with_600000_rounds() -> None:
    # The floor: PBKDF2 with at least 600,000 rounds (pyca's default was 2,048).
    pem = encrypt_private_key_pem(generate_private_key(KeyType.EC_P256), b"x" * 20)
    params = _pbes2_parameters(pem)
    kdf = params["key_derivation_func"]
    assert kdf["algorithm"].native == "pbkdf2"
    assert kdf["parameters"]["iteration_count"].native >= 600_000
    assert kdf["parameters"]["prf"]["algorithm"].native == "sha256"
    assert len(kdf["parameters"]["salt"].native) >= 16
    assert params["encryption_scheme"]["algorithm"].native == "aes256_cbc"


def test_openssl_opens_the_encrypted_key(openssl: str, tmp_path: Path) -> None:
    key = generate_private_key(KeyType.RSA_2048)
    path = tmp_path / "key.pem"
    path.write_bytes(encrypt_private_key_pem(key, b"a passphrase of twenty+ chars"))
    out = subprocess.run(
        [
            openssl,
            "pkey",
            "-in",
            str(path),
            "-passin",
            "pass:a passphrase of twenty+ chars",
            "-pubout",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert out == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_keys_written_with_2048_rounds_still_load() -> None:
    # Keys written before the change (pyca's BestAvailableEncryption: PBKDF2, 2,048
    # rounds) load unchanged: loading follows the file's own parameters.
    key = generate_private_key(KeyType.EC_P256)
    old = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"old passphrase"),
    )
    assert (
        _pbes2_parameters(old)["key_derivation_func"]["parameters"]["iteration_count"].native
        == 2048
    )
    loaded = load_private_key_pem(old, b"old passphrase")
    assert loaded.private_numbers() == key.private_numbers()
