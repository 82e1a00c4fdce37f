"""Vendor copies go only where a security officer agreed, on the worker host (issue 20 §3).

The database writer's attack: swap a vendor's e-mail and OpenPGP key (and fingerprint)
in the rows. The worker believes its own keyring and anchor file, not the rows: the
copy ends ``failed`` with the reason, the security officer is alerted, and the
professional's own e-mails still go out. Real gpg, a real SMTP server, SQLite.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from mycert.mail.anchor import ANCHOR_FILE, vendor_anchor
from mycert.mail.gpg import openpgp
from mycert.models import AuditEvent, Delivery, OperatorAlert, Vendor
from mycert.outbox import SendResult, delivery_retry, delivery_send
from mycert.services.notices import revocation_notices_create
from mycert.services.vendors import vendor_add_confirmed, vendor_create, vendor_update
from mycert.tasks.delivery import send_deliveries_now, sweep_outbox
from tests.factories import ConfirmedVendorFactory
from tests.support.gpg import GpgKey, confirm_on_worker, decrypt
from tests.support.smtp_server import TestSmtpServer
from tests.test_delivery import KEYSTORE, attachments, create, make_certificate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mycert_gpg_home")]

VENDOR_EMAIL = "support@vendor.example.lu"  # the user ID of the ``vendor_key`` fixture
ATTACKER_EMAIL = "collect@attacker.example"


@pytest.fixture
def attacker_key(key_factory: Any) -> GpgKey:
    return cast(GpgKey, key_factory(f"Support <{ATTACKER_EMAIL}>"))


@pytest.fixture
def vendor(vendor_key: GpgKey) -> Vendor:
    """A vendor added on the worker host (``add_vendor``): in the row and in the anchor."""
    return vendor_add_confirmed(
        name="Logiciel Santé SA",
        email=VENDOR_EMAIL,
        pgp_key=vendor_key.public,
        actor="test",
        now=timezone.now(),
    )


def swap_to(vendor: Vendor, key: GpgKey, email: str) -> None:
    """What a database writer does: rewrite the vendor's row, no service, no audit."""
    Vendor.objects.filter(pk=vendor.pk).update(
        email=email, pgp_public_key=key.public, pgp_fingerprint=key.fingerprint
    )


def rcpts(smtp: TestSmtpServer) -> list[str]:
    return [to for message in smtp.messages for to in message.rcpt_tos]


def send_all(rows: dict[tuple[str, str], Delivery]) -> dict[tuple[str, str], Delivery]:
    """Send a certificate's e-mails as the issuing worker does, reacting to outcomes."""
    send_deliveries_now(
        [rows["professional", "keystore"].pk]
        + ([rows["vendor", "keystore"].pk] if ("vendor", "keystore") in rows else [])
    )
    for row in rows.values():
        row.refresh_from_db()
    return rows


def test_a_key_written_into_the_database_never_becomes_a_recipient(
    smtp_settings: TestSmtpServer, vendor_key: GpgKey, attacker_key: GpgKey
) -> None:
    """Fails on the code before issue 20: the worker imported the row's key and sent."""
    vendor = vendor_create(
        name="Logiciel Santé SA",
        email=VENDOR_EMAIL,
        pgp_key=vendor_key.public,
        actor="test",
        now=timezone.now(),
    )
    swap_to(vendor, attacker_key, ATTACKER_EMAIL)
    vendor.refresh_from_db()
    rows = create(make_certificate(vendor=vendor), vendor=vendor)

    outcome = delivery_send(delivery_id=rows["vendor", "keystore"].pk, now=timezone.now())

    assert outcome.result is SendResult.FAILED
    assert ATTACKER_EMAIL not in rcpts(smtp_settings)
    assert openpgp().key_in_keyring(attacker_key.fingerprint, now=timezone.now()) is None


