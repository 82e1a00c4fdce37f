"""mycert.pki.crl: complete v2 CRLs (RFC 5280 §5) checked by openssl and pkilint."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    RevokedEntry,
    build_crl,
    build_next_crl,
    create_issuing_ca,
)
from tests.pki.helpers import ORGANIZATION, PKI_BASE, pkilint_findings, run_command

KEY_COMPROMISE_SERIAL = 0x5A17_0000_0000_0000_0000_0000_0000_0000_0000_0001
SUPERSEDED_SERIAL = 0x0BAD_CAFE
UNSPECIFIED_SERIAL = 0x1234_5678_9ABC


@pytest.fixture(scope="module")
def crl(issuing_ca: CertificateAuthority, now: datetime) -> x509.CertificateRevocationList:
    return build_crl(
        issuer=issuing_ca,
        entries=[
            RevokedEntry(
                serial_number=KEY_COMPROMISE_SERIAL,
                revoked_at=now - timedelta(hours=2),
                reason=x509.ReasonFlags.key_compromise,
                invalidity_date=now - timedelta(days=3),
            ),
            RevokedEntry(
                serial_number=SUPERSEDED_SERIAL,
                revoked_at=now - timedelta(hours=1),
                reason=x509.ReasonFlags.superseded,
            ),
            RevokedEntry(
                serial_number=UNSPECIFIED_SERIAL,
                revoked_at=now - timedelta(minutes=5),
                reason=x509.ReasonFlags.unspecified,
            ),
        ],
        crl_number=42,
        this_update=now,
        next_update=now + timedelta(hours=24),
    )


@pytest.fixture(scope="module")
def crl_der(crl: x509.CertificateRevocationList, pki_dir: Path) -> Path:
    path = pki_dir / "issuing.crl"
    path.write_bytes(crl.public_bytes(Encoding.DER))
    return path


def test_crl_fields(
    crl: x509.CertificateRevocationList, issuing_ca: CertificateAuthority, now: datetime
) -> None:
    assert crl.is_signature_valid(issuing_ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == issuing_ca.certificate.subject
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + timedelta(hours=24)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuing_ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest
    compromised = crl.get_revoked_certificate_by_serial_number(KEY_COMPROMISE_SERIAL)
    assert compromised is not None
    assert compromised.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    invalidity = compromised.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalidity.invalidity_date_utc == now - timedelta(days=3)
    # RFC 5280 §5.3.1: unspecified is expressed by leaving reasonCode out.
    unspecified = crl.get_revoked_certificate_by_serial_number(UNSPECIFIED_SERIAL)
    assert unspecified is not None
    assert len(unspecified.extensions) == 0


def test_openssl_reads_and_verifies_the_crl(crl_der: Path, issuing_pem: Path, openssl: str) -> None:
    result = run_command(
        [openssl, "crl", "-inform", "DER", "-in", crl_der, "-noout", "-text",
         "-CAfile", issuing_pem, "-verify"]
    )  # fmt: skip
    assert "verify OK" in result.stderr + result.stdout
    text = result.stdout
    assert "Version 2 (0x1)" in text
    assert re.search(r"X509v3 CRL Number:\s+42", text)
    assert "X509v3 Authority Key Identifier" in text
    assert re.search(r"X509v3 CRL Reason Code:\s+Key Compromise", text)
    assert re.search(r"X509v3 CRL Reason Code:\s+Superseded", text)
    assert re.search(r"Invalidity Date:\s+\w+", text)
    assert text.count("Serial Number:") == 3
    assert "Unspecified" not in text
    # openssl pads the hex serial to whole octets.
    assert re.search(rf"Serial Number: 0*{SUPERSEDED_SERIAL:X}\n", text)


def test_pkilint_crl(crl_der: Path) -> None:
    findings = pkilint_findings("lint_crl", ["-t", "CRL", "-p", "PKIX"], crl_der)
    blocking = [f for f in findings if f["severity"] in {"ERROR", "FATAL"}]
    assert not blocking, blocking
    assert {f["severity"] for f in findings} <= {"INFO"}, findings


def test_empty_crl(issuing_ca: CertificateAuthority, now: datetime, pki_dir: Path) -> None:
    crl = build_crl(
        issuer=issuing_ca,
        entries=[],
        crl_number=0,
        this_update=now,
        next_update=now + timedelta(days=1),
    )
    assert len(crl) == 0
    path = pki_dir / "empty.crl"
    path.write_bytes(crl.public_bytes(Encoding.DER))
    findings = pkilint_findings("lint_crl", ["-t", "CRL", "-p", "PKIX"], path)
    assert not [f for f in findings if f["severity"] in {"ERROR", "FATAL"}], findings


def test_ten_thousand_entries(
    issuing_ca: CertificateAuthority, now: datetime, pki_dir: Path, openssl: str
) -> None:
    # A generator: build_crl takes any iterable, and passes one list to the builder.
    entries = (
        RevokedEntry(
            serial_number=serial,
            revoked_at=now - timedelta(seconds=serial),
            reason=x509.ReasonFlags.cessation_of_operation if serial % 2 else None,
        )
        for serial in range(1, 10_001)
    )
    crl = build_crl(
        issuer=issuing_ca,
        entries=entries,
        crl_number=7,
        this_update=now,
        next_update=now + timedelta(days=1),
    )
    assert len(crl) == 10_000
    path = pki_dir / "big.crl"
    path.write_bytes(crl.public_bytes(Encoding.DER))
    text = run_command([openssl, "crl", "-inform", "DER", "-in", path, "-noout", "-text"]).stdout
    assert text.count("Serial Number:") == 10_000


def test_next_update_must_follow_this_update(
    issuing_ca: CertificateAuthority, now: datetime
) -> None:
    for next_update in (now, now - timedelta(seconds=1)):
        with pytest.raises(ValueError, match=r"next_update \(.*\) must be after this_update"):
            build_crl(
                issuer=issuing_ca,
                entries=[],
                crl_number=1,
                this_update=now,
                next_update=next_update,
            )


def test_naive_datetimes(issuing_ca: CertificateAuthority, now: datetime) -> None:
    naive = now.replace(tzinfo=None)
    with pytest.raises(ValueError, match="this_update must be timezone-aware"):
        build_crl(
            issuer=issuing_ca,
            entries=[],
            crl_number=1,
            this_update=naive,
            next_update=now + timedelta(days=1),
        )
    with pytest.raises(ValueError, match="revoked_at must be timezone-aware"):
        RevokedEntry(serial_number=1, revoked_at=naive)
    with pytest.raises(ValueError, match="invalidity_date must be timezone-aware"):
        RevokedEntry(serial_number=1, revoked_at=now, invalidity_date=naive)


def test_entry_checks(issuing_ca: CertificateAuthority, now: datetime) -> None:
    with pytest.raises(ValueError, match="serial_number must be positive"):
        RevokedEntry(serial_number=0, revoked_at=now)
    with pytest.raises(TypeError, match="serial_number must be an int"):
        RevokedEntry(serial_number="01", revoked_at=now)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="removeFromCRL is only meaningful in delta CRLs"):
        RevokedEntry(serial_number=1, revoked_at=now, reason=x509.ReasonFlags.remove_from_crl)
    with pytest.raises(ValueError, match="is listed twice"):
        build_crl(
            issuer=issuing_ca,
            entries=[RevokedEntry(5, now), RevokedEntry(5, now)],
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    with pytest.raises(TypeError, match="entries must be RevokedEntry objects, not str"):
        build_crl(
            issuer=issuing_ca,
            entries=[RevokedEntry(5, now), "06"],  # type: ignore[list-item]
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    with pytest.raises(ValueError, match="after this_update"):
        build_crl(
            issuer=issuing_ca,
            entries=(
                e for e in [RevokedEntry(4, now), RevokedEntry(5, now + timedelta(minutes=1))]
            ),
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    with pytest.raises(ValueError, match="crl_number must be between 0 and 2\\*\\*159 - 1"):
        build_crl(
            issuer=issuing_ca,
            entries=[],
            crl_number=-1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )


def test_refuses_an_issuer_without_crl_sign(
    ocsp_responder: CertificateAuthority, now: datetime
) -> None:
    with pytest.raises(ValueError, match="issuer certificate is not a CA"):
        build_crl(
            issuer=ocsp_responder,
            entries=[],
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )


def test_re_signing_reuses_entries_and_follows_changes(
    issuing_ca: CertificateAuthority, now: datetime
) -> None:
    def sign(*entries: RevokedEntry) -> x509.CertificateRevocationList:
        return build_crl(
            issuer=issuing_ca,
            entries=entries,
            crl_number=8,
            this_update=now,
            next_update=now + timedelta(days=1),
        )

    first = RevokedEntry(serial_number=0xC0FFEE, revoked_at=now - timedelta(hours=3))
    superseded = RevokedEntry(
        serial_number=0xC0FFEE,
        revoked_at=now - timedelta(hours=3),
        reason=x509.ReasonFlags.superseded,
    )
    before = sign(first)
    again = sign(RevokedEntry(serial_number=0xC0FFEE, revoked_at=now - timedelta(hours=3)))
    changed = sign(superseded)

    assert before.public_bytes(Encoding.DER) == again.public_bytes(Encoding.DER)
    [entry] = list(changed)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.superseded
    )


def _revoked(serial: int, now: datetime, hours: int, **extra: object) -> RevokedEntry:
    return RevokedEntry(serial_number=serial, revoked_at=now - timedelta(hours=hours), **extra)  # type: ignore[arg-type]


def _next(
    issuer: CertificateAuthority,
    previous: bytes,
    now: datetime,
    *,
    dropped: frozenset[int] = frozenset(),
    added: tuple[RevokedEntry, ...] = (),
) -> bytes:
    return build_next_crl(
        issuer=issuer,
        previous_der=previous,
        dropped=dropped,
        added=added,
        crl_number=43,
        this_update=now,
        next_update=now + timedelta(hours=24),
    )


def _full(issuer: CertificateAuthority, now: datetime, *entries: RevokedEntry) -> bytes:
    return build_crl(
        issuer=issuer,
        entries=entries,
        crl_number=43,
        this_update=now,
        next_update=now + timedelta(hours=24),
    ).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def previous_entries(now: datetime) -> tuple[RevokedEntry, ...]:
    return (
        _revoked(
            KEY_COMPROMISE_SERIAL,
            now,
            30,
            reason=x509.ReasonFlags.key_compromise,
            invalidity_date=now - timedelta(days=3),
        ),
        _revoked(SUPERSEDED_SERIAL, now, 20, reason=x509.ReasonFlags.superseded),
        # A serial whose first octet has its high bit set: DER prefixes a zero octet.
        _revoked(0x80 << 144 | 7, now, 10),
        _revoked(UNSPECIFIED_SERIAL, now, 5, reason=x509.ReasonFlags.unspecified),
    )


@pytest.fixture(scope="module")
def previous(
    issuing_ca: CertificateAuthority, now: datetime, previous_entries: tuple[RevokedEntry, ...]
) -> bytes:
    """The CRL before: older, so that only its entries' bytes are carried over."""
    return build_crl(
        issuer=issuing_ca,
        entries=previous_entries,
        crl_number=42,
        this_update=now - timedelta(hours=1),
        next_update=now + timedelta(hours=23),
    ).public_bytes(Encoding.DER)


