"""Pre-signed OCSP responses: answers signed ahead of any request (RFC 5019 §2.2.2).

A pre-signed response names the certificate by a CertID computed here, not echoed from
a request, so it is signed once per CertID hash algorithm a client may use (RFC 6960
§4.1.1: the response's CertID must match the request's, hashAlgorithm included). It
carries no nonce: none is known when it is signed (RFC 5019 §4 profile).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mycert.pki._checks import require_aware_utc
from mycert.pki.ca import CertificateAuthority, signature_hash
from mycert.pki.ocsp import _CERT_STATUS, StatusAnswer, _check_responder, _issuer_hashes

__all__ = ["PRESIGNED_HASHES", "sign_ca_status_responses", "sign_presigned_response"]

#: The CertID hash algorithms responses are signed for: SHA-1, which RFC 5019 §2.1.1 and
#: nearly every client use, and SHA-256 (openssl ocsp -sha256, newer clients).
PRESIGNED_HASHES: tuple[str, ...] = ("sha1", "sha256")


def sign_presigned_response(
    *,
    serial_number: int,
    issuer_certificate: x509.Certificate,
    responder: CertificateAuthority,
    answer: StatusAnswer,
    hash_name: str,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """Sign a DER OCSPResponse for one certificate and one CertID hash algorithm."""
    if not isinstance(responder, CertificateAuthority):
        raise TypeError(f"responder must be a CertificateAuthority, not {type(responder).__name__}")
    if not isinstance(answer, StatusAnswer):
        raise TypeError(f"answer must be a StatusAnswer, not {type(answer).__name__}")
    if not isinstance(serial_number, int) or serial_number <= 0:
        raise ValueError(f"serial_number must be a positive int, not {serial_number!r}")
    if hash_name not in PRESIGNED_HASHES:
        raise ValueError(f"hash_name must be one of {PRESIGNED_HASHES}, not {hash_name!r}")
    this_update = require_aware_utc(this_update, "this_update")
    next_update = require_aware_utc(next_update, "next_update")
    if next_update <= this_update:
        raise ValueError("next_update must be later than this_update")
    _check_responder(responder.certificate, issuer_certificate)
    if not (
        responder.certificate.not_valid_before_utc
        <= this_update
        <= responder.certificate.not_valid_after_utc
    ):
        raise ValueError(
            "the responder certificate is not valid at this_update "
            f"(valid until {responder.certificate.not_valid_after_utc.isoformat()})"
        )
    name_hash, key_hash = _issuer_hashes(issuer_certificate, hash_name)
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if hash_name == "sha1" else hashes.SHA256()  # noqa: S303 - CertID, not a signature
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial_number,
            algorithm=algorithm,
            cert_status=_CERT_STATUS[answer.status],
            this_update=this_update,
            next_update=next_update,
            revocation_time=answer.revoked_at,
            revocation_reason=answer.reason,
        )
        # ResponderID byKey (RFC 6960 §4.2.1; RFC 5019 §2.2.3 recommends it).
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        # The delegated responder's certificate travels with it (RFC 6960 §4.2.2.2).
        .certificates([responder.certificate])
        .sign(responder.private_key, signature_hash(responder.private_key))
    )
    return response.public_bytes(serialization.Encoding.DER)


def sign_ca_status_responses(
    *,
    root: CertificateAuthority,
    serial_number: int,
    answer: StatusAnswer,
    this_update: datetime,
    next_update: datetime,
) -> dict[str, bytes]:
    """The root's own answers on one issuing CA certificate, for every CertID hash.

    Whole-chain checking (nginx ``ssl_ocsp on``, Apache ``SSLOCSPEnable on``, Java PKIX
    without ONLY_END_ENTITY) also asks about the issuing CA, whose issuer is the root.
    The root signs these itself (RFC 6960 §4.2.2.2: the CA that issued the certificate
    may sign), at its offline ceremony, so no delegated responder of the root exists
    online. The root certificate travels in ``certs`` for clients that look for the
    signer there only.
    """
    if not isinstance(root, CertificateAuthority):
        raise TypeError(f"root must be a CertificateAuthority, not {type(root).__name__}")
    return {
        name: sign_presigned_response(
            serial_number=serial_number,
            issuer_certificate=root.certificate,
            responder=root,
            answer=answer,
            hash_name=name,
            this_update=this_update,
            next_update=next_update,
        )
        for name in PRESIGNED_HASHES
    }
