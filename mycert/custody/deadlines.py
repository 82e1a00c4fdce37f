"""What a ceremony (or beat) must renew before it runs out, from public files only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from mycert.custody.errors import CustodyError
from mycert.custody.files import ca_paths, file_read
from mycert.custody.loading import ca_certificates_load
from mycert.custody.responder import OCSP_RESPONDER_WARNING

__all__ = ["EXPIRY_WARNING", "Deadline", "ceremony_deadlines"]

# /healthz and /metrics warn this long before the root CRL, the responder or the CA ends.
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Deadline:
    """Something a ceremony (or beat) must renew before it runs out."""

    name: str
    expires: datetime
    warn_before: timedelta = EXPIRY_WARNING

    def due(self, now: datetime) -> bool:
        """Whether the warning is on: the end is within ``warn_before``."""
        return self.expires - now <= self.warn_before


def ceremony_deadlines() -> list[Deadline]:
    """The root CRL's nextUpdate, the OCSP responder's and the issuing CA's notAfter.

    Public files only: a web host without any secret can report them.
    """
    paths = ca_paths()
    certificates = ca_certificates_load()
    responder = x509.load_pem_x509_certificate(
        file_read(paths.ocsp_cert, "OCSP responder certificate")
    )
    deadlines = [
        Deadline("issuing_ca", certificates.issuing.not_valid_after_utc),
        Deadline("ocsp_responder", responder.not_valid_after_utc, OCSP_RESPONDER_WARNING),
    ]
    try:
        root_crl = x509.load_der_x509_crl(file_read(paths.root_crl, "root CRL"))
    except ValueError as exc:
        raise CustodyError(f"The root CRL at {paths.root_crl} is unreadable.") from exc
    if root_crl.next_update_utc is not None:
        deadlines.append(Deadline("root_crl", root_crl.next_update_utc))
    return deadlines
