"""Certificate revocation lists (RFC 5280 §5)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

from cryptography import x509

from mycert.pki._checks import require_aware_utc, require_ca
from mycert.pki.ca import (
    CertificateAuthority,
    authority_key_identifier,
    signature_hash,
)

__all__ = ["RevokedEntry", "build_crl"]

# RFC 5280 §5.2.3: cRLNumber is a non-negative INTEGER of at most 20 octets.
_MAX_CRL_NUMBER = 2**159 - 1


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as it appears in the CRL."""

    serial_number: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None
    invalidity_date: datetime | None = None
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        # Computed once: entries are cache keys on every re-signing (100k lookups).
        return self._hash

    def __post_init__(self) -> None:
        if isinstance(self.serial_number, bool) or not isinstance(self.serial_number, int):
            raise TypeError(
                f"serial_number must be an int, not {type(self.serial_number).__name__}"
            )
        if not 0 < self.serial_number < 2**160:
            # Up to 20 octets (RFC 5280 §4.1.2.2); 160 bits tolerates imported CAs.
            raise ValueError(
                f"serial_number must be positive and at most 160 bits, got {self.serial_number}"
            )
        # Frozen dataclass: store the UTC-normalised values through object.__setattr__.
        object.__setattr__(self, "revoked_at", require_aware_utc(self.revoked_at, "revoked_at"))
        if self.reason is not None:
            if not isinstance(self.reason, x509.ReasonFlags):
                raise TypeError(
                    f"reason must be an x509.ReasonFlags, not {type(self.reason).__name__}"
                )
            # removeFromCRL belongs to delta CRLs only (RFC 5280 §5.3.1).
            if self.reason is x509.ReasonFlags.remove_from_crl:
                raise ValueError("reason removeFromCRL is only meaningful in delta CRLs")
        if self.invalidity_date is not None:
            object.__setattr__(
                self,
                "invalidity_date",
                require_aware_utc(self.invalidity_date, "invalidity_date"),
            )
        object.__setattr__(
            self,
            "_hash",
            hash((self.serial_number, self.revoked_at, self.reason, self.invalidity_date)),
        )


# A CRL is re-signed over mostly the same entries (on every revocation, and hourly):
# each entry's DER object is built once per process and reused. Entries are immutable
# values (a frozen dataclass), so a cached object is always the right one; ~0.5 kB per
# entry, bounded.
_REVOKED_CACHE_SIZE = 2**17


@functools.lru_cache(maxsize=_REVOKED_CACHE_SIZE)
def _revoked_certificate(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial_number)
        .revocation_date(entry.revoked_at)
    )
    # RFC 5280 §5.3.1: "unspecified" SHOULD be expressed by omitting reasonCode.
    if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
    if entry.invalidity_date is not None:
        # RFC 5280 §5.3.2: when the key is known or suspected to have been compromised.
        builder = builder.add_extension(x509.InvalidityDate(entry.invalidity_date), critical=False)
    return builder.build()


def build_crl(
    *,
    issuer: CertificateAuthority,
    entries: Iterable[RevokedEntry],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """Build and sign a complete v2 CRL listing ``entries``."""
    if not isinstance(issuer, CertificateAuthority):
        raise TypeError(f"issuer must be a CertificateAuthority, not {type(issuer).__name__}")
    require_ca(issuer.certificate, usage="crl_sign")
    if isinstance(crl_number, bool) or not isinstance(crl_number, int):
        raise TypeError(f"crl_number must be an int, not {type(crl_number).__name__}")
    if not 0 <= crl_number <= _MAX_CRL_NUMBER:
        raise ValueError(f"crl_number must be between 0 and 2**159 - 1, got {crl_number}")
    this_update = require_aware_utc(this_update, "this_update")
    next_update = require_aware_utc(next_update, "next_update")
    if next_update <= this_update:
        raise ValueError(
            f"next_update ({next_update.isoformat()}) must be after "
            f"this_update ({this_update.isoformat()})"
        )

    # Checked list-wide rather than entry by entry: the same rules, a third of the time
    # at 100k entries; _raise_for_entry walks the list only to name the offending entry.
    listed = list(entries)
    if not all(isinstance(entry, RevokedEntry) for entry in listed):
        _raise_for_entry(listed, this_update)
    serials = {entry.serial_number for entry in listed}
    if len(serials) != len(listed) or (
        listed and max(entry.revoked_at for entry in listed) > this_update
    ):
        _raise_for_entry(listed, this_update)
    revoked = [_revoked_certificate(entry) for entry in listed]

    # The whole list goes to the constructor: add_revoked_certificate() copies the
    # list each call, which is quadratic (~8 s for 100k entries, docs/architecture.md « Known
    # pitfalls »).
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.certificate.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=[
            # RFC 5280 §5.2.1 and §5.2.3: both MUST be present in conforming CRLs.
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                authority_key_identifier(issuer.certificate),
            ),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
        ],
        revoked_certificates=revoked,
    )
    return builder.sign(issuer.private_key, signature_hash(issuer.private_key))


def _raise_for_entry(entries: list[RevokedEntry], this_update: datetime) -> NoReturn:
    """Raise the error of the first entry ``build_crl`` cannot list."""
    seen: set[int] = set()
    for entry in entries:
        if not isinstance(entry, RevokedEntry):
            raise TypeError(f"entries must be RevokedEntry objects, not {type(entry).__name__}")
        if entry.serial_number in seen:
            raise ValueError(f"serial number {entry.serial_number:#x} is listed twice")
        if entry.revoked_at > this_update:
            raise ValueError(
                f"serial number {entry.serial_number:#x} is revoked at "
                f"{entry.revoked_at.isoformat()}, after this_update"
            )
        seen.add(entry.serial_number)
    raise AssertionError("unreachable: an entry failed the list-wide checks")