def test_swapped_address_and_key_get_no_copy_security_is_alerted_the_professional_served(
    smtp_settings: TestSmtpServer, vendor: Vendor, attacker_key: GpgKey
) -> None:
    swap_to(vendor, attacker_key, ATTACKER_EMAIL)
    vendor.refresh_from_db()
    certificate = make_certificate(vendor=vendor)
    rows = send_all(create(certificate, vendor=vendor))

    copy = rows["vendor", "keystore"]
    assert copy.status == Delivery.Status.FAILED
    assert copy.recipient_refused
    assert copy.last_error.startswith("refused: ")
    assert "not the address confirmed for vendor" in copy.last_error
    # The password copy, waiting for it, ends failed with it: one alert for the pair.
    assert rows["vendor", "password"].status == Delivery.Status.FAILED
    assert rows["vendor", "password"].recipient_refused
    assert rows["professional", "keystore"].status == Delivery.Status.SENT
    assert rows["professional", "password"].status == Delivery.Status.SENT
    assert rcpts(smtp_settings) == [certificate.professional.email] * 2
    (alert,) = OperatorAlert.objects.filter(kind="vendor_copy_refused")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert ATTACKER_EMAIL in alert.body
    assert attacker_key.fingerprint in alert.body
    assert f"confirm_vendor {vendor.pk}" in alert.body
    # The security officer's alert, not the helpdesk's "retry it".
    assert not OperatorAlert.objects.filter(kind="delivery_failed").exists()
    failed = AuditEvent.objects.get(action="delivery.failed", object_id=str(copy.pk))
    assert failed.details["recipient_refused"] is True
    assert failed.details["pinned"] == attacker_key.fingerprint


def test_a_swap_to_another_confirmed_vendors_key_and_address_is_refused(
    smtp_settings: TestSmtpServer, vendor: Vendor, key_factory: Any
) -> None:
    """The anchor binds each vendor to its own address and key."""
    other_key: GpgKey = key_factory("Other <it@other-vendor.example.lu>")
    vendor_add_confirmed(
        name="Autre Éditeur",
        email="it@other-vendor.example.lu",
        pgp_key=other_key.public,
        actor="test",
        now=timezone.now(),
    )
    swap_to(vendor, other_key, "it@other-vendor.example.lu")
    vendor.refresh_from_db()

    rows = send_all(create(make_certificate(vendor=vendor), vendor=vendor))

    assert rows["vendor", "keystore"].recipient_refused
    assert "it@other-vendor.example.lu" not in rcpts(smtp_settings)


def test_rows_rewritten_after_issuance_are_refused_too(
    smtp_settings: TestSmtpServer, vendor: Vendor, attacker_key: GpgKey
) -> None:
    rows = create(make_certificate(vendor=vendor), vendor=vendor)
    Delivery.objects.filter(vendor=vendor).update(pgp_fingerprint=attacker_key.fingerprint)

    rows = send_all(rows)

    assert rows["vendor", "keystore"].recipient_refused
    assert "not to the key confirmed" in rows["vendor", "keystore"].last_error


def test_the_confirmed_vendor_gets_its_encrypted_copies(
    smtp_settings: TestSmtpServer, vendor: Vendor, vendor_key: GpgKey
) -> None:
    rows = send_all(create(make_certificate(vendor=vendor), vendor=vendor))
    send_deliveries_now([rows["vendor", "password"].pk])

    assert rcpts(smtp_settings).count(VENDOR_EMAIL) == 2
    vendor_mail = next(m for m in smtp_settings.messages if VENDOR_EMAIL in m.rcpt_tos)
    (attachment,) = attachments(decrypt(vendor_key, vendor_mail.message))
    assert attachment.get_payload(decode=True) == KEYSTORE
    assert not OperatorAlert.objects.filter(kind="vendor_copy_refused").exists()


