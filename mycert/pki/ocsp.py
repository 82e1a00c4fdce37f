"""OCSP: parse requests, build delegated-responder responses (RFC 6960, RFC 8954)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from mycert.pki._checks import require_aware_utc
from mycert.pki.ca import CertificateAuthority, signature_hash

__all__ = [
    "CertificateStatus",
    "OcspQuery",
    "StatusAnswer",
    "build_ocsp_response",
    "error_response",
    "issued_by",
    "parse_ocsp_request",
]

# RFC 8954 §2.1: a nonce is 1 to 32 octets; longer ones must be refused with
# malformedRequest.
_MAX_NONCE_LENGTH = 32

# Everything pyca may raise for hostile input. Parsing is lazy: the CertID fields and
# extensions are decoded on first access, so those accesses sit inside the guard too.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    NotImplementedError,  # more than one Request in requestList
    UnsupportedAlgorithm,  # unknown CertID hash algorithm
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class CertificateStatus(StrEnum):
    """The three certStatus values (RFC 6960 §2.2)."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


_CERT_STATUS = {
    CertificateStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertificateStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertificateStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


@dataclass(frozen=True)
class StatusAnswer:
    """What the database says about one serial number."""

    status: CertificateStatus
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, CertificateStatus):
            raise TypeError(f"status must be a CertificateStatus, not {type(self.status).__name__}")
        if self.reason is not None and not isinstance(self.reason, x509.ReasonFlags):
            raise TypeError(f"reason must be an x509.ReasonFlags, not {type(self.reason).__name__}")
        if self.status is CertificateStatus.REVOKED:
            if self.revoked_at is None:
                raise ValueError("a revoked status needs revoked_at")
            object.__setattr__(self, "revoked_at", require_aware_utc(self.revoked_at, "revoked_at"))
        elif self.revoked_at is not None or self.reason is not None:
            raise ValueError(
                f"revoked_at and reason are only allowed for REVOKED, not {self.status}"
            )


@dataclass(frozen=True)
class OcspQuery:
    """The single CertID (and nonce) asked about in an OCSP request."""

    serial_number: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None
    request: ocsp.OCSPRequest


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """Parse a DER OCSPRequest; raise ValueError if it is malformed or unsupported."""
    if not isinstance(der, bytes | bytearray | memoryview):
        raise TypeError(f"der must be bytes, not {type(der).__name__}")
    try:
        request = ocsp.load_der_ocsp_request(bytes(der))
        algorithm = request.hash_algorithm
        query_fields = (
            request.serial_number,
            request.issuer_name_hash,
            request.issuer_key_hash,
        )
        try:
            nonce: bytes | None = request.extensions.get_extension_for_class(
                x509.OCSPNonce
            ).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
    except _PARSE_ERRORS as exc:
        raise ValueError(f"malformed or unsupported OCSP request: {exc}") from exc
    serial_number, name_hash, key_hash = query_fields
    # pyca does not tie the hash lengths to the algorithm; a mismatch is malformed
    # (RFC 6960 §4.1.1: both are hashes computed with hashAlgorithm).
    if len(name_hash) != algorithm.digest_size or len(key_hash) != algorithm.digest_size:
        raise ValueError(f"malformed OCSP request: CertID hashes are not {algorithm.name} digests")
    if serial_number <= 0:
        raise ValueError("malformed OCSP request: the serial number is not positive")
    if nonce is not None and not 1 <= len(nonce) <= _MAX_NONCE_LENGTH:
        raise ValueError(
            f"malformed OCSP request: nonce of {len(nonce)} octets "
            f"(RFC 8954 allows 1 to {_MAX_NONCE_LENGTH})"
        )
    return OcspQuery(
        serial_number=serial_number,
        issuer_name_hash=name_hash,
        issuer_key_hash=key_hash,
        hash_algorithm=algorithm,
        nonce=nonce,
        request=request,
    )


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    cls.name: cls
    for cls in (hashes.SHA1, hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)
}


@functools.lru_cache(maxsize=32)
def _issuer_hashes(
    issuer_certificate: x509.Certificate, algorithm_name: str
) -> tuple[bytes, bytes]:
    # RFC 6960 §4.1.1: issuerNameHash hashes the DER of the issuer's name (the CA's
    # subject), issuerKeyHash the value of its subjectPublicKey BIT STRING.
    # Cached: the OCSP path calls this for every request.
    algorithm = _HASHES[algorithm_name]()
    name_digest = hashes.Hash(algorithm)
    name_digest.update(issuer_certificate.subject.public_bytes())
    # pyca's request builder hashes the issuer's subjectPublicKey exactly as the
    # certificate encodes it; borrowing it avoids hand-parsing the SPKI DER. (The
    # name hash it would give is of the CA's own issuer, hence computed above.)
    probe = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issuer_certificate, issuer_certificate, algorithm)
        .build()
    )
    return name_digest.finalize(), probe.issuer_key_hash


