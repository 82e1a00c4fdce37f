"""Seal the outbox's waiting payloads again with the first MYCERT_OUTBOX_KEY (a rotation)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from mycert.outbox.rows import deliveries_reseal
from mycert.sealing import SealError


class Command(BaseCommand):
    help = (
        "Seal every keystore and password still waiting in the outbox again with the first "
        "key of MYCERT_OUTBOX_KEY, so that the older keys can leave the list (run on a "
        "worker, docs/deploy.md 'Rotating the outbox key')."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            moved = deliveries_reseal()
        except SealError as exc:
            raise CommandError(
                f"{exc} Put the old key back in the list (after the new one), then run "
                "this again; nothing was lost: the rows resealed so far open with the new key."
            ) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{moved} waiting payloads sealed with the first key; the others may now be "
                "removed from MYCERT_OUTBOX_KEY."
            )
        )
