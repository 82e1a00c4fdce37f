"""mycert.pki.crl: complete v2 CRLs (RFC 5280 §5) checked by openssl and pkilint."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mycert.pki import CertificateAuthority, RevokedEntry, build_crl
from tests.pki.helpers import pkilint_findings, run_command

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