def issued_by(query: OcspQuery, issuer_certificate: x509.Certificate) -> bool:
    """Tell whether the query's CertID names ``issuer_certificate`` as issuer."""
    if not isinstance(query, OcspQuery):
        raise TypeError(f"query must be an OcspQuery, not {type(query).__name__}")
    if not isinstance(issuer_certificate, x509.Certificate):
        raise TypeError(
            "issuer_certificate must be an x509.Certificate, "
            f"not {type(issuer_certificate).__name__}"
        )
    if query.hash_algorithm.name not in _HASHES:
        return False
    name_hash, key_hash = _issuer_hashes(issuer_certificate, query.hash_algorithm.name)
    return query.issuer_name_hash == name_hash and query.issuer_key_hash == key_hash


@functools.lru_cache(maxsize=16)
def _check_responder(responder: x509.Certificate, issuer_certificate: x509.Certificate) -> None:
    # RFC 6960 §4.2.2.2: a delegated responder's certificate is issued directly by the
    # CA and carries id-kp-OCSPSigning; clients reject anything else, so refuse early.
    # Cached: only successes are remembered, failures raise each time.
    if responder == issuer_certificate:
        return
    if responder.issuer != issuer_certificate.subject:
        raise ValueError("the responder certificate was not issued by issuer_certificate")
    try:
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise ValueError("the responder certificate lacks id-kp-OCSPSigning")


def build_ocsp_response(
    *,
    query: OcspQuery,
    issuer_certificate: x509.Certificate,
    responder: CertificateAuthority,
    answer: StatusAnswer,
    now: datetime,
    validity: timedelta = timedelta(hours=1),
) -> bytes:
    """Build a signed, successful DER OCSPResponse answering ``query``."""
    if not isinstance(responder, CertificateAuthority):
        raise TypeError(f"responder must be a CertificateAuthority, not {type(responder).__name__}")
    if not isinstance(answer, StatusAnswer):
        raise TypeError(f"answer must be a StatusAnswer, not {type(answer).__name__}")
    if not isinstance(validity, timedelta):
        raise TypeError(f"validity must be a timedelta, not {type(validity).__name__}")
    if validity <= timedelta(0):
        raise ValueError(f"validity must be positive, got {validity}")
    now = require_aware_utc(now, "now")
    if not issued_by(query, issuer_certificate):
        raise ValueError("the query's CertID does not name issuer_certificate as issuer")
    _check_responder(responder.certificate, issuer_certificate)
    if (
        not responder.certificate.not_valid_before_utc
        <= now
        <= responder.certificate.not_valid_after_utc
    ):
        raise ValueError(
            "the responder certificate is not valid at now "
            f"(valid until {responder.certificate.not_valid_after_utc.isoformat()})"
        )

    builder = (
        ocsp.OCSPResponseBuilder()
        # Echo the request's CertID as sent: same hash algorithm and hashes, so
        # clients matching on CertID (RFC 6960 §4.2.1) find their answer, SHA-256 too.
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial_number,
            algorithm=query.hash_algorithm,
            cert_status=_CERT_STATUS[answer.status],
            this_update=now,
            next_update=now + validity,
            revocation_time=answer.revoked_at,
            revocation_reason=answer.reason,
        )
        # ResponderID byKey (RFC 6960 §4.2.1): SHA-1 of the responder's public key.
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        # The delegated responder's certificate travels in `certs` so clients can
        # check its link to the CA (RFC 6960 §4.2.2.2).
        .certificates([responder.certificate])
    )
    if query.nonce is not None:
        # RFC 8954 §2.1 / RFC 6960 §4.4.1: echo the nonce to defeat replay.
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    # pyca stamps producedAt with the current clock itself; thisUpdate is `now`.
    response = builder.sign(responder.private_key, signature_hash(responder.private_key))
    return response.public_bytes(serialization.Encoding.DER)


def error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """Build an unsigned OCSP error response (malformedRequest, unauthorized, …)."""
    if not isinstance(status, ocsp.OCSPResponseStatus):
        raise TypeError(f"status must be an OCSPResponseStatus, not {type(status).__name__}")
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValueError("error_response needs an error status, not SUCCESSFUL")
    # RFC 6960 §2.3: error responses carry no responseBytes and are not signed.
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)
