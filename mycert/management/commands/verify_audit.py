"""Check the audit trail's chain and its last exported head; exit non-zero on any problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mycert.models import AuditEvent
from mycert.services.audit import (
    AuditHead,
    audit_check_head,
    audit_check_pin,
    audit_verify_chain,
    read_exported_head,
)

# The log line goes on with " first_keyed=N key=F" once the chain is keyed: accepted, and
# left out (the pin needs the first keyed event's hash, which only the file carries).
_HEAD = re.compile(
    r"(?:event=)?#?(\d+)[ :](?:hash=)?([0-9a-f]{64})(?: first_keyed=\d+ key=[0-9a-f]+)?"
)


class Command(BaseCommand):
    help = (
        "Verify the audit trail (docs/architecture.md « The audit trail »): every link, "
        "keyed (HMAC with MYCERT_AUDIT_KEY) or, for events written before the key, plain SHA-256; then "
        "that the chain still reaches the last head exported outside the database "
        "(MYCERT_AUDIT_HEAD_FILE, --head-file, or --head from the log), so a cut tail "
        "is reported, and that the first keyed event pinned there is still keyed, so a "
        "rewrite as plain SHA-256 links is reported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--head-file",
            type=Path,
            help="File of exported heads (default: MYCERT_AUDIT_HEAD_FILE); its last line counts.",
        )
        parser.add_argument(
            "--head",
            help="A head copied from the log line 'audit head: event=N hash=H' ('N:H').",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checked, broken = audit_verify_chain()
        if broken is not None:
            raise CommandError(
                f"Audit chain broken at event #{broken.event_id}: {broken.problem} "
                f"({checked} events before it are intact)."
            )
        head = self._head(options)
        if head is not None:
            problem = audit_check_head(head)
            if problem is None and head.pin is not None:
                # A chain rewritten as plain links from its first keyed event on passes
                # the walk above (no plain link follows a keyed one when none is keyed).
                problem = audit_check_pin(head.pin)
            if problem is not None:
                raise CommandError(f"Audit chain {problem}.")
        keyed = AuditEvent.objects.filter(hash_scheme=AuditEvent.HashScheme.HMAC_SHA256).count()
        summary = f"Audit chain intact: {checked} events verified ({keyed} keyed)"
        if head is not None:
            summary += f"; it reaches the exported head, event #{head.event_id}"
            if head.pin is not None:
                summary += f", keyed from event #{head.pin.event_id} on"
        else:
            summary += "; no exported head to compare with"
        self.stdout.write(self.style.SUCCESS(summary + "."))

    def _head(self, options: dict[str, Any]) -> AuditHead | None:
        if options["head"]:
            match = _HEAD.fullmatch(options["head"].strip())
            if match is None:
                raise CommandError("--head takes 'N:HASH' (event id and 64 hex digits).")
            return AuditHead(event_id=int(match[1]), hash=match[2], exported_at="(--head)")
        path: Path | None = options["head_file"]
        if path is None and settings.MYCERT_AUDIT_HEAD_FILE:
            path = Path(settings.MYCERT_AUDIT_HEAD_FILE)
        if path is None:
            return None
        try:
            head = read_exported_head(path)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read the exported head: {exc}") from exc
        if head is None:
            self.stderr.write(f"No head exported in {path} yet.")
        return head
