"""mycert.pki.pkcs12: keystores read by openssl and Java keytool; passwords."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from mycert.pki import (
    KEYSTORE_PASSWORD_ENTROPY_BITS,
    CertificateAuthority,
    KeystoreEncryption,
    KeyType,
    build_keystore,
    generate_keystore_password,
    generate_private_key,
)
from mycert.pki.pkcs12 import KEYSTORE_PASSWORD_ALPHABET
from tests.pki.helpers import Leaf, run_command

FRIENDLY_NAME = "Marie-Thérèse Dupont (MyCert)"

# What `openssl pkcs12 -info` must print for each encryption (RFC 7292, RFC 8018).
EXPECTED_INFO = {
    KeystoreEncryption.AES256: [
        r"^MAC: sha256, Iteration \d+$",
        r"^PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration \d+, PRF hmacWithSHA256$",
        r"^Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration \d+, PRF hmacWithSHA256$",
    ],
    KeystoreEncryption.LEGACY_3DES: [
        r"^MAC: sha1, Iteration \d+$",
        r"^PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration \d+$",
        r"^Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration \d+$",
    ],
}


@pytest.fixture(scope="module")
def password() -> str:
    return generate_keystore_password()


@pytest.fixture(scope="module", params=list(KeystoreEncryption), ids=str)
def keystore(
    request: pytest.FixtureRequest,
    leaf: Leaf,
    issuing_ca: CertificateAuthority,
    root_ca: CertificateAuthority,
    password: str,
    pki_dir: Path,
) -> tuple[KeystoreEncryption, Leaf, Path]:
    encryption: KeystoreEncryption = request.param
    der = build_keystore(
        private_key=leaf.private_key,
        certificate=leaf.certificate,
        chain=[issuing_ca.certificate, root_ca.certificate],
        password=password,
        friendly_name=FRIENDLY_NAME,
        encryption=encryption,
    )
    path = pki_dir / f"keystore-{leaf.key_type}-{encryption}.p12"
    path.write_bytes(der)
    return encryption, leaf, path


def test_openssl_reads_the_structure(
    keystore: tuple[KeystoreEncryption, Leaf, Path], password: str, openssl: str
) -> None:
    encryption, _, path = keystore
    result = run_command(
        [openssl, "pkcs12", "-info", "-nokeys", "-in", path, "-passin", f"pass:{password}"]
    )
    # OpenSSL 3 prints the algorithm lines on stderr, the bags on stdout.
    info = result.stderr + result.stdout
    for pattern in EXPECTED_INFO[encryption]:
        assert re.search(pattern, info, re.MULTILINE), (pattern, info)
    assert info.count("Certificate bag") == 3
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 3
    # OpenSSL 3.0 prints the BMPString friendlyName as Latin-1, later versions as
    # UTF-8; either way it must be the name we set (RFC 7292 §4.2, PKCS#9).
    raw = result.stdout.encode("utf-8", "surrogateescape")
    assert any(
        f"friendlyName: {FRIENDLY_NAME}".encode(encoding) in raw
        for encoding in ("utf-8", "latin-1")
    ), raw


def test_openssl_extracts_the_key(
    keystore: tuple[KeystoreEncryption, Leaf, Path], password: str, openssl: str, pki_dir: Path
) -> None:
    encryption, leaf, path = keystore
    result = run_command(
        [openssl, "pkcs12", "-info", "-noenc", "-in", path, "-passin", f"pass:{password}"]
    )
    assert result.stdout.count("-----BEGIN PRIVATE KEY-----") == 1
    # The extracted key is the leaf's: compare public keys through openssl itself.
    key_pem = pki_dir / f"extracted-{leaf.key_type}-{encryption}.pem"
    block = re.search(
        r"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n", result.stdout, re.DOTALL
    )
    assert block is not None
    key_pem.write_text(block.group(0))
    from_key = run_command([openssl, "pkey", "-in", key_pem, "-pubout"]).stdout
    from_cert = run_command([openssl, "x509", "-in", leaf.pem_path, "-noout", "-pubkey"]).stdout
    assert from_key == from_cert


def test_openssl_refuses_a_wrong_password(
    keystore: tuple[KeystoreEncryption, Leaf, Path], openssl: str
) -> None:
    _, _, path = keystore
    completed = subprocess.run(
        [openssl, "pkcs12", "-info", "-nokeys", "-in", str(path), "-passin", "pass:wrong"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
    assert "mac verify error" in completed.stderr.lower()


def test_keytool_reads_a_private_key_entry(
    keystore: tuple[KeystoreEncryption, Leaf, Path], password: str
) -> None:
    keytool = shutil.which("keytool") or "/usr/bin/keytool"
    _, leaf, path = keystore
    result = run_command(
        [keytool, "-list", "-v", "-storetype", "PKCS12", "-keystore", path, "-storepass", password]
    )
    assert "Your keystore contains 1 entry" in result.stdout
    # keytool lower-cases PKCS#12 aliases (the friendlyName).
    assert f"Alias name: {FRIENDLY_NAME.lower()}" in result.stdout
    assert "Entry type: PrivateKeyEntry" in result.stdout
    assert "Certificate chain length: 3" in result.stdout
    serial = format(leaf.certificate.serial_number, "x")
    assert re.search(rf"Serial number: 0*{serial}\b", result.stdout)


def test_pyca_round_trip(
    keystore: tuple[KeystoreEncryption, Leaf, Path],
    password: str,
    issuing_ca: CertificateAuthority,
    root_ca: CertificateAuthority,
) -> None:
    _, leaf, path = keystore
    loaded = pkcs12.load_pkcs12(path.read_bytes(), password.encode())
    assert loaded.cert is not None
    assert loaded.cert.certificate == leaf.certificate
    assert loaded.cert.friendly_name == FRIENDLY_NAME.encode()
    assert [c.certificate for c in loaded.additional_certs] == [
        issuing_ca.certificate,
        root_ca.certificate,
    ]
    assert loaded.key is not None
    assert loaded.key.public_key() == leaf.private_key.public_key()


def test_build_keystore_checks(
    rsa_leaf: Leaf, issuing_ca: CertificateAuthority, root_ca: CertificateAuthority
) -> None:
    good = {
        "private_key": rsa_leaf.private_key,
        "certificate": rsa_leaf.certificate,
        "chain": [issuing_ca.certificate, root_ca.certificate],
        "password": "pw",
        "friendly_name": "name",
    }
    with pytest.raises(ValueError, match="private_key does not match the certificate"):
        build_keystore(**{**good, "private_key": generate_private_key(KeyType.EC_P256)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"chain\[0\] .* did not issue .*root last"):
        build_keystore(**{**good, "chain": [root_ca.certificate, issuing_ca.certificate]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chain must not be empty"):
        build_keystore(**{**good, "chain": []})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chain must be a sequence"):
        build_keystore(**{**good, "chain": issuing_ca.certificate})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="password must not be empty"):
        build_keystore(**{**good, "password": ""})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="friendly_name must not be empty"):
        build_keystore(**{**good, "friendly_name": " "})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encryption must be a KeystoreEncryption"):
        build_keystore(**{**good, "encryption": "aes256"})  # type: ignore[arg-type]


def test_password_alphabet_has_no_look_alikes() -> None:
    assert not set("0Oo1lI") & set(KEYSTORE_PASSWORD_ALPHABET)
    assert len(set(KEYSTORE_PASSWORD_ALPHABET)) == len(KEYSTORE_PASSWORD_ALPHABET) == 56
    assert KEYSTORE_PASSWORD_ALPHABET.isalnum()
    assert KEYSTORE_PASSWORD_ALPHABET.isascii()


def test_password_entropy() -> None:
    password = generate_keystore_password()
    symbols = password.replace("-", "")
    entropy = len(symbols) * math.log2(len(KEYSTORE_PASSWORD_ALPHABET))
    assert entropy >= 128
    assert math.floor(entropy) == KEYSTORE_PASSWORD_ENTROPY_BITS
    assert KEYSTORE_PASSWORD_ENTROPY_BITS >= 128


def test_password_shape_and_randomness() -> None:
    passwords = [generate_keystore_password() for _ in range(500)]
    assert len(set(passwords)) == len(passwords)
    for password in passwords:
        # Groups of four for reading aloud, e.g. 7Kq4-xV9m-….
        assert re.fullmatch(r"[^\W_]{4}(-[^\W_]{4})+", password), password
        assert set(password.replace("-", "")) <= set(KEYSTORE_PASSWORD_ALPHABET)
    # Every symbol of the alphabet shows up over 12 000 draws (a broken generator
    # drawing from a subset would not).
    used = set("".join(passwords).replace("-", ""))
    assert used == set(KEYSTORE_PASSWORD_ALPHABET)
