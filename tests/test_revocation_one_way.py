"""A revocation is one-way (issue 20 §2): what the CA signed is the evidence, not the rows.

A database writer plays the attacker here: rows are changed with ``QuerySet.update`` and
``delete``, behind the services, as SQL would. The CA, the CRLs and the OCSP answers are
real (pyca verifies them); the high-water mark is a real file (one per test, conftest).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from django.db import connection
from django.utils import timezone

from mycert import custody
from mycert.crl_mark import read_mark
from mycert.models import Certificate, Crl, OcspResponse, OperatorAlert
from mycert.pki import KeyType
from mycert.pki.evidence import EvidenceError, certificate_expired, revoked_answer, verify_crl
from mycert.services.issuance import request_issue
from mycert.services.ocsp import ocsp_responses_sign
from mycert.services.publication import PublicationRefused, crl_publish
from mycert.services.revocation import certificate_revoke
from mycert.tasks.publication import publish_crl
from tests.factories import CertificateRequestFactory

pytestmark = pytest.mark.django_db


def _issue() -> Certificate:
    request = CertificateRequestFactory.create()
    outcome = request_issue(request_id=request.pk, now=timezone.now())
    assert outcome.certificate_id is not None
    return Certificate.objects.get(pk=outcome.certificate_id)


def _revoke(record: Certificate) -> None:
    certificate_revoke(
        certificate_id=record.pk,
        reason=Certificate.RevocationReason.KEY_COMPROMISE,
        via=Certificate.RevokedVia.HELPDESK,
        actor=None,
        now=timezone.now() - timedelta(seconds=1),
    )
    ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now())  # the on-commit task


def _clear_revocation(record: Certificate) -> None:
    """What the attacker of issue 20 does: clear the revocation columns in the database.

    On PostgreSQL as a superuser, who can switch migration 0009's trigger off
    (tests/test_postgres_guards.py shows that the application's roles cannot)."""
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    Certificate.objects.filter(pk=record.pk).update(
        revoked_at=None, revocation_reason="", revoked_via="", revocation_comment=""
    )
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def _listed(crl: Crl) -> set[int]:
    return {entry.serial_number for entry in x509.load_der_x509_crl(bytes(crl.der))}


def _stored_status(record: Certificate) -> ocsp.OCSPCertStatus:
    stored = OcspResponse.objects.get(certificate=record)
    return ocsp.load_der_ocsp_response(bytes(stored.der_sha256)).certificate_status


def _security_alerts(kind: str) -> list[OperatorAlert]:
    return list(OperatorAlert.objects.filter(kind=kind, recipient=OperatorAlert.Recipient.SECURITY))


# --- Cannot undo a revocation ------------------------------------------------------------------


def test_a_cleared_revocation_stays_on_the_next_crl_and_security_is_alerted(ca: Any) -> None:
    record = _issue()
    _revoke(record)
    assert record.serial_number in _listed(crl_publish())

    _clear_revocation(record)
    crl = crl_publish()

    assert record.serial_number in _listed(crl)
    entry = x509.load_der_x509_crl(bytes(crl.der)).get_revoked_certificate_by_serial_number(
        record.serial_number
    )
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    [alert] = _security_alerts("revocation_cleared")
    assert record.serial in alert.body


def test_a_cleared_revocation_is_never_answered_good_again(ca: Any) -> None:
    record = _issue()
    _revoke(record)
    crl_publish()
    _clear_revocation(record)
    OcspResponse.objects.filter(certificate=record).update(status=OcspResponse.Status.GOOD)

    ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now())  # beat's refresh

    assert _stored_status(record) is ocsp.OCSPCertStatus.REVOKED
    assert OcspResponse.objects.get(certificate=record).status == OcspResponse.Status.REVOKED
    assert _security_alerts("revocation_cleared")


def test_a_signed_revoked_answer_is_evidence_before_any_crl(ca: Any) -> None:
    """The revoked answer is signed at once, the CRL a moment later: in between, the
    stored answer itself (its signature verified) keeps "good" away."""
    record = _issue()
    _revoke(record)
    assert not Crl.objects.exists()
    _clear_revocation(record)

    ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now())

    assert _stored_status(record) is ocsp.OCSPCertStatus.REVOKED


