"""Vendors: ``manage.py add_vendor`` and the services behind it, with real gpg keys."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from mycert.models import AuditEvent, OperatorAlert, Vendor
from mycert.selectors import vendors_offered
from mycert.services.vendors import (
    clean_pgp_key,
    vendor_create,
    vendor_set_pgp_key,
    vendor_update,
)
from tests.support.gpg import GpgKey

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mycert_gpg_home")]


def add_vendor(*args: str) -> str:
    out = io.StringIO()
    call_command("add_vendor", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def key_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "key.asc"
    path.write_text(text)
    return str(path)


def test_add_vendor_with_key(tmp_path: Path, vendor_key: GpgKey) -> None:
    output = add_vendor(
        "--name",
        "Logiciel Santé SA",
        "--email",
        "support@vendor.example.lu",
        "--pgp-key",
        key_file(tmp_path, vendor_key.public),
    )

    vendor = Vendor.objects.get()
    assert vendor.name == "Logiciel Santé SA"
    assert vendor.email == "support@vendor.example.lu"
    assert vendor.pgp_fingerprint == vendor_key.fingerprint
    assert vendor.pgp_public_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert vendor.pgp_expires_at is not None
    assert vendor.pgp_expires_at > timezone.now()
    assert not vendor.legacy_keystore
    assert vendor_key.fingerprint in output
    event = AuditEvent.objects.get(action="vendor.created")
    assert event.actor == "command:add_vendor"
    assert event.details["pgp_fingerprint"] == vendor_key.fingerprint


def test_add_vendor_without_key_legacy() -> None:
    output = add_vendor("--name", "Ancien", "--email", "it@old.example.lu", "--legacy-keystore")

    vendor = Vendor.objects.get()
    assert vendor.pgp_fingerprint == ""
    assert vendor.legacy_keystore
    assert "No OpenPGP key" in output
    assert "3DES" in output


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("expired_key", "expired"),
        ("sign_only_key", "encryption"),
        ("revoked_key", "revoked"),
    ],
)
def test_add_vendor_refuses_unusable_keys(
    tmp_path: Path, request: pytest.FixtureRequest, fixture: str, message: str
) -> None:
    key: GpgKey = request.getfixturevalue(fixture)

    with pytest.raises(CommandError, match=message):
        add_vendor(
            "--name",
            "X",
            "--email",
            "x@vendor.example.lu",
            "--pgp-key",
            key_file(tmp_path, key.public),
        )

    assert not Vendor.objects.exists()
    assert not AuditEvent.objects.exists()


def test_add_vendor_refuses_a_private_key(tmp_path: Path, vendor_key: GpgKey) -> None:
    with pytest.raises(CommandError, match="private"):
        add_vendor(
            "--name",
            "X",
            "--email",
            "x@vendor.example.lu",
            "--pgp-key",
            key_file(tmp_path, vendor_key.secret),
        )

    assert not Vendor.objects.exists()


@pytest.mark.parametrize("text", ["garbage\n", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!\n"])
def test_add_vendor_refuses_garbage(tmp_path: Path, text: str) -> None:
    with pytest.raises(CommandError, match="Vendor not added"):
        add_vendor(
            "--name", "X", "--email", "x@vendor.example.lu", "--pgp-key", key_file(tmp_path, text)
        )

    assert not Vendor.objects.exists()


def test_add_vendor_refuses_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Cannot read"):
        add_vendor(
            "--name", "X", "--email", "x@vendor.example.lu", "--pgp-key", str(tmp_path / "nope")
        )
    with pytest.raises(CommandError, match="empty"):
        add_vendor(
            "--name", "X", "--email", "x@vendor.example.lu", "--pgp-key", key_file(tmp_path, "")
        )
    assert not Vendor.objects.exists()


def test_add_vendor_refuses_bad_email_and_duplicates() -> None:
    with pytest.raises(CommandError, match="valid e-mail"):
        add_vendor("--name", "X", "--email", "not-an-address")
    add_vendor("--name", "Éditeur", "--email", "a@vendor.example.lu")
    with pytest.raises(CommandError, match="already exists"):
        add_vendor("--name", "éditeur", "--email", "b@vendor.example.lu")
    assert Vendor.objects.count() == 1


def test_add_vendor_exits_non_zero(tmp_path: Path, expired_key: GpgKey) -> None:
    """Through the real command line: refusal → exit status 1, message on stderr."""
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "add_vendor",
            "--name",
            "X",
            "--email",
            "x@vendor.example.lu",
            "--pgp-key",
            key_file(tmp_path, expired_key.public),
        ],
        cwd=Path(__file__).resolve().parents[1],
        # Its own empty state: the key is refused before any database access.
        env={
            **os.environ,
            "MYCERT_VAR_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "Vendor not added" in result.stderr
    assert "expired" in result.stderr


def test_vendor_set_pgp_key_audits_old_and_new(vendor_key: GpgKey, key_factory: object) -> None:
    vendor = vendor_create(
        name="V", email="v@vendor.example.lu", actor="user:1", now=timezone.now()
    )
    vendor = vendor_set_pgp_key(
        vendor_id=vendor.pk, pgp_key=vendor_key.public, actor="user:1", now=timezone.now()
    )
    assert vendor.pgp_fingerprint == vendor_key.fingerprint

    removed = vendor_set_pgp_key(
        vendor_id=vendor.pk, pgp_key="", actor="user:2", now=timezone.now()
    )

    assert removed.pgp_fingerprint == ""
    assert removed.pgp_public_key == ""
    assert removed.pgp_expires_at is None
    event = AuditEvent.objects.filter(action="vendor.changed").latest("pk")
    assert event.details["fingerprint"] == {"old": vendor_key.fingerprint, "new": ""}


def test_vendor_set_pgp_key_refuses_and_keeps_the_old_key(
    vendor_key: GpgKey, expired_key: GpgKey
) -> None:
    vendor = vendor_create(
        name="V",
        email="v@vendor.example.lu",
        pgp_key=vendor_key.public,
        actor="user:1",
        now=timezone.now(),
    )

    with pytest.raises(ValueError, match="expired"):
        vendor_set_pgp_key(
            vendor_id=vendor.pk, pgp_key=expired_key.public, actor="user:1", now=timezone.now()
        )

    vendor.refresh_from_db()
    assert vendor.pgp_fingerprint == vendor_key.fingerprint


def test_clean_pgp_key_for_forms(vendor_key: GpgKey, sign_only_key: GpgKey) -> None:
    info = clean_pgp_key(vendor_key.public, now=timezone.now())
    assert info.fingerprint == vendor_key.fingerprint

    with pytest.raises(ValidationError) as caught:
        clean_pgp_key(sign_only_key.public, now=timezone.now())
    assert caught.value.code == "invalid_pgp_key"
    assert "encryption" in caught.value.messages[0]


# --- Who may change a vendor, and who hears of it ---------------------------------------------


def test_add_vendor_without_a_key_says_professionals_cannot_choose_it() -> None:
    output = add_vendor("--name", "Sans clé", "--email", "it@nokey.example.lu")

    assert "professionals cannot choose this vendor" in output
    assert "MYCERT_VENDOR_COPY_REQUIRES_PGP" in output
    assert not vendors_offered(now=timezone.now()).exists()


def test_only_vendors_with_a_usable_key_are_offered(
    settings: pytest.FixtureRequest, vendor_key: GpgKey
) -> None:
    now = timezone.now()
    with_key = vendor_create(
        name="Avec clé", email="a@vendor.example.lu", pgp_key=vendor_key.public, actor="t", now=now
    )
    vendor_create(name="Sans clé", email="b@vendor.example.lu", actor="t", now=now)
    expired = vendor_create(
        name="Clé échue", email="c@vendor.example.lu", pgp_key=vendor_key.public, actor="t", now=now
    )
    Vendor.objects.filter(pk=expired.pk).update(pgp_expires_at=now - timedelta(days=1))

    assert list(vendors_offered(now=now)) == [with_key]
    settings.MYCERT_VENDOR_COPY_REQUIRES_PGP = False  # type: ignore[attr-defined]
    assert vendors_offered(now=now).count() == 3


def test_a_changed_address_or_key_is_audited_with_both_fingerprints_and_alerts_security(
    vendor_key: GpgKey, key_factory: Any
) -> None:
    vendor = vendor_create(
        name="V",
        email="v@vendor.example.lu",
        pgp_key=vendor_key.public,
        actor="t",
        now=timezone.now(),
    )
    new_key: GpgKey = key_factory("Other <other@vendor.example.lu>")

    vendor_update(
        vendor_id=vendor.pk,
        email="elsewhere@attacker.example",
        pgp_key=new_key.public,
        actor="user:5",
        now=timezone.now(),
    )

    event = AuditEvent.objects.filter(action="vendor.changed").latest("pk")
    assert event.actor == "user:5"
    assert event.details["fingerprint"] == {
        "old": vendor_key.fingerprint,
        "new": new_key.fingerprint,
    }
    assert event.details["changed"]["email"] == {
        "old": "v@vendor.example.lu",
        "new": "elsewhere@attacker.example",
    }
    alert = OperatorAlert.objects.filter(kind="vendor_changed").latest("pk")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert "éditeur modifié" in alert.subject
    assert "elsewhere@attacker.example" in alert.body
    assert vendor_key.fingerprint in alert.body
    assert new_key.fingerprint in alert.body
    # Only the security officer's confirmation on each worker host makes it count.
    assert f"python manage.py confirm_vendor {vendor.pk}" in alert.body


def test_a_new_vendor_alerts_security() -> None:
    vendor_create(name="Nouveau", email="n@vendor.example.lu", actor="t", now=timezone.now())

    alert = OperatorAlert.objects.get(kind="vendor_changed")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert "Nouveau" in alert.subject
    assert "les copies ne peuvent pas être chiffrées" in alert.body


def test_a_refused_change_writes_nothing(expired_key: GpgKey) -> None:
    vendor = vendor_create(name="V", email="v@vendor.example.lu", actor="t", now=timezone.now())
    events, alerts = AuditEvent.objects.count(), OperatorAlert.objects.count()

    with pytest.raises(ValueError, match="expired"):
        vendor_update(
            vendor_id=vendor.pk,
            email="x@elsewhere.example",
            pgp_key=expired_key.public,
            actor="t",
            now=timezone.now(),
        )

    assert Vendor.objects.get(pk=vendor.pk).email == "v@vendor.example.lu"
    assert (AuditEvent.objects.count(), OperatorAlert.objects.count()) == (events, alerts)
