"""Issue a new OCSP responder certificate now (beat does it 10 days before expiry)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from mycert import custody


class Command(BaseCommand):
    help = (
        "Issue a new delegated OCSP responder certificate, signed by the issuing CA, "
        "without waiting for beat (e.g. after setting MYCERT_OCSP_KEY_PASSPHRASE: the new "
        "key file is written with it). Run it on a worker host."
    )
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            custody.ocsp_responder_renew(now=timezone.now(), force=True)
            responder = custody.ocsp_responder_load()
        except custody.CustodyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                "OCSP responder certificate renewed, valid until "
                f"{responder.certificate.not_valid_after_utc:%Y-%m-%d}."
            )
        )