def test_a_tampered_expiry_does_not_drop_the_entry(ca: Any) -> None:
    record = _issue()
    _revoke(record)
    crl_publish()
    Certificate.objects.filter(pk=record.pk).update(not_after=timezone.now() - timedelta(days=1))

    assert record.serial_number in _listed(crl_publish())
    assert _security_alerts("revocation_cleared")


def test_an_expired_certificate_leaves_the_crl_quietly(ca: Any) -> None:
    record = _issue()
    _revoke(record)
    crl_publish()

    after_expiry = record.not_after + timedelta(days=1)
    assert record.serial_number not in _listed(crl_publish(now=after_expiry))
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()


def test_a_fresh_certificate_is_still_answered_good(ca: Any) -> None:
    record = _issue()
    other = _issue()
    _revoke(other)
    crl_publish()

    ocsp_responses_sign(certificate_ids=[record.pk, other.pk], now=timezone.now())

    assert _stored_status(record) is ocsp.OCSPCertStatus.GOOD
    assert _stored_status(other) is ocsp.OCSPCertStatus.REVOKED
    assert not OperatorAlert.objects.filter(recipient=OperatorAlert.Recipient.SECURITY).exists()


# --- The previous CRL as evidence: missing, forged, or older than the mark -----------------------


def _refused(match: str) -> None:
    count = Crl.objects.count()
    with pytest.raises(PublicationRefused, match=match):
        crl_publish()
    assert Crl.objects.count() == count, "a refused publication stores no CRL"
    [alert] = _security_alerts("crl_publication_refused")
    assert "LCR" in alert.subject


def test_a_forged_previous_crl_stops_publication(ca: Any) -> None:
    record = _issue()
    _revoke(record)
    latest = crl_publish()
    # Re-signed by a key that is not the CA's, without the revoked serial.
    forged = x509.load_der_x509_crl(bytes(latest.der))
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(forged.issuer)
        .last_update(forged.last_update_utc)
        .next_update(forged.next_update_utc or forged.last_update_utc + timedelta(days=1))
        .add_extension(x509.CRLNumber(latest.number), critical=False)
    )
    from cryptography.hazmat.primitives import serialization

    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    Crl.objects.filter(pk=latest.pk).update(der=der)
    _clear_revocation(record)

    _refused("forged: its signature does not verify")


def test_an_older_crl_put_back_stops_publication(ca: Any) -> None:
    first = crl_publish()
    record = _issue()
    _revoke(record)
    second = crl_publish()
    assert read_mark(_key_id()) == second.number

    Crl.objects.filter(pk=second.pk).delete()
    _clear_revocation(record)

    _refused(
        f"latest stored CRL is #{first.number}, but this worker has signed or verified CRL #{second.number}"
    )


def test_an_older_crl_renumbered_stops_publication(ca: Any) -> None:
    first = crl_publish()
    second = crl_publish()
    Crl.objects.filter(pk=second.pk).update(der=bytes(first.der))

    _refused(f"stored as #{second.number} is the signed CRL #{first.number}")


def test_deleted_crls_stop_publication(ca: Any) -> None:
    crl_publish()
    Crl.objects.all().delete()

    _refused("no CRL is stored, but this worker has signed or verified CRL #1")


def test_without_evidence_no_good_answer_is_signed(ca: Any) -> None:
    record = _issue()
    crl_publish()
    Crl.objects.update(der=b"not a CRL")
    before = bytes(OcspResponse.objects.get(certificate=record).der_sha256)

    ocsp_responses_sign(certificate_ids=[record.pk], now=timezone.now() + timedelta(minutes=1))

    assert bytes(OcspResponse.objects.get(certificate=record).der_sha256) == before
    assert _security_alerts("crl_publication_refused")