def test_the_next_crl_is_the_crl_build_crl_signs(
    issuing_ca: CertificateAuthority,
    now: datetime,
    previous_entries: tuple[RevokedEntry, ...],
    previous: bytes,
) -> None:
    added = (
        _revoked(0xADDED, now, 0, reason=x509.ReasonFlags.key_compromise),
        _revoked(0xADDED2, now, 0),
    )
    # RSA PKCS #1 v1.5 signatures are deterministic: the very same bytes.
    assert _next(issuing_ca, previous, now) == _full(issuing_ca, now, *previous_entries)
    assert _next(issuing_ca, previous, now, added=added) == _full(
        issuing_ca, now, *previous_entries, *added
    )
    first, second, third, fourth = previous_entries
    assert _next(
        issuing_ca, previous, now, dropped=frozenset({first.serial_number, third.serial_number})
    ) == _full(issuing_ca, now, second, fourth)
    assert _next(
        issuing_ca, previous, now, dropped=frozenset({fourth.serial_number}), added=added
    ) == _full(issuing_ca, now, first, second, third, *added)
    # Nothing left: revokedCertificates is absent (RFC 5280 §5.1.2.6), as build_crl has it.
    everything = frozenset(entry.serial_number for entry in previous_entries)
    assert _next(issuing_ca, previous, now, dropped=everything) == _full(issuing_ca, now)
    empty = _full(issuing_ca, now - timedelta(hours=1))
    assert _next(issuing_ca, empty, now, added=added) == _full(issuing_ca, now, *added)
    assert _next(issuing_ca, empty, now) == _full(issuing_ca, now)


