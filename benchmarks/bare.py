"""The reference pipeline: cryptography alone, no MyCert code, no database.

Key generation, the same certificate profile (extensions of docs/architecture.md « The certificate
profile ») signed by the
same issuing CA key object, and the same PKCS#12 settings (PBES2 AES-256-CBC, PBKDF2
10,000 rounds, HMAC-SHA-256 MAC, key + leaf + issuing + root), and the same slow hash of
a revocation code that MyCert stores for each certificate (scrypt N=2^14, r=8, p=1;
issue 23): work the product must do, so the reference does it too.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))


@dataclass(frozen=True)
class BareIssuer:
    certificate: x509.Certificate
    private_key: PrivateKey
    root: x509.Certificate
    base_url: str
    organization: str = "Agence eSanté"
    policy_oid: str = "1.3.6.1.4.1.59999.1.1"


def sign(issuer: BareIssuer, public_key, number: int, now: datetime) -> x509.Certificate:
    given, family = "Marie", f"Dupont{number}"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "LU"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{given} {family}"),
            x509.NameAttribute(NameOID.GIVEN_NAME, given),
            x509.NameAttribute(NameOID.SURNAME, family),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"MED-{number:06d}"),
        ]
    )
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1095))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, is_rsa, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(f"m{number}@cabinet.lu")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(f"{issuer.base_url}/pki/crl/issuing.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(f"{issuer.base_url}/pki/ocsp/"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(f"{issuer.base_url}/pki/ca/issuing.cer"),
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier(issuer.policy_oid), None)]
            ),
            critical=False,
        )
    )
    return builder.sign(issuer.private_key, hashes.SHA256())


def keystore(issuer: BareIssuer, key: PrivateKey, certificate: x509.Certificate) -> bytes:
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(10_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(secrets.token_urlsafe(18).encode())
    )
    return pkcs12.serialize_key_and_certificates(
        name=b"MyCert Marie Dupont",
        key=key,
        cert=certificate,
        cas=[issuer.certificate, issuer.root],
        encryption_algorithm=encryption,
    )


def revocation_code_hash() -> bytes:
    """scrypt of a fresh 145-bit code, as ``mycert.services.revocation_codes`` stores it."""
    return hashlib.scrypt(
        secrets.token_urlsafe(19).encode(),
        salt=secrets.token_bytes(16),
        n=2**14,
        r=8,
        p=1,
        dklen=64,
    )


def rest(issuer: BareIssuer, key: PrivateKey, number: int, now: datetime) -> bytes:
    """Everything after key generation: the revocation code's hash, sign, then PKCS#12."""
    revocation_code_hash()
    return keystore(issuer, key, sign(issuer, key.public_key(), number, now))


def full(issuer: BareIssuer, key_type: str, number: int, now: datetime) -> bytes:
    return rest(issuer, generate_key(key_type), number, now)


def main(argv: list[str]) -> None:
    """``python -m benchmarks.bare FOLDER KEY_TYPE COUNT``: time COUNT certificates.

    FOLDER holds issuing.pem, issuing-key.pem (unencrypted) and root.pem. Prints the
    seconds the batch took (after imports and the CA load).
    """
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization

    folder, key_type, count = Path(argv[0]), argv[1], int(argv[2])
    key = serialization.load_pem_private_key((folder / "issuing-key.pem").read_bytes(), None)
    issuer = BareIssuer(
        certificate=x509.load_pem_x509_certificate((folder / "issuing.pem").read_bytes()),
        private_key=key,  # type: ignore[arg-type]
        root=x509.load_pem_x509_certificate((folder / "root.pem").read_bytes()),
        base_url="http://127.0.0.1:8000",
    )
    start = time.perf_counter()
    for number in range(count):
        full(issuer, key_type, number, datetime.now(UTC))
    print(f"{time.perf_counter() - start:.6f}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
