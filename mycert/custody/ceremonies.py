"""The root's ceremonies, on the offline root host.

The root CRL, the root's OCSP answers on the issuing CA certificates (whole-chain
OCSP), the issuing CA's renewal, and its revocation (a root CRL entry).

Each one needs the root key (:func:`~mycert.custody.loading.root_load`), never held by
a worker, and writes public files only, for the operator to copy to every host.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from mycert.custody.addresses import root_ca_url, root_crl_url
from mycert.custody.errors import CustodyError
from mycert.custody.files import (
    ROOT_OCSP_DIRECTORY,
    CaPaths,
    ca_paths,
    certificate_pem,
    issuing_certificates,
    public_file_replace,
    public_file_write,
    root_ocsp_path,
)
from mycert.custody.loading import ca_certificates_load, cache_clear, root_load
from mycert.pki import (
    CertificateAuthority,
    CertificateStatus,
    build_crl,
    reissue_issuing_ca,
)
from mycert.pki.crl import RevokedEntry
from mycert.pki.ocsp import StatusAnswer
from mycert.pki.ocsp_presigned import sign_ca_status_responses

__all__ = [
    "ROOT_CRL_VALIDITY",
    "crl_entries",
    "issuing_ca_renew",
    "root_crl_der",
    "root_crl_entries",
    "root_crl_number_current",
    "root_crl_number_next",
    "root_crl_sign",
    "root_ocsp_write",
]

ROOT_CRL_VALIDITY = timedelta(days=365)


def root_crl_number_current(paths: CaPaths) -> int:
    """The cRLNumber of the root CRL on disk (0 when there is none)."""
    try:
        data = paths.root_crl.read_bytes()
    except FileNotFoundError:
        return 0
    try:
        crl = x509.load_der_x509_crl(data)
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise CustodyError(f"The root CRL at {paths.root_crl} is unreadable: {exc}") from exc


def root_crl_number_next(previous: int, *, now: datetime) -> int:
    """The root CRL's next cRLNumber: above the previous one and at least Unix time.

    RFC 5280 §5.2.3 wants it to increase for as long as the root signs CRLs. Time keeps
    it increasing with no state at all: after `init_ca --import` of a root whose old
    CRLs are elsewhere, or a lost root.crl, the number still beats every earlier one.
    """
    return max(previous + 1, int(now.timestamp()))


def root_crl_der(
    root: CertificateAuthority,
    *,
    now: datetime,
    crl_number: int,
    entries: Sequence[RevokedEntry] = (),
) -> bytes:
    crl = build_crl(
        issuer=root,
        entries=entries,
        crl_number=crl_number,
        this_update=now,
        next_update=now + ROOT_CRL_VALIDITY,
    )
    return crl.public_bytes(serialization.Encoding.DER)


def root_crl_sign(
    *,
    now: datetime,
    root_key_path: Path | None = None,
    revoke_issuing: tuple[int, x509.ReasonFlags] | None = None,
) -> int:
    """Re-sign root.crl with the next cRLNumber (RFC 5280 §5.2.3); return that number.

    The entries of the root CRL on disk are carried over (a revoked issuing CA stays
    revoked), ``revoke_issuing`` (serial, reason) adds one, and the root's own OCSP
    answers on the issuing CA certificates are signed again with the CRL's validity
    (``root-ocsp/``, served by the web's responder for whole-chain checking).
    """
    paths = ca_paths()
    root = root_load(root_key_path=root_key_path)
    entries = root_crl_entries(paths, root.certificate)
    if revoke_issuing is not None:
        serial, reason = revoke_issuing
        if not any(entry.serial_number == serial for entry in entries):
            # The moment of the ceremony: the root host knows no earlier compromise
            # time; RFC 5280 §5.3.2's invalidityDate is for that, not given here.
            entries.append(
                RevokedEntry(
                    serial_number=serial, revoked_at=now.replace(microsecond=0), reason=reason
                )
            )
    number = root_crl_number_next(root_crl_number_current(paths), now=now)
    public_file_replace(
        paths.root_crl, root_crl_der(root, now=now, crl_number=number, entries=entries)
    )
    root_ocsp_write(paths, root, entries=entries, now=now)
    cache_clear()
    return number


def root_crl_entries(paths: CaPaths, root_certificate: x509.Certificate) -> list[RevokedEntry]:
    """The entries of the root CRL on disk, which must be the root's own (none if absent)."""
    try:
        data = paths.root_crl.read_bytes()
    except FileNotFoundError:
        return []
    try:
        crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CustodyError(f"The root CRL at {paths.root_crl} is unreadable: {exc}") from exc
    if crl.issuer != root_certificate.subject or not crl.is_signature_valid(
        root_certificate.public_key()  # type: ignore[arg-type]
    ):
        # Carrying its entries over would let a forged file un-revoke an issuing CA.
        raise CustodyError(f"The root CRL at {paths.root_crl} was not signed by this root.")
    return crl_entries(crl)


def crl_entries(crl: x509.CertificateRevocationList) -> list[RevokedEntry]:
    entries = []
    for revoked in crl:
        try:
            reason: x509.ReasonFlags | None = revoked.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            reason = None
        entries.append(
            RevokedEntry(
                serial_number=revoked.serial_number,
                revoked_at=revoked.revocation_date_utc,
                reason=reason,
            )
        )
    return entries


def root_ocsp_write(
    paths: CaPaths, root: CertificateAuthority, *, entries: Sequence[RevokedEntry], now: datetime
) -> None:
    """Sign the root's answer on every issuing CA certificate, valid as long as its CRL."""
    revoked = {entry.serial_number: entry for entry in entries}
    serials = {c.serial_number for c in issuing_certificates(paths, root.certificate)}
    serials |= set(revoked)
    this_update = now.replace(microsecond=0)
    directory = paths.directory / ROOT_OCSP_DIRECTORY
    directory.mkdir(mode=0o755, exist_ok=True)
    written = set()
    for serial in sorted(serials):
        entry = revoked.get(serial)
        answer = (
            StatusAnswer(CertificateStatus.GOOD)
            if entry is None
            else StatusAnswer(
                CertificateStatus.REVOKED, revoked_at=entry.revoked_at, reason=entry.reason
            )
        )
        signed = sign_ca_status_responses(
            root=root,
            serial_number=serial,
            answer=answer,
            this_update=this_update,
            next_update=this_update + ROOT_CRL_VALIDITY,
        )
        for hash_name, der in signed.items():
            path = root_ocsp_path(paths, serial, hash_name)
            public_file_replace(path, der)
            written.add(path)
    for stale in directory.glob("*.der"):
        if stale not in written:
            stale.unlink()


def issuing_ca_renew(*, now: datetime, root_key_path: Path | None = None) -> x509.Certificate:
    """Re-issue the issuing CA's certificate by the root, same key, current profile.

    This is how an existing CA gets CertificatePolicies and AIA caIssuers. The same key
    keeps every certificate already issued, every CRL and OCSP answer valid. Needs the
    root key and issuing.pem only: it runs on the offline root host.
    """
    paths = ca_paths()
    root = root_load(root_key_path=root_key_path)
    current = ca_certificates_load().issuing
    renewed = reissue_issuing_ca(
        root=root,
        current=current,
        now=now,
        crl_url=root_crl_url(),
        policy_oid=settings.MYCERT_CERT_POLICY_OID,
        ca_issuers_url=root_ca_url(),
    )
    # Keep the previous certificate beside it: relying parties may still send it.
    previous = paths.directory / f"issuing-{current.serial_number:x}.pem"
    if not previous.exists():
        public_file_write(previous, certificate_pem(current))
    public_file_replace(paths.issuing_cert, certificate_pem(renewed))
    # The renewed certificate's serial needs the root's answer too (whole-chain OCSP).
    root_ocsp_write(paths, root, entries=root_crl_entries(paths, root.certificate), now=now)
    cache_clear()
    return renewed
