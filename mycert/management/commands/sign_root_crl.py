"""Re-sign the root's CRL (root.crl): the offline root's yearly ceremony."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert import ca_store


class Command(BaseCommand):
    help = (
        "Re-sign MYCERT_CA_DIR/root.crl with the root key (--root-key, MYCERT_ROOT_KEY_FILE, "
        "root-key.pem, or the root's own PKCS#11 token), valid 365 days, with the next cRLNumber. Needs no database: "
        "run it on the offline root host, then copy root.crl to the web hosts."
    )
    # The offline root host has no database, broker or issuing key to check.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--root-key",
            type=Path,
            default=None,
            help="The root key file (PKCS#8, MYCERT_ROOT_KEY_PASSPHRASE), e.g. on removable "
            "media; default MYCERT_ROOT_KEY_FILE, MYCERT_CA_DIR/root-key.pem, or the root's "
            "token (MYCERT_PKCS11_ROOT_TOKEN_LABEL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            number = ca_store.sign_root_crl(now=now, root_key_path=options["root_key"])
        except ca_store.CaStoreError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            ca_store.close_tokens()
        paths = ca_store.configured_paths()
        self.stdout.write(
            self.style.SUCCESS(
                f"{paths.root_crl}: CRL #{number}, next update "
                f"{now + ca_store.ROOT_CRL_VALIDITY:%Y-%m-%d}. Copy it to every web host."
            )
        )
