"""Private keys: generation, encryption at rest, loading (PKCS#8, RFC 5958 / RFC 8018)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TypeAlias

from asn1crypto import algos
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as pem_armor
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

__all__ = [
    "PBKDF2_ITERATIONS",
    "KeyType",
    "PrivateKey",
    "encrypt_private_key_pem",
    "generate_private_key",
    "key_matches_certificate",
    "load_private_key_pem",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# PBKDF2-HMAC-SHA256 rounds for CA keys at rest: OWASP's 2023 floor for SHA-256, and the
# issue's. pyca's BestAvailableEncryption uses 2,048 and offers no knob for PKCS#8.
# scrypt would be memory-hard, but OpenSSL's command line refuses scrypt above 32 MiB
# (EVP_PBE_scrypt's default maxmem), so an operator could not open a strong scrypt key
# with `openssl pkey` during a ceremony; PBKDF2 opens everywhere.
PBKDF2_ITERATIONS = 600_000
_SALT_BYTES = 16

# F4, the only public exponent interoperable everywhere (and pyca's recommendation).
_RSA_PUBLIC_EXPONENT = 65537


class KeyType(StrEnum):
    """Key algorithms MyCert issues (docs/architecture.md « The certificate profile »)."""

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


def encrypt_private_key_pem(
    key: PrivateKey, passphrase: bytes, *, iterations: int | None = None
) -> bytes:
    """Serialize ``key`` as passphrase-encrypted PKCS#8 PEM (PBES2, PBKDF2, AES-256-CBC)."""
    _require_private_key(key)
    if not isinstance(passphrase, bytes):
        raise TypeError(f"passphrase must be bytes, not {type(passphrase).__name__}")
    if not passphrase:
        raise ValueError("passphrase must not be empty: CA keys are only stored encrypted")
    if iterations is None:
        iterations = PBKDF2_ITERATIONS
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    plain = key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    salt = os.urandom(_SALT_BYTES)
    iv = os.urandom(16)
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations
    ).derive(passphrase)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    encryptor = Cipher(algorithms.AES(derived), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    # RFC 5958 §3 EncryptedPrivateKeyInfo with RFC 8018 §6.2 PBES2: PBKDF2 (§5.2, PRF
    # hmacWithSHA256, §A.2) and AES-256-CBC (§B.2.5). The ASN.1 comes from asn1crypto;
    # the cryptography is pyca's. Loading stays pyca's and reads these parameters.
    info = asn1_keys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": algos.EncryptionAlgorithm(
                {
                    "algorithm": "pbes2",
                    "parameters": algos.Pbes2Params(
                        {
                            "key_derivation_func": algos.KdfAlgorithm(
                                {
                                    "algorithm": "pbkdf2",
                                    "parameters": algos.Pbkdf2Params(
                                        {
                                            "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                                            "iteration_count": iterations,
                                            "prf": {"algorithm": "sha256", "parameters": None},
                                        }
                                    ),
                                }
                            ),
                            "encryption_scheme": algos.EncryptionAlgorithm(
                                {"algorithm": "aes256_cbc", "parameters": iv}
                            ),
                        }
                    ),
                }
            ),
            "encrypted_data": ciphertext,
        }
    )
    armored: bytes = pem_armor.armor("ENCRYPTED PRIVATE KEY", info.dump())
    return armored


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