def test_a_change_made_in_the_admin_waits_for_the_confirmation_on_the_worker(
    smtp_settings: TestSmtpServer, vendor: Vendor, key_factory: Any
) -> None:
    """A superuser's change is only a proposal; ``confirm_vendor`` makes it count, and the
    helpdesk's retry then sends the refused copy to the new address and key."""
    new_key: GpgKey = key_factory("Logiciel Santé SA <pgp@vendor.example.lu>")
    vendor_update(
        vendor_id=vendor.pk,
        email="pgp@vendor.example.lu",
        pgp_key=new_key.public,
        actor="user:1",
        now=timezone.now(),
    )
    vendor.refresh_from_db()
    rows = send_all(create(make_certificate(vendor=vendor), vendor=vendor))
    copy = rows["vendor", "keystore"]
    assert copy.recipient_refused

    out = io.StringIO()
    call_command(
        "confirm_vendor", str(vendor.pk), "--fingerprint", new_key.fingerprint, "--noinput",
        stdout=out,
    )  # fmt: skip
    delivery_retry(delivery_id=copy.pk, actor="user:7")
    send_deliveries_now([copy.pk])

    copy.refresh_from_db()
    assert copy.status == Delivery.Status.SENT
    assert not copy.recipient_refused
    assert rcpts(smtp_settings).count("pgp@vendor.example.lu") == 2  # the pair
    assert "confirmed on this worker host" in out.getvalue()


