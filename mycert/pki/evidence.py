"""Revocation evidence that only the CA's keys can make: signed CRLs and OCSP answers.

A revocation is one-way (RFC 5280 §3.3, §5.3.1: only ``certificateHold`` may be lifted,
and MyCert never uses it). A worker that signs a CRL or an OCSP answer must therefore
not take the database's word that a certificate is *not* revoked: anyone who can write
to the database could clear a revocation. These functions read what the CA itself
signed before (the previous CRL, a previous "revoked" answer, the certificate), verify
each signature against the issuing CA's certificate, and return only what verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.hashes import HashAlgorithm
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from mycert.pki.crl import RevokedEntry

__all__ = [
    "EvidenceError",
    "VerifiedCrl",
    "certificate_expired",
    "crl_authority_key_id",
    "crl_entry",
    "revoked_answer",
    "verify_crl",
]


class EvidenceError(ValueError):
    """What was offered as signed evidence is not: unreadable, or not signed by the CA."""


@dataclass(frozen=True)
class VerifiedCrl:
    """A CRL whose signature verified with the issuing CA's key."""

    number: int
    this_update: datetime
    crl: x509.CertificateRevocationList = field(repr=False)
    #: Every serial number the CRL lists.
    serials: frozenset[int] = field(repr=False)

    def entry(self, serial_number: int) -> RevokedEntry | None:
        """The CRL's own entry for a serial number (date, reason, invalidity date)."""
        return crl_entry(self.crl, serial_number)


def crl_entry(crl: x509.CertificateRevocationList, serial_number: int) -> RevokedEntry | None:
    """A CRL's own entry for a serial number (date, reason, invalidity date), if listed."""
    revoked = crl.get_revoked_certificate_by_serial_number(serial_number)
    if revoked is None:
        return None
    return _entry_of(revoked)


def _entry_of(revoked: x509.RevokedCertificate) -> RevokedEntry:
    reason: x509.ReasonFlags | None = None
    invalidity: datetime | None = None
    for extension in revoked.extensions:
        if isinstance(extension.value, x509.CRLReason):
            reason = extension.value.reason
        elif isinstance(extension.value, x509.InvalidityDate):
            invalidity = extension.value.invalidity_date_utc
    return RevokedEntry(
        serial_number=revoked.serial_number,
        revoked_at=revoked.revocation_date_utc,
        reason=reason,
        invalidity_date=invalidity,
    )


def verify_crl(der: bytes, issuer: x509.Certificate) -> VerifiedCrl:
    """Parse a CRL and verify that ``issuer`` signed it; raise :class:`EvidenceError` if not."""
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise EvidenceError(f"it is not a DER CRL ({exc})") from exc
    if crl.issuer != issuer.subject:
        raise EvidenceError("it names another issuer")
    # RFC 5280 §6.3.3 (f): the CRL's signature verifies with the issuer's public key.
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise EvidenceError("its signature does not verify with the issuing CA's key")
    try:
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound as exc:
        raise EvidenceError("it has no cRLNumber (RFC 5280 §5.2.3)") from exc
    return VerifiedCrl(
        number=number,
        this_update=crl.last_update_utc,
        crl=crl,
        serials=frozenset(revoked.serial_number for revoked in crl),
    )


def crl_authority_key_id(der: bytes) -> bytes | None:
    """The keyIdentifier of a CRL's AuthorityKeyIdentifier (RFC 5280 §5.2.1), unverified.

    Only to tell which CA a CRL claims to be from (after an issuing-CA rollover the
    latest stored CRL is the previous CA's); ``None`` if it cannot be read.
    """
    try:
        crl = x509.load_der_x509_crl(der)
        return crl.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except (ValueError, x509.ExtensionNotFound):
        return None


def _verify(
    public_key: object, signature: bytes, data: bytes, algorithm: HashAlgorithm | None
) -> bool:
    if algorithm is None:
        return False
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def revoked_answer(der: bytes, issuer: x509.Certificate, serial_number: int) -> RevokedEntry | None:
    """The revocation a stored OCSP answer attests, if it is a signed "revoked" answer.

    Signed by the issuing CA itself or by a responder it certified for OCSP signing
    (RFC 6960 §4.2.2.2), for ``serial_number``. Anything else (unreadable, "good",
    another serial, a signature that does not verify) is no evidence: ``None``.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        if response.serial_number != serial_number:
            return None
        if response.certificate_status is not ocsp.OCSPCertStatus.REVOKED:
            return None
        signer = issuer
        if response.certificates:
            signer = response.certificates[0]
            if not _signed_by(signer, issuer):
                return None
            usage = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.OCSP_SIGNING not in usage:
                return None
        if not _verify(
            signer.public_key(),
            response.signature,
            response.tbs_response_bytes,
            response.signature_hash_algorithm,
        ):
            return None
        revoked_at = response.revocation_time_utc
        if revoked_at is None:
            return None
        return RevokedEntry(
            serial_number=serial_number,
            revoked_at=revoked_at,
            reason=response.revocation_reason,
        )
    except (ValueError, x509.ExtensionNotFound):
        return None


def certificate_expired(
    pem: str, issuer: x509.Certificate, serial_number: int, now: datetime
) -> bool:
    """Whether the CA's own certificate ``pem`` for this serial has expired at ``now``.

    ``False`` whenever that cannot be proven (unreadable, another serial, not signed by
    the issuer): a CRL entry is dropped only once the certificate has expired (RFC 5280
    §3.3), and only the certificate itself says when that is.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return False
    if certificate.serial_number != serial_number or not _signed_by(certificate, issuer):
        return False
    return certificate.not_valid_after_utc <= now
