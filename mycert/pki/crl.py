"""Certificate revocation lists (RFC 5280 §5)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mycert.pki._checks import require_aware_utc, require_ca
from mycert.pki.ca import (
    CertificateAuthority,
    authority_key_identifier,
    signature_hash,
)
from mycert.pki.keys import PrivateKey

__all__ = ["RevokedEntry", "build_crl", "build_next_crl", "crl_key_compromises"]

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
    builder = _builder(issuer, entries, crl_number, this_update, next_update)
    return builder.sign(issuer.private_key, signature_hash(issuer.private_key))


def build_next_crl(
    *,
    issuer: CertificateAuthority,
    previous_der: bytes,
    dropped: AbstractSet[int],
    added: Iterable[RevokedEntry],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """The DER of the CRL that follows ``previous_der``: its entries, as signed, minus the
    serial numbers in ``dropped``, then ``added``; signed by ``issuer``.

    Re-signing over mostly the same entries (on every revocation, and hourly) then costs
    no per-entry work unless some entry is dropped: the previous CRL's revokedCertificates
    are copied as bytes. The caller vouches for ``previous_der`` (a CRL this issuer signed,
    verified) and for the rest of RFC 5280 §5.1.2.6: no serial of ``added`` is already
    listed, and ``this_update`` is not before the previous CRL's (so no copied entry's
    revocationDate is after it, §5.1.2.4).

    pyca/cryptography encodes everything but the copied bytes: the header and the added
    entries are built by the same builder as :func:`build_crl`, signed with a throwaway
    key of the issuer's kind, whose signature is discarded; the To-Be-Signed bytes, with
    the copied entries spliced in, are then signed with the issuer's key. With nothing
    added (the hourly re-signing) there is no draft: the fields only the issuer decides
    come from its first one (:class:`_Fixed`), and the dates and the number are encoded
    as the builder encodes them. With the same entries (and an RSA key, whose PKCS #1
    v1.5 signatures are deterministic) the result is byte for byte the one
    :func:`build_crl` signs.
    """
    added = list(added)
    key = issuer.private_key
    if added:
        draft_der = (
            _builder(issuer, added, crl_number, this_update, next_update)
            .sign(_throwaway_key(key), signature_hash(key))
            .public_bytes(_DER)
        )
        header_at, draft_revoked, extensions_at = _tbs_fields(draft_der)
        header: list[bytes | memoryview] = [draft_der[start:end] for start, end in header_at]
        extensions: list[bytes | memoryview] = [
            draft_der[start:end] for start, end in extensions_at
        ]
        algorithm = _signature_algorithm(draft_der)
    else:
        this_update, next_update = _checked(issuer, crl_number, this_update, next_update)
        fixed = _fixed(issuer)
        header = [fixed.lead, _time(this_update), _time(next_update)]
        extensions = [fixed.extensions(crl_number)]
        algorithm = fixed.algorithm
        draft_revoked = None
    _, previous_revoked, _ = _tbs_fields(previous_der)
    previous = memoryview(previous_der)
    entries: list[bytes | memoryview] = []
    if previous_revoked is not None:
        start, end = previous_revoked
        entries += _without(previous, start, end, dropped) if dropped else [previous[start:end]]
    if draft_revoked is not None:
        entries.append(draft_der[draft_revoked[0] : draft_revoked[1]])
    parts = header
    if any(len(chunk) for chunk in entries):
        # RFC 5280 §5.1.2.6: absent, not empty, when nothing is listed.
        parts.append(_encode(_SEQUENCE, entries))
    parts += extensions
    tbs = _encode(_SEQUENCE, parts)
    return _encode(
        _SEQUENCE,
        [
            tbs,
            algorithm,
            # RFC 5280 §5.1.1.3: the signature, a BIT STRING with no unused bits.
            _encode(_BIT_STRING, [b"\x00", _sign(key, tbs)]),
        ],
    )


def _signature_algorithm(der: bytes) -> bytes:
    """The signatureAlgorithm of a DER CertificateList (RFC 5280 §5.1.1.2)."""
    _tbs, (start, end), _signature = _elements(der, *_content(der, 0))
    return der[start:end]


@dataclass(frozen=True)
class _Fixed:
    """What only the issuer decides in its CRLs, as the builder encodes it: version,
    signature algorithm and issuer name (RFC 5280 §5.1.2.1–3), and the crlExtensions,
    where only the cRLNumber changes (§5.2.3)."""

    lead: bytes
    algorithm: bytes
    #: The crlExtensions' Extension elements, the cRLNumber's as ``b""``.
    other_extensions: tuple[bytes, ...]

    def extensions(self, crl_number: int) -> bytes:
        # DER INTEGER: big-endian, a leading zero octet when the high bit is set (X.690
        # §8.3); the extension is not critical, so its critical field is absent (§11.5).
        number = _encode(_INTEGER, [crl_number.to_bytes(crl_number.bit_length() // 8 + 1, "big")])
        extension = _encode(_SEQUENCE, [_CRL_NUMBER, _encode(_OCTET_STRING, [number])])
        listed = [chunk or extension for chunk in self.other_extensions]
        return _encode(_CRL_EXTENSIONS, [_encode(_SEQUENCE, listed)])


#: By issuer certificate: it names the key, and so the signature algorithm.
_FIXED_OF: dict[x509.Certificate, _Fixed] = {}


def _fixed(issuer: CertificateAuthority) -> _Fixed:
    """The issuer's fixed fields, from one draft per process (and issuer)."""
    known = _FIXED_OF.get(issuer.certificate)
    if known is not None:
        return known
    key = issuer.private_key
    moment = datetime(2000, 1, 1, tzinfo=UTC)
    draft = (
        _builder(issuer, [], 1, moment, moment + timedelta(days=1))
        .sign(_throwaway_key(key), signature_hash(key))
        .public_bytes(_DER)
    )
    header, revoked, after = _tbs_fields(draft)
    if revoked is not None or len(header) != 5 or len(after) != 1:
        raise AssertionError(
            "the builder's CRL is not version, signature, issuer, dates, extensions"
        )
    (extensions,) = _elements(draft, *_content(draft, after[0][0]))
    listed = [draft[start:end] for start, end in _elements(draft, *_content(draft, extensions[0]))]
    other = tuple(b"" if _is_crl_number(chunk) else chunk for chunk in listed)
    if other.count(b"") != 1:
        raise AssertionError("the builder's CRL has no cRLNumber")
    fixed = _Fixed(
        lead=b"".join(draft[start:end] for start, end in header[:3]),
        algorithm=_signature_algorithm(draft),
        other_extensions=other,
    )
    _FIXED_OF[issuer.certificate] = fixed
    return fixed