@pytest.mark.parametrize(
    ("crl_number", "this_update"),
    [
        (0, timedelta()),
        (127, timedelta(seconds=59, microseconds=999_999)),
        (128, datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),  # nextUpdate in 2050
        (255, datetime(2050, 1, 1, tzinfo=UTC)),  # GeneralizedTime (RFC 5280 §5.1.2.4)
        (256, datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)),
        (2**63, timedelta(minutes=1)),
        (2**159 - 1, timedelta(hours=1)),
    ],
)
def test_a_next_crl_with_nothing_added_is_the_crl_build_crl_signs_without_a_draft(
    issuing_ca: CertificateAuthority,
    previous_entries: tuple[RevokedEntry, ...],
    previous: bytes,
    now: datetime,
    crl_number: int,
    this_update: datetime | timedelta,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hourly re-signing adds nothing: the issuer's fixed fields are kept from the
    first draft, and only the dates and the number are encoded anew, byte for byte as
    the builder encodes them (UTCTime through 2049, the INTEGER's leading zero octet)."""
    if isinstance(this_update, timedelta):
        this_update = now + this_update
    build_next_crl(  # the issuer's first: its fixed fields, from a draft
        issuer=issuing_ca,
        previous_der=previous,
        dropped=frozenset(),
        added=(),
        crl_number=2,
        this_update=now - timedelta(minutes=30),
        next_update=now + timedelta(hours=23),
    )
    drafts: list[object] = []
    real_sign = x509.CertificateRevocationListBuilder.sign

    def counted(self: x509.CertificateRevocationListBuilder, *args: object, **kw: object) -> object:
        drafts.append(self)
        return real_sign(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(x509.CertificateRevocationListBuilder, "sign", counted)
    next_update = this_update.replace(microsecond=0) + timedelta(hours=24)

    der = build_next_crl(
        issuer=issuing_ca,
        previous_der=previous,
        dropped=frozenset({SUPERSEDED_SERIAL}),
        added=(),
        crl_number=crl_number,
        this_update=this_update,
        next_update=next_update,
    )

    assert drafts == []
    monkeypatch.undo()
    assert der == build_crl(
        issuer=issuing_ca,
        entries=[e for e in previous_entries if e.serial_number != SUPERSEDED_SERIAL],
        crl_number=crl_number,
        this_update=this_update,
        next_update=next_update,
    ).public_bytes(Encoding.DER)


def test_the_next_crl_of_an_ec_issuer_verifies_with_openssl(
    root_ca: CertificateAuthority,
    now: datetime,
    previous_entries: tuple[RevokedEntry, ...],
    pki_dir: Path,
    openssl: str,
) -> None:
    issuer = create_issuing_ca(
        root=root_ca,
        subject=DistinguishedName("MyCert Test EC Issuing CA", ORGANIZATION, "LU"),
        key_type=KeyType.EC_P256,
        now=now,
        crl_url=f"{PKI_BASE}/crl/root.crl",
        policy_oid="1.3.6.1.4.1.99999.1.2.1",
        ca_issuers_url=f"{PKI_BASE}/ca/root.cer",
    )
    previous = _full(issuer, now - timedelta(hours=1), *previous_entries)
    added = _revoked(0xADDED, now, 0)
    der = _next(issuer, previous, now, dropped=frozenset({SUPERSEDED_SERIAL}), added=(added,))
    crl = x509.load_der_x509_crl(der)
    full = x509.load_der_x509_crl(
        _full(
            issuer,
            now,
            *(e for e in previous_entries if e.serial_number != SUPERSEDED_SERIAL),
            added,
        )
    )
    # ECDSA signatures are randomised: the signed bytes are the same, and verify.
    assert crl.tbs_certlist_bytes == full.tbs_certlist_bytes
    assert crl.is_signature_valid(issuer.certificate.public_key())  # type: ignore[arg-type]
    # Nothing added (no draft): the same, with the issuer's ECDSA algorithm.
    hourly = x509.load_der_x509_crl(_next(issuer, previous, now))
    assert hourly.tbs_certlist_bytes == (
        x509.load_der_x509_crl(_full(issuer, now, *previous_entries)).tbs_certlist_bytes
    )
    assert hourly.signature_algorithm_oid == full.signature_algorithm_oid
    assert hourly.is_signature_valid(issuer.certificate.public_key())  # type: ignore[arg-type]
    path = pki_dir / "next-ec.crl"
    path.write_bytes(der)
    issuer_pem = pki_dir / "ec-issuing.pem"
    issuer_pem.write_bytes(issuer.certificate.public_bytes(Encoding.PEM))
    result = run_command(
        [openssl, "crl", "-inform", "DER", "-in", path, "-noout", "-CAfile", issuer_pem]
    )
    assert "verify OK" in result.stderr + result.stdout


def test_the_next_crl_refuses_what_is_not_a_crl(
    issuing_ca: CertificateAuthority, now: datetime
) -> None:
    with pytest.raises(ValueError, match="DER"):
        _next(issuing_ca, b"\x30\x03\x02\x01\x01", now)
    with pytest.raises(ValueError, match="truncated"):
        _next(issuing_ca, _full(issuing_ca, now - timedelta(hours=1))[:-10], now)


def test_the_key_compromises_a_crl_lists_with_their_invalidity_dates(
    issuing_ca: CertificateAuthority, crl: x509.CertificateRevocationList, now: datetime
) -> None:
    from mycert.pki.crl import crl_key_compromises

    undated = 0x77
    der = _full(
        issuing_ca,
        now,
        _revoked(undated, now, 1, reason=x509.ReasonFlags.key_compromise),
        _revoked(0x78, now, 2, reason=x509.ReasonFlags.ca_compromise, invalidity_date=now),
        _revoked(0x79, now, 3),
    )

    # pyca reads the same dates, to the second (RFC 5280 §5.3.2).
    assert crl_key_compromises(crl.public_bytes(Encoding.DER)) == {
        KEY_COMPROMISE_SERIAL: (now - timedelta(days=3)).replace(microsecond=0)
    }
    assert crl_key_compromises(der) == {undated: None}
    assert crl_key_compromises(_full(issuing_ca, now)) == {}
