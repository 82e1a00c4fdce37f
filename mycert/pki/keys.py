"""Private keys: generation, encryption at rest, loading (PKCS#8, RFC 5958 / RFC 8018)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "KeyType",
    "PrivateKey",
    "encrypt_private_key_pem",
    "generate_private_key",
    "key_matches_certificate",
    "load_private_key_pem",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# F4, the only public exponent interoperable everywhere (and pyca's recommendation).
_RSA_PUBLIC_EXPONENT = 65537


class KeyType(StrEnum):
    """Key algorithms MyCert issues (DESIGN.md §3)."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    EC_P256 = "ec-p256"


def _coerce_key_type(key_type: object) -> KeyType:
    if not isinstance(key_type, str):
        raise TypeError(f"key_type must be a KeyType, not {type(key_type).__name__}")
    try:
        return KeyType(key_type)
    except ValueError:
        allowed = ", ".join(member.value for member in KeyType)
        raise ValueError(f"unknown key type {key_type!r}; expected one of {allowed}") from None


def _require_private_key(key: object) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError(f"key must be an RSA or EC private key, not {type(key).__name__}")
    return key


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """Generate a fresh private key of ``key_type``."""
    match _coerce_key_type(key_type):
        case KeyType.RSA_2048:
            return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=2048)
        case KeyType.RSA_3072:
            return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=3072)
        case KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())


def encrypt_private_key_pem(key: PrivateKey, passphrase: bytes) -> bytes:
    """Serialize ``key`` as passphrase-encrypted PKCS#8 PEM."""
    _require_private_key(key)
    if not isinstance(passphrase, bytes):
        raise TypeError(f"passphrase must be bytes, not {type(passphrase).__name__}")
    if not passphrase:
        raise ValueError("passphrase must not be empty: CA keys are only stored encrypted")
    # BestAvailableEncryption gives PKCS#8 EncryptedPrivateKeyInfo with PBES2
    # (RFC 8018 §6.2): a scrypt/PBKDF2 KDF and AES-256-CBC in current pyca.
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(passphrase),
    )


def load_private_key_pem(pem: bytes, passphrase: bytes) -> PrivateKey:
    """Load an encrypted PKCS#8 PEM private key (RSA or EC)."""
    if not isinstance(pem, bytes):
        raise TypeError(f"pem must be bytes, not {type(pem).__name__}")
    if not isinstance(passphrase, bytes):
        raise TypeError(f"passphrase must be bytes, not {type(passphrase).__name__}")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:
        # pyca raises TypeError when a password is given for an unencrypted key; for
        # us that is bad data (keys at rest must be encrypted), not a programming error.
        raise ValueError(f"cannot load private key: the PEM is not encrypted ({exc})") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            "cannot load private key: wrong passphrase or unreadable PEM data"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}; expected RSA or EC")
    return key


def key_matches_certificate(key: PrivateKey, certificate: x509.Certificate) -> bool:
    """Tell whether ``key`` is the private half of ``certificate``'s public key."""
    _require_private_key(key)
    if not isinstance(certificate, x509.Certificate):
        raise TypeError(
            f"certificate must be an x509.Certificate, not {type(certificate).__name__}"
        )
    # Public-key equality compares the key material, not object identity.
    return bool(certificate.public_key() == key.public_key())