def _is_crl_number(extension: bytes) -> bool:
    return extension[_content(extension, 0)[0] :].startswith(_CRL_NUMBER)


def _time(moment: datetime) -> bytes:
    """thisUpdate or nextUpdate as RFC 5280 §5.1.2.4–5 has them: UTCTime through 2049,
    GeneralizedTime from 2050, whole seconds in UTC (§4.1.2.5.1–2)."""
    if 1950 <= moment.year < 2050:
        return _encode(_UTC_TIME, [moment.strftime("%y%m%d%H%M%SZ").encode("ascii")])
    return _encode(_GENERALIZED_TIME, [moment.strftime("%Y%m%d%H%M%SZ").encode("ascii")])


def _checked(
    issuer: CertificateAuthority, crl_number: int, this_update: datetime, next_update: datetime
) -> tuple[datetime, datetime]:
    """Refuse what no CRL of this issuer may say; the two dates in UTC."""
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
    return this_update, next_update


def _builder(
    issuer: CertificateAuthority,
    entries: Iterable[RevokedEntry],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationListBuilder:
    this_update, next_update = _checked(issuer, crl_number, this_update, next_update)

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
    return x509.CertificateRevocationListBuilder(
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


_DER = serialization.Encoding.DER
_INTEGER, _BIT_STRING, _OCTET_STRING, _SEQUENCE = 0x02, 0x03, 0x04, 0x30
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
# TBSCertList's crlExtensions: [0] EXPLICIT (RFC 5280 §5.1); cRLNumber's extnID
# (id-ce 20, §5.2.3).
_CRL_EXTENSIONS = 0xA0
_CRL_NUMBER = b"\x06\x03\x55\x1d\x14"


def _content(der: bytes | memoryview, offset: int, limit: int | None = None) -> tuple[int, int]:
    """Where the content of the DER element at ``offset`` starts and ends (X.690 §8.1)."""
    limit = len(der) if limit is None else limit
    if offset + 2 > limit:
        raise ValueError("truncated DER element")
    length = der[offset + 1]
    start = offset + 2
    if length & 0x80:
        octets = length & 0x7F
        if not 0 < octets <= 4 or start + octets > limit:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start : start + octets], "big")
        start += octets
    if start + length > limit:
        raise ValueError("truncated DER element")
    return start, start + length


