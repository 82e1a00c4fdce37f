"""Re-issue the issuing CA's certificate by the root (same key): an offline ceremony."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert import custody


class Command(BaseCommand):
    help = (
        "Re-issue MYCERT_CA_DIR/issuing.pem by the root, for the same issuing key, with the "
        "current profile (CertificatePolicies MYCERT_CERT_POLICY_OID, AIA caIssuers to "
        "/pki/ca/root.cer, root CRL distribution point) and a fresh validity. The old "
        "certificate stays beside it as issuing-<serial>.pem. Needs the root key and "
        "issuing.pem only: run it on the offline root host, then copy issuing.pem to the "
        "web and worker hosts."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--root-key",
            type=Path,
            default=None,
            help="The root key file (MYCERT_ROOT_KEY_PASSPHRASE); default MYCERT_ROOT_KEY_FILE, "
            "MYCERT_CA_DIR/root-key.pem, or the root's token (MYCERT_PKCS11_ROOT_TOKEN_LABEL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            certificate = custody.issuing_ca_renew(
                now=timezone.now(), root_key_path=options["root_key"]
            )
        except (custody.CustodyError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            custody.tokens_close()
        self.stdout.write(
            self.style.SUCCESS(
                f"Issuing CA re-issued: serial {certificate.serial_number:x}, valid until "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}."
            )
        )