def test_a_refused_notice_to_a_vendor_alerts_security_through_the_sweep(
    smtp_settings: TestSmtpServer,
    vendor: Vendor,
    attacker_key: GpgKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Notices carry no secret but name the professional: the same rule, and a report the
    sweep writes if the worker was lost before it could."""
    from mycert.tasks import delivery as delivery_tasks

    certificate = make_certificate(vendor=vendor)
    certificate.revoked_at = timezone.now()
    certificate.revocation_reason = "keyCompromise"
    certificate.save()
    swap_to(vendor, attacker_key, ATTACKER_EMAIL)
    vendor.refresh_from_db()
    notice = next(
        row
        for row in revocation_notices_create(certificate=certificate)
        if row.recipient == Delivery.Recipient.VENDOR
    )

    assert delivery_send(delivery_id=notice.pk, now=timezone.now()).recipient_refused
    assert not OperatorAlert.objects.filter(kind="vendor_copy_refused").exists()  # worker lost
    monkeypatch.setattr(delivery_tasks.send_delivery, "delay", lambda _delivery_id: None)
    sweep_outbox()

    (alert,) = OperatorAlert.objects.filter(kind="vendor_copy_refused")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert ATTACKER_EMAIL not in rcpts(smtp_settings)


# --- Vendors without a key -------------------------------------------------------------------


def test_a_keyless_vendor_gets_clear_copies_only_at_its_confirmed_address(
    smtp_settings: TestSmtpServer, settings: Any
) -> None:
    """With MYCERT_VENDOR_COPY_REQUIRES_PGP off, a vendor without a key is anchored by its
    address: copies in clear go there and nowhere else."""
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = False
    keyless = vendor_add_confirmed(
        name="Sans Clé SARL", email="it@sans-cle.example.lu", actor="test", now=timezone.now()
    )
    rows = send_all(create(make_certificate(vendor=keyless), vendor=keyless))
    assert rows["vendor", "keystore"].status == Delivery.Status.SENT

    Vendor.objects.filter(pk=keyless.pk).update(email=ATTACKER_EMAIL)
    keyless.refresh_from_db()
    rows = send_all(create(make_certificate(vendor=keyless), vendor=keyless))

    assert rows["vendor", "keystore"].recipient_refused
    assert ATTACKER_EMAIL not in rcpts(smtp_settings)


def test_a_keyless_vendor_never_confirmed_gets_no_copy(
    smtp_settings: TestSmtpServer, settings: Any
) -> None:
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = False
    keyless = vendor_create(
        name="Sans Clé SARL", email="it@sans-cle.example.lu", actor="test", now=timezone.now()
    )

    rows = send_all(create(make_certificate(vendor=keyless), vendor=keyless))

    assert rows["vendor", "keystore"].recipient_refused
    assert "has not been confirmed on this worker host" in rows["vendor", "keystore"].last_error
    assert rows["professional", "password"].status == Delivery.Status.SENT


# --- add_vendor and confirm_vendor -----------------------------------------------------------


def confirm(*args: str) -> str:
    out = io.StringIO()
    call_command("confirm_vendor", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_add_vendor_refuses_a_key_that_does_not_carry_the_address(
    tmp_path: Path, vendor_key: GpgKey
) -> None:
    key_file = tmp_path / "key.asc"
    key_file.write_text(vendor_key.public)

    with pytest.raises(CommandError, match=r"does not carry it@elsewhere\.example\.lu"):
        call_command(
            "add_vendor", "--name", "V", "--email", "it@elsewhere.example.lu",
            "--pgp-key", str(key_file), stdout=io.StringIO(),
        )  # fmt: skip

    assert not Vendor.objects.exists()
    assert openpgp().key_in_keyring(vendor_key.fingerprint, now=timezone.now()) is None


def test_add_vendor_confirms_on_this_host(tmp_path: Path, vendor_key: GpgKey) -> None:
    key_file = tmp_path / "key.asc"
    key_file.write_text(vendor_key.public)
    out = io.StringIO()

    call_command(
        "add_vendor", "--name", "V", "--email", VENDOR_EMAIL, "--pgp-key", str(key_file),
        stdout=out,
    )  # fmt: skip

    vendor = Vendor.objects.get()
    entry = vendor_anchor().get(vendor.pk)
    assert entry is not None
    assert (entry.email, entry.fingerprint) == (VENDOR_EMAIL, vendor_key.fingerprint)
    assert openpgp().key_in_keyring(vendor_key.fingerprint, now=timezone.now()) is not None
    assert f"confirm_vendor {vendor.pk}" in out.getvalue()
    assert AuditEvent.objects.get(action="vendor.confirmed").details["fingerprint"] == (
        vendor_key.fingerprint
    )
    assert (vendor_anchor().path.stat().st_mode & 0o777) == 0o600


def test_confirm_vendor_shows_the_address_and_fingerprint_and_refuses_another(
    vendor_key: GpgKey, attacker_key: GpgKey
) -> None:
    vendor = vendor_create(
        name="V", email=VENDOR_EMAIL, pgp_key=vendor_key.public, actor="t", now=timezone.now()
    )

    with pytest.raises(CommandError, match="not " + attacker_key.fingerprint):
        confirm(str(vendor.pk), "--fingerprint", attacker_key.fingerprint, "--noinput")
    with pytest.raises(CommandError, match="--noinput"):
        confirm(str(vendor.pk), "--noinput")
    with pytest.raises(CommandError, match="no terminal"):
        confirm(str(vendor.pk))
    assert vendor_anchor().get(vendor.pk) is None

    spaced = " ".join(vendor_key.fingerprint[i : i + 4] for i in range(0, 40, 4))
    output = confirm("V", "--fingerprint", spaced.lower(), "--noinput")

    assert VENDOR_EMAIL in output
    assert spaced in output
    assert vendor_anchor().get(vendor.pk) is not None


def test_confirm_vendor_refuses_a_key_without_the_address(
    vendor_key: GpgKey, attacker_key: GpgKey
) -> None:
    vendor = vendor_create(
        name="V", email=VENDOR_EMAIL, pgp_key=attacker_key.public, actor="t", now=timezone.now()
    )

    with pytest.raises(CommandError, match="does not carry the vendor's address"):
        confirm(str(vendor.pk), "--fingerprint", attacker_key.fingerprint, "--noinput")

    assert openpgp().key_in_keyring(attacker_key.fingerprint, now=timezone.now()) is None


def test_a_new_key_replaces_the_old_one_in_the_keyring_and_a_deactivated_vendor_leaves(
    vendor: Vendor, vendor_key: GpgKey, key_factory: Any
) -> None:
    new_key: GpgKey = key_factory(f"Logiciel Santé SA <{VENDOR_EMAIL}>")
    vendor_update(vendor_id=vendor.pk, pgp_key=new_key.public, actor="user:1", now=timezone.now())
    confirm(str(vendor.pk), "--fingerprint", new_key.fingerprint, "--noinput")

    now = timezone.now()
    assert openpgp().key_in_keyring(new_key.fingerprint, now=now) is not None
    assert openpgp().key_in_keyring(vendor_key.fingerprint, now=now) is None

    vendor_update(vendor_id=vendor.pk, is_active=False, actor="user:1", now=now)
    output = confirm(str(vendor.pk), "--fingerprint", new_key.fingerprint, "--noinput")

    assert "withdrawn" in output
    assert vendor_anchor().get(vendor.pk) is None
    assert openpgp().key_in_keyring(new_key.fingerprint, now=now) is None
    assert AuditEvent.objects.filter(action="vendor.withdrawn").exists()


def test_an_unreadable_anchor_sends_nothing(
    smtp_settings: TestSmtpServer, vendor: Vendor, mycert_gpg_home: Path
) -> None:
    (mycert_gpg_home / ANCHOR_FILE).write_text("{not json")

    rows = send_all(create(make_certificate(vendor=vendor), vendor=vendor))

    assert rows["vendor", "keystore"].recipient_refused
    assert "unreadable" in rows["vendor", "keystore"].last_error
    assert rows["professional", "password"].status == Delivery.Status.SENT


def test_the_anchor_file_says_what_was_confirmed(vendor: Vendor, vendor_key: GpgKey) -> None:
    data = json.loads(vendor_anchor().path.read_text())

    assert data["vendors"] == [
        {
            "vendor_id": vendor.pk,
            "name": "Logiciel Santé SA",
            "email": VENDOR_EMAIL,
            "fingerprint": vendor_key.fingerprint,
            "confirmed_at": data["vendors"][0]["confirmed_at"],
            "confirmed_by": "test",
        }
    ]


def test_confirm_on_worker_helper_matches_the_command(vendor_key: GpgKey) -> None:
    vendor = vendor_create(
        name="V", email=VENDOR_EMAIL, pgp_key=vendor_key.public, actor="t", now=timezone.now()
    )

    confirm_on_worker(vendor)

    assert (
        vendor_anchor().refusal(
            vendor_id=vendor.pk,
            email=VENDOR_EMAIL,
            fingerprint=vendor_key.fingerprint,
            now=timezone.now(),
        )
        == ""
    )


def test_confirm_vendor_lists_what_this_host_confirmed(
    vendor: Vendor, vendor_key: GpgKey, attacker_key: GpgKey
) -> None:
    keyless = vendor_create(
        name="Sans Clé", email="it@sans-cle.example.lu", actor="t", now=timezone.now()
    )
    swapped = vendor_add_confirmed(
        name="Autre", email=VENDOR_EMAIL, pgp_key=vendor_key.public, actor="t", now=timezone.now()
    )
    swap_to(swapped, attacker_key, ATTACKER_EMAIL)

    listing = confirm("--list")

    assert f"#{vendor.pk} 'Logiciel Santé SA': confirmed" in listing
    assert f"#{keyless.pk} 'Sans Clé': NOT confirmed on this host" in listing
    assert f"#{swapped.pk} 'Autre': CHANGED in the database" in listing


def test_confirm_vendor_without_a_key_anchors_the_address_only(vendor_key: GpgKey) -> None:
    keyless = vendor_create(
        name="Sans Clé", email="It@Sans-Cle.example.lu", actor="t", now=timezone.now()
    )
    keyed = vendor_create(
        name="V", email=VENDOR_EMAIL, pgp_key=vendor_key.public, actor="t", now=timezone.now()
    )

    output = confirm(str(keyless.pk), "--no-key", "--noinput")
    with pytest.raises(CommandError, match="has a key on file"):
        confirm(str(keyed.pk), "--no-key", "--noinput")

    assert "no key (copies in clear)" in output
    entry = vendor_anchor().get(keyless.pk)
    assert entry is not None
    assert (entry.email, entry.fingerprint) == ("it@sans-cle.example.lu", "")
    assert vendor_anchor().get(keyed.pk) is None


def test_the_integration_tests_vendor_factory_adds_and_confirms_as_add_vendor_does(
    vendor_key: GpgKey,
) -> None:
    """``ConfirmedVendorFactory``, shared by the integration tests, goes through the service."""
    vendor = ConfirmedVendorFactory.create(key=vendor_key)

    assert (vendor.email, vendor.pgp_fingerprint) == (VENDOR_EMAIL, vendor_key.fingerprint)
    entry = vendor_anchor().get(vendor.pk)
    assert entry is not None
    assert (entry.email, entry.fingerprint) == (VENDOR_EMAIL, vendor_key.fingerprint)
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.VENDOR_CONFIRMED, object_id=str(vendor.pk)
    ).exists()