def _elements(der: bytes | memoryview, start: int, end: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each DER element between ``start`` and ``end``."""
    found = []
    while start < end:
        stop = _content(der, start, end)[1]
        found.append((start, stop))
        start = stop
    return found


def _tbs_fields(
    der: bytes,
) -> tuple[list[tuple[int, int]], tuple[int, int] | None, list[tuple[int, int]]]:
    """A v2 CRL's TBSCertList (RFC 5280 §5.1): the fields before revokedCertificates, the
    content of revokedCertificates (``None`` when absent), the fields after it."""
    certificate_list = _elements(der, *_content(der, 0))
    if der[0] != _SEQUENCE or len(certificate_list) != 3:
        raise ValueError("not a DER CertificateList")
    fields = _elements(der, *_content(der, certificate_list[0][0]))
    # version, signature, issuer, thisUpdate, and nextUpdate when present (§5.1.2.5).
    position = 4
    if len(fields) < position or der[fields[0][0]] != _INTEGER:
        raise ValueError("not a v2 TBSCertList")
    if position < len(fields) and der[fields[position][0]] in (_UTC_TIME, _GENERALIZED_TIME):
        position += 1
    if position < len(fields) and der[fields[position][0]] == _SEQUENCE:
        return fields[:position], _content(der, fields[position][0]), fields[position + 1 :]
    return fields[:position], None, fields[position:]


def _without(der: memoryview, start: int, end: int, dropped: AbstractSet[int]) -> list[memoryview]:
    """The revokedCertificates content between ``start`` and ``end`` as runs of entries,
    skipping the entries whose userCertificate is in ``dropped``."""
    runs = []
    run_start = start
    while start < end:
        entry_start, entry_end = _content(der, start, end)
        if der[entry_start] != _INTEGER:
            raise ValueError("a revoked certificate entry does not start with its serial")
        serial_start, serial_end = _content(der, entry_start, entry_end)
        if int.from_bytes(der[serial_start:serial_end], "big", signed=True) in dropped:
            runs.append(der[run_start:start])
            run_start = entry_end
        start = entry_end
    runs.append(der[run_start:end])
    return runs


# RFC 5280 §5.3.1 reasonCode (id-ce 21), as an Extension's extnID and its DER value
# keyCompromise (ENUMERATED 1) wrapped in the extnValue OCTET STRING; §5.3.2
# invalidityDate (id-ce 24).
_REASON_CODE = b"\x06\x03\x55\x1d\x15"
_KEY_COMPROMISE = b"\x04\x03\x0a\x01\x01"
_INVALIDITY_DATE = b"\x06\x03\x55\x1d\x18"


def crl_key_compromises(der: bytes) -> dict[int, datetime | None]:
    """The serial number of every keyCompromise entry of a CRL and its invalidityDate
    (``None`` when absent), by a walk of the DER: entries without extensions (most of
    them) cost two length reads.

    The caller vouches for ``der`` (a CRL whose signature it verified); an entry it cannot
    read raises ``ValueError``.
    """
    _, revoked, _ = _tbs_fields(der)
    found: dict[int, datetime | None] = {}
    if revoked is None:
        return found
    position, end = revoked
    while position < end:
        entry_start, entry_end = _content(der, position, end)
        position = entry_end
        if der[entry_start] != _INTEGER:
            raise ValueError("a revoked certificate entry does not start with its serial")
        serial_start, serial_end = _content(der, entry_start, entry_end)
        date_end = _content(der, serial_end, entry_end)[1]
        if date_end == entry_end:
            continue  # no crlEntryExtensions: no reasonCode
        extensions = _elements(der, *_content(der, date_end, entry_end))
        reason = invalidity = None
        for start, stop in extensions:
            inner = _content(der, start, stop)[0]
            if der.startswith(_REASON_CODE, inner):
                reason = der[inner + len(_REASON_CODE) : stop]
            elif der.startswith(_INVALIDITY_DATE, inner):
                invalidity = der[inner + len(_INVALIDITY_DATE) : stop]
        if reason is None or not reason.endswith(_KEY_COMPROMISE):
            continue
        serial = int.from_bytes(der[serial_start:serial_end], "big", signed=True)
        found[serial] = None if invalidity is None else _generalized_time(invalidity)
    return found


def _generalized_time(value: bytes) -> datetime:
    """The time of an extnValue OCTET STRING holding a GeneralizedTime YYYYMMDDHHMMSSZ
    (RFC 5280 §4.1.2.5.2: seconds, no fraction, Zulu)."""
    # [critical BOOLEAN,] OCTET STRING { GeneralizedTime }: the time is the last 15 octets.
    text = value[-15:]
    if len(value) < 19 or value[-17:-15] != b"\x18\x0f" or not text.endswith(b"Z"):
        raise ValueError("an invalidityDate that is not a GeneralizedTime in UTC")
    return datetime.strptime(text.decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _encode(tag: int, content: Sequence[bytes | memoryview]) -> bytes:
    """One DER element (definite, shortest length: X.690 §10.1)."""
    length = sum(len(chunk) for chunk in content)
    if length < 0x80:
        head = bytes((tag, length))
    else:
        octets = (length.bit_length() + 7) // 8
        head = bytes((tag, 0x80 | octets)) + length.to_bytes(octets, "big")
    return b"".join((head, *content))


def _sign(key: PrivateKey, data: bytes) -> bytes:
    """The signature ``CertificateRevocationListBuilder.sign`` makes with this key."""
    algorithm = signature_hash(key)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algorithm)
    return key.sign(data, ec.ECDSA(algorithm))


def _throwaway_key(key: PrivateKey) -> PrivateKey:
    """A key of the same kind, so that the draft's signature algorithm is the issuer's:
    sha256WithRSAEncryption does not depend on the RSA key's size, nor ECDSA's on the
    curve (the digest is given)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return _throwaway_rsa()
    return _throwaway_ec()


@functools.cache
def _throwaway_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (signatures discarded)


@functools.cache
def _throwaway_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


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