def test_the_task_does_not_retry_a_refusal_and_alerts_once_a_day(ca: Any) -> None:
    crl_publish()
    Crl.objects.all().delete()

    assert publish_crl.apply().get() is None
    assert publish_crl.apply().get() is None
    assert len(_security_alerts("crl_publication_refused")) == 1


def test_the_mark_is_a_file_outside_the_database(ca: Any, settings: Any) -> None:
    crl = crl_publish()
    data = json.loads(Path(settings.MYCERT_CRL_HIGH_WATER_FILE).read_text())
    assert data == {_key_id(): crl.number}
    assert Path(settings.MYCERT_CRL_HIGH_WATER_FILE).stat().st_mode & 0o077 == 0


def _key_id() -> str:
    issuing = custody.ca_certificates_load().issuing
    return issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def test_a_new_issuing_ca_starts_its_own_series_after_a_rollover(
    ca: Any, settings: Any, tmp_path: Path
) -> None:
    """docs/deploy.md §7: the latest stored CRL is then the previous CA's, signed by a key
    the new CA cannot verify with; its first CRL carries nothing forward from it and is
    numbered after it."""
    record = _issue()
    _revoke(record)
    previous = crl_publish()
    new_ca = custody.CaPaths(tmp_path / "ca-2029")
    custody.ca_create(
        new_ca,
        settings.MYCERT_CA_KEY_PASSPHRASE.encode(),
        organization="Agence eSanté",
        country="LU",
        key_type=KeyType.EC_P256,
        now=timezone.now(),
        # The root key offline, under its own passphrase, as every test CA's.
        root_passphrase=b"the-new-root-s-own-passphrase",
        root_key_path=tmp_path / "offline-2029" / "root-key.pem",
    )
    settings.MYCERT_CA_DIR = new_ca.directory
    custody.cache_clear()

    first = crl_publish()

    assert first.number == previous.number + 1
    assert read_mark(_key_id()) == first.number
    assert not _security_alerts("crl_publication_refused")
    # From now on the previous CA's CRL on top is no longer the start of a series.
    Crl.objects.filter(pk=first.pk).delete()
    _refused("forged: its signature does not verify")


# --- The pure checks (mycert.pki.evidence) ----------------------------------------------------------


def test_verify_crl_accepts_only_the_issuers_signature(ca: Any) -> None:
    crl = crl_publish()
    certificates = custody.ca_certificates_load()
    verified = verify_crl(bytes(crl.der), certificates.issuing)
    assert verified.number == crl.number
    with pytest.raises(EvidenceError, match="another issuer"):
        verify_crl(bytes(crl.der), certificates.root)
    with pytest.raises(EvidenceError, match="not a DER CRL"):
        verify_crl(b"\x30\x00", certificates.issuing)


def test_revoked_answer_needs_a_verified_revoked_answer_for_that_serial(ca: Any) -> None:
    record = _issue()
    issuing = custody.ca_certificates_load().issuing
    good = bytes(OcspResponse.objects.get(certificate=record).der_sha256)
    assert revoked_answer(good, issuing, record.serial_number) is None
    _revoke(record)
    revoked = bytes(OcspResponse.objects.get(certificate=record).der_sha256)
    entry = revoked_answer(revoked, issuing, record.serial_number)
    assert entry is not None
    assert entry.reason is x509.ReasonFlags.key_compromise
    assert revoked_answer(revoked, issuing, record.serial_number + 1) is None
    tampered = revoked[:-8] + bytes(8)  # the signature's last bytes
    assert revoked_answer(tampered, issuing, record.serial_number) is None
    assert revoked_answer(b"junk", issuing, record.serial_number) is None


def test_certificate_expired_trusts_only_the_cas_certificate(ca: Any) -> None:
    record = _issue()
    issuing = custody.ca_certificates_load().issuing
    later = record.not_after + timedelta(seconds=1)
    assert certificate_expired(record.pem, issuing, record.serial_number, later)
    assert not certificate_expired(record.pem, issuing, record.serial_number, timezone.now())
    assert not certificate_expired(record.pem, issuing, record.serial_number + 1, later)
    assert not certificate_expired("junk", issuing, record.serial_number, later)
