"""PKCS#12 keystores for professionals (RFC 7292, PBES2 per RFC 8018)."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mycert.pki.keys import PrivateKey, key_matches_certificate

__all__ = [
    "KEYSTORE_PASSWORD_ALPHABET",
    "KEYSTORE_PASSWORD_ENTROPY_BITS",
    "KeystoreEncryption",
    "build_keystore",
    "generate_keystore_password",
]

# Letters and digits minus the look-alikes 0/O/o and 1/l/I: 56 symbols, ~5.81 bits each.
KEYSTORE_PASSWORD_ALPHABET = "".join(
    char
    for char in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    if char not in "0Oo1lI"
)
_GROUP_LENGTH = 4
_GROUPS = 6
# 24 symbols x log2(56) = 139 bits: above the 128-bit floor (docs/architecture.md « The certificate
# profile »), with
# whole groups of four for reading aloud or copying from the second e-mail.
KEYSTORE_PASSWORD_ENTROPY_BITS = math.floor(
    _GROUPS * _GROUP_LENGTH * math.log2(len(KEYSTORE_PASSWORD_ALPHABET))
)

# PBKDF2 iterations for AES keystores: the JDK's PKCS12 default (10 000). The password
# carries >= 128 bits, so iterations add no real brute-force margin; they only cost
# CPU at issuance and at import.
_AES_KDF_ROUNDS = 10_000
# The legacy profile targets old readers (Windows 7, Java 8 < 8u301, older macOS)
# that were tested with OpenSSL 1.x's default of 2048 iterations.
_LEGACY_KDF_ROUNDS = 2048


class KeystoreEncryption(StrEnum):
    """How a keystore's key and certificates are protected."""

    # PBES2 (RFC 8018 §6.2) with PBKDF2-HMAC-SHA256 and AES-256-CBC; MAC HMAC-SHA-256.
    AES256 = "aes256"
    # pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 Appendix C); MAC HMAC-SHA-1. Only for
    # software that cannot read PBES2 keystores.
    LEGACY_3DES = "legacy-3des"


def _encryption(
    encryption: KeystoreEncryption, password: bytes
) -> serialization.KeySerializationEncryption:
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if encryption is KeystoreEncryption.AES256:
        builder = (
            builder.kdf_rounds(_AES_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    else:
        builder = (
            builder.kdf_rounds(_LEGACY_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - RFC 7292 MAC that legacy readers need
        )
    return builder.build(password)


def _check_chain(certificate: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
    if isinstance(chain, x509.Certificate | str | bytes) or not isinstance(chain, Sequence):
        raise TypeError("chain must be a sequence of x509.Certificate")
    if not chain:
        raise ValueError("chain must not be empty: include the issuing CA and the root")
    child = certificate
    for position, parent in enumerate(chain):
        if not isinstance(parent, x509.Certificate):
            raise TypeError(
                f"chain[{position}] must be an x509.Certificate, not {type(parent).__name__}"
            )
        # Readers (Windows, keytool) rebuild the path from the bag order poorly; we
        # promise issuing CA then root, so check the names link up (RFC 5280 §6.1).
        if child.issuer != parent.subject:
            raise ValueError(
                f"chain[{position}] ({parent.subject.rfc4514_string()}) did not issue "
                f"{child.subject.rfc4514_string()}; order the chain issuing CA first, root last"
            )
        child = parent


def build_keystore(
    *,
    private_key: PrivateKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: str,
    friendly_name: str,
    encryption: KeystoreEncryption = KeystoreEncryption.AES256,
) -> bytes:
    """Build a password-protected DER PKCS#12 with the key, certificate and chain."""
    if not isinstance(certificate, x509.Certificate):
        raise TypeError(
            f"certificate must be an x509.Certificate, not {type(certificate).__name__}"
        )
    if not key_matches_certificate(private_key, certificate):
        raise ValueError("private_key does not match the certificate's public key")
    _check_chain(certificate, chain)
    if not isinstance(password, str):
        raise TypeError(f"password must be a str, not {type(password).__name__}")
    if not password:
        raise ValueError("password must not be empty")
    if not isinstance(friendly_name, str):
        raise TypeError(f"friendly_name must be a str, not {type(friendly_name).__name__}")
    if not friendly_name.strip():
        raise ValueError("friendly_name must not be empty")
    if not isinstance(encryption, KeystoreEncryption):
        raise TypeError(f"encryption must be a KeystoreEncryption, not {type(encryption).__name__}")
    # The friendly name becomes the key bag's friendlyName attribute (RFC 7292 §4.2,
    # PKCS#9 BMPString): keytool shows it as the alias, Windows as the display name.
    return pkcs12.serialize_key_and_certificates(
        name=friendly_name.encode("utf-8"),
        key=private_key,
        cert=certificate,
        cas=list(chain),
        encryption_algorithm=_encryption(encryption, password.encode("utf-8")),
    )


def generate_keystore_password() -> str:
    """Return a fresh random keystore password, e.g. ``7Kq4-xV9m-…`` (139 bits)."""
    symbols = [secrets.choice(KEYSTORE_PASSWORD_ALPHABET) for _ in range(_GROUPS * _GROUP_LENGTH)]
    groups = (
        "".join(symbols[start : start + _GROUP_LENGTH])
        for start in range(0, len(symbols), _GROUP_LENGTH)
    )
    return "-".join(groups)
