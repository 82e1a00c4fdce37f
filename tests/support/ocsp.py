"""An OCSP request for a certificate of the issuing CA, as relying services send it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mycert import custody


def ocsp_request_der(certificate: x509.Certificate) -> bytes:
    """DER of a one-certificate request, CertID hashed with SHA-1 as clients send it
    (RFC 5019 §2.1.1)."""
    issuing = custody.ca_certificates_load().issuing
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuing, hashes.SHA1())  # noqa: S303 - CertID as sent
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
