"""Confirm a vendor on this worker host: the address and key its copies may go to.

A superuser's change in the admin (a new address, a new key, a vendor deactivated) is
only written to the database, which the workers do not believe (issue 20 §3). A
security officer runs this on each worker host: it shows the vendor's address and the
key's fingerprint as the database has them; once they match what the vendor said out
of band (typed with ``--fingerprint``, or answered at the prompt), the key is imported
into this host's keyring and the vendor anchored (``mycert.mail.anchor``). A refusal
exits non-zero and changes nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert.mail.gpg import normalize_fingerprint
from mycert.models import Vendor
from mycert.services.vendors import (
    VendorConfirmation,
    vendor_confirm,
    vendor_confirmation_preview,
)


def _grouped(fingerprint: str) -> str:
    """``A613 9DE5 …``: groups of four, as gpg prints it, for reading aloud."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


class Command(BaseCommand):
    help = (
        "Confirm a vendor's address and OpenPGP key on this worker host (run it on each): "
        "shows them, then imports the key into this host's keyring. Without --fingerprint "
        "it asks; with --noinput it needs --fingerprint (or --no-key for a vendor without one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "vendor", nargs="?", help="The vendor's number (as in the admin) or exact name."
        )
        parser.add_argument(
            "--list",
            action="store_true",
            help="List every vendor and whether this host confirmed it as the database says.",
        )
        parser.add_argument(
            "--fingerprint",
            help="The fingerprint the vendor gave you out of band; it must be the key on file.",
        )
        parser.add_argument(
            "--no-key",
            action="store_true",
            help="Confirm a vendor without an OpenPGP key (its address only).",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask; --fingerprint or --no-key says what is confirmed.",
        )

    def _vendor_id(self, given: str) -> int:
        vendor = (
            Vendor.objects.filter(pk=int(given)).first()
            if given.isdigit()
            else Vendor.objects.filter(name=given).first()
        )
        if vendor is None:
            raise CommandError(f"No vendor {given!r}.")
        return vendor.pk

    def _show(self, preview: VendorConfirmation) -> None:
        self.stdout.write(f"Vendor #{preview.vendor_id} {preview.name!r}")
        self.stdout.write(f"  address:     {preview.email}")
        if preview.key is not None:
            self.stdout.write(f"  fingerprint: {_grouped(preview.key.fingerprint)}")
            for uid in preview.key.uids:
                self.stdout.write(f"  user ID:     {uid}")
            expires = preview.key.expires_at
            self.stdout.write(
                f"  expires:     {expires:%Y-%m-%d}" if expires else "  expires:     never"
            )
        else:
            self.stdout.write("  no OpenPGP key")
        if not preview.is_active:
            self.stdout.write("  deactivated: it will be withdrawn from this host")
        anchored = preview.anchored
        if anchored is None:
            self.stdout.write("This host has not confirmed this vendor before.")
        else:
            self.stdout.write(
                f"This host confirmed {anchored.email} / "
                f"{_grouped(anchored.fingerprint) if anchored.fingerprint else 'no key'} "
                f"on {anchored.confirmed_at} ({anchored.confirmed_by})."
            )

    def _list(self) -> None:
        now = timezone.now()
        for vendor_id in Vendor.objects.order_by("pk").values_list("pk", flat=True):
            preview = vendor_confirmation_preview(vendor_id=vendor_id, now=now)
            if not preview.is_active:
                state = (
                    "deactivated, still confirmed here: withdraw it with confirm_vendor"
                    if preview.anchored is not None
                    else "deactivated"
                )
            elif preview.up_to_date:
                state = "confirmed"
            elif preview.anchored is not None:
                state = "CHANGED in the database since it was confirmed here: no copy goes"
            else:
                state = "NOT confirmed on this host: no copy goes"
            self.stdout.write(f"#{vendor_id} {preview.name!r}: {state}")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list()
            return
        if not options["vendor"]:
            raise CommandError("Name the vendor to confirm (or --list).")
        now = timezone.now()
        vendor_id = self._vendor_id(str(options["vendor"]))
        preview = vendor_confirmation_preview(vendor_id=vendor_id, now=now)
        self._show(preview)
        if preview.problem and preview.is_active:
            raise CommandError(f"Not confirmed: {preview.problem}")
        given = options["fingerprint"]
        if given:
            try:
                typed = normalize_fingerprint(given)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            if typed != preview.fingerprint:
                raise CommandError(
                    f"Not confirmed: the key on file is {preview.fingerprint or 'none'}, "
                    f"not {typed}. Do not confirm a key the vendor did not give you."
                )
        elif options["no_key"]:
            if preview.fingerprint:
                raise CommandError(
                    f"Not confirmed: the vendor has a key on file ({preview.fingerprint}); "
                    "give its fingerprint with --fingerprint."
                )
        elif not options["interactive"]:
            raise CommandError(
                "Not confirmed: with --noinput, say what you confirm with --fingerprint FPR "
                "(or --no-key)."
            )
        else:
            self._ask(preview)
        try:
            entry = vendor_confirm(
                vendor_id=vendor_id,
                fingerprint=preview.fingerprint,
                email=preview.email,
                actor="command:confirm_vendor",
                now=now,
            )
        except (TypeError, ValueError) as exc:
            raise CommandError(f"Not confirmed: {exc}") from exc
        if entry is None:
            self.stdout.write(
                self.style.SUCCESS(f"Vendor #{vendor_id} withdrawn: no copy goes to it from here.")
            )
            return
        key = f"key {entry.fingerprint}" if entry.fingerprint else "no key (copies in clear)"
        self.stdout.write(
            self.style.SUCCESS(
                f"Vendor #{vendor_id} confirmed on this worker host: {entry.email}, {key}."
            )
        )

    def _ask(self, preview: VendorConfirmation) -> None:
        what = (
            "the fingerprint above is the one the vendor gave you (by phone or letter, not "
            "by this e-mail address)"
            if preview.fingerprint
            else "copies may go in clear to the address above"
        )
        self.stdout.write(f"Confirm only if {what}.")
        if not sys.stdin.isatty():
            raise CommandError("Not confirmed: no terminal to ask; use --fingerprint.")
        answer = input("Type 'yes' to confirm: ")
        if answer.strip().lower() != "yes":
            raise CommandError("Not confirmed.")
