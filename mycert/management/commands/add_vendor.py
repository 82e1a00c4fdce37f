"""Register a vendor ("éditeur") on a worker host, its OpenPGP key checked and confirmed.

Run it on a worker host: besides the database row it anchors the vendor in that host's
keyring (``mycert.mail.anchor``), which is what the worker obeys. Other worker hosts
confirm the vendor with ``confirm_vendor``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert.services.vendors import vendor_add_confirmed


class Command(BaseCommand):
    help = (
        "Add a vendor who may receive copies of keystores, on a worker host. With --pgp-key, "
        "the vendor's ASCII-armored OpenPGP public key is checked (one key, not expired or "
        "revoked, able to encrypt, carrying --email as a user ID), its fingerprint pinned, "
        "the key imported into this host's keyring, and mail to the vendor encrypted "
        "(PGP/MIME). A refusal exits non-zero and writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name", required=True, help="The vendor's name, as professionals see it."
        )
        parser.add_argument("--email", required=True, help="Where the vendor's copies go.")
        parser.add_argument(
            "--pgp-key",
            type=Path,
            help="File with the vendor's ASCII-armored OpenPGP public key ('-' reads stdin).",
        )
        parser.add_argument(
            "--legacy-keystore",
            action="store_true",
            help="Make 3DES/SHA-1 keystores for this vendor's software (cannot read AES-256).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        armored = ""
        key_file: Path | None = options["pgp_key"]
        if key_file is not None:
            try:
                armored = sys.stdin.read() if str(key_file) == "-" else key_file.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read the key file {key_file}: {exc}") from exc
            if not armored.strip():
                raise CommandError(f"The key file {key_file} is empty.")
        try:
            vendor = vendor_add_confirmed(
                name=options["name"],
                email=options["email"],
                pgp_key=armored,
                legacy_keystore=options["legacy_keystore"],
                actor="command:add_vendor",
                now=timezone.now(),
            )
        except (TypeError, ValueError) as exc:
            raise CommandError(f"Vendor not added: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"Vendor #{vendor.pk} {vendor.name!r} added."))
        if vendor.pgp_fingerprint:
            expires = (
                f"expires {vendor.pgp_expires_at:%Y-%m-%d}"
                if vendor.pgp_expires_at
                else "no expiry"
            )
            self.stdout.write(
                f"OpenPGP key {vendor.pgp_fingerprint} ({expires}) pinned: "
                "mail to this vendor will be encrypted."
            )
        elif settings.MYCERT_VENDOR_COPY_REQUIRES_PGP:
            self.stdout.write(
                self.style.WARNING(
                    "No OpenPGP key: professionals cannot choose this vendor until it has one "
                    "(MYCERT_VENDOR_COPY_REQUIRES_PGP is on; a copy in clear would put the "
                    "keystore and its password in one mailbox). Add the key in the admin."
                )
            )
        else:
            self.stdout.write(
                "No OpenPGP key: mail to this vendor relies on the mail gateway's protection "
                "(MYCERT_VENDOR_COPY_REQUIRES_PGP is off)."
            )
        if vendor.legacy_keystore:
            self.stdout.write("Keystores for this vendor use legacy 3DES/SHA-1 encryption.")
        self.stdout.write(
            "Confirmed on this worker host (its keyring and its list of vendors): copies go "
            "to this address and key only. On every other worker host run: "
            f"python manage.py confirm_vendor {vendor.pk}"
        )
