"""The mutual-TLS self-check: is the certificate a browser or program presents a working one?

nginx terminates TLS with ``ssl_verify_client optional_no_ca`` (every case reaches the
page) and hands the client certificate over in a header; nothing nginx says is believed.
:func:`check_certificate` decides, in this order, each answer precise enough to act on:

1. ``no_certificate``: nothing was presented.
2. ``unknown_issuer``: not signed by MyCert's issuing CA. Only past this point is anything
   the certificate says (name, professional identifier) shown.
3. ``wrong_usage``: a MyCert certificate without the clientAuth EKU (RFC 5280 §4.2.1.12).
4. ``unknown_issuer`` again: not a valid path up to MyCert's root (cryptography's client
   verifier, RFC 5280 §6).
5. ``revoked``: revoked in our database, with when and why (``superseded`` when a newer
   certificate replaced it). The database, not a CRL: it is the source of the CRL and
   OCSP and knows of a revocation the moment it commits. Revoked wins over expired: it is
   the more definite fact.
6. ``expired`` / ``not_yet_valid``: outside notBefore..notAfter.
7. ``unknown_issuer`` once more: signed by our key but absent from our database (or with
   another fingerprint), logged as an error: that should never happen.
8. ``ok``.

cryptography's verifier reports every failure as one ``VerificationError`` with a
message (no codes), so the signature, EKU and validity checks that name a reason are done
here first; the verifier then runs at a time inside the certificate's validity, so that it
judges only the path (signatures, CA constraints, key usages) and not the clock. (MyCert
never issues a certificate that outlives its issuer, so an expired MyCert certificate was
valid, path and all, at some time the verifier can be asked about.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from django.db import transaction

from mycert import custody
from mycert.models import AuditEvent, Certificate
from mycert.services.audit import audit_record

__all__ = [
    "CheckResult",
    "CheckStatus",
    "certificate_from_header",
    "check_certificate",
    "selfcheck_record",
]

logger = logging.getLogger(__name__)

# A PEM certificate is 1–3 kB; nginx URL-escapes it (×~1.3). Anything far larger is not one.
MAX_HEADER_CHARS = 32 * 1024


class CheckStatus(StrEnum):
    OK = "ok"
    NO_CERTIFICATE = "no_certificate"
    UNKNOWN_ISSUER = "unknown_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    WRONG_USAGE = "wrong_usage"


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    serial: str | None = None
    #: Identity fields are filled only for certificates MyCert issued (signature checked).
    professional_id: str | None = None
    holder_name: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    #: RFC 5280 §5.3.1 reason name (``superseded``, ``keyCompromise``…) when revoked.
    reason: str | None = None
    certificate_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The body of ``status.json`` (the fields vendors' scripts read; issue #15)."""
        return {
            "status": self.status.value,
            "serial": self.serial,
            "professional_id": self.professional_id,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }


def certificate_from_header(value: str) -> x509.Certificate | None:
    """Read nginx's ``$ssl_client_escaped_cert`` (URL-escaped PEM); empty means none.

    Raise ``ValueError`` when the value is not one PEM certificate.
    """
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_HEADER_CHARS:
        raise ValueError("The client certificate header is too large.")
    return x509.load_pem_x509_certificate(unquote(value).encode("ascii", errors="strict"))


def _name(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _has_client_auth(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        # RFC 5280 §4.2.1.12 would allow any use without the extension; MyCert always
        # writes it, and relying services are told to require clientAuth.
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage


def check_certificate(*, certificate: x509.Certificate | None, now: datetime) -> CheckResult:
    """Decide what the presented ``certificate`` is worth at ``now`` (module docstring)."""
    if certificate is None:
        return CheckResult(CheckStatus.NO_CERTIFICATE)
    serial = format(certificate.serial_number, "x")
    loaded = custody.ca_certificates_load()
    try:
        certificate.verify_directly_issued_by(loaded.issuing)
    except (ValueError, TypeError, InvalidSignature):
        return CheckResult(CheckStatus.UNKNOWN_ISSUER, serial=serial)

    # Signed by MyCert's issuing CA: its subject is MyCert's own writing, and may be shown.
    mycert = CheckResult(
        CheckStatus.OK,
        serial=serial,
        professional_id=_name(certificate, NameOID.SERIAL_NUMBER),
        holder_name=_name(certificate, NameOID.COMMON_NAME),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )
    if not _has_client_auth(certificate):
        return replace(mycert, status=CheckStatus.WRONG_USAGE)
    # A time when the whole path is within its validity: the clock is judged below, alone.
    path = (certificate, loaded.issuing, loaded.root)
    earliest = max(c.not_valid_before_utc for c in path)
    latest = min(c.not_valid_after_utc for c in path)
    at = max(earliest, min(now, latest))
    try:
        PolicyBuilder().store(Store([loaded.root])).time(at).build_client_verifier().verify(
            certificate, [loaded.issuing]
        )
    except VerificationError as exc:
        logger.info("self-check: path validation of %s failed: %s", serial, exc)
        return CheckResult(CheckStatus.UNKNOWN_ISSUER, serial=serial)

    record = (
        Certificate.objects.filter(serial=serial)
        .only("pk", "fingerprint_sha256", "revoked_at", "revocation_reason")
        .first()
    )
    if (
        record is not None
        and record.fingerprint_sha256 != certificate.fingerprint(hashes.SHA256()).hex()
    ):
        record = None
    if record is not None and record.revoked_at is not None:
        return replace(
            mycert,
            status=CheckStatus.REVOKED,
            revoked_at=record.revoked_at,
            reason=record.revocation_reason or "unspecified",
            certificate_id=record.pk,
        )
    mycert = replace(mycert, certificate_id=record.pk if record is not None else None)
    if now > certificate.not_valid_after_utc:
        return replace(mycert, status=CheckStatus.EXPIRED)
    if now < certificate.not_valid_before_utc:
        return replace(mycert, status=CheckStatus.NOT_YET_VALID)
    if record is None:
        # Signed by our issuing key, yet not in our database: a copy of the key or a
        # restored database would look like this. Never "ok".
        logger.error("self-check: certificate %s is signed by MyCert but unknown to it", serial)
        return CheckResult(CheckStatus.UNKNOWN_ISSUER, serial=serial)
    return mycert


@transaction.atomic
def selfcheck_record(*, result: CheckResult) -> None:
    """Write the audit event of one self-check: serial and result, no personal data."""
    # Only the model and primary key name the event's object: no query needed.
    target = Certificate(pk=result.certificate_id) if result.certificate_id is not None else None
    audit_record(
        actor="anonymous",
        action=AuditEvent.Action.SELFCHECK_CHECKED,
        target=target,
        details={"serial": result.serial, "result": result.status.value},
    )
