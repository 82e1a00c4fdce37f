"""Create (or import) the agency's CA in ``MYCERT_CA_DIR``; never overwrite one."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert import custody
from mycert.models import AuditEvent
from mycert.pki import KeyType
from mycert.services.audit import audit_record
from mycert.services.publication import crl_publish


class Command(BaseCommand):
    help = (
        "Create a root CA, an issuing CA and an OCSP responder certificate in MYCERT_CA_DIR, "
        "keys encrypted with MYCERT_CA_KEY_PASSPHRASE, or generated inside the PKCS#11 token "
        "with MYCERT_CA_BACKEND=pkcs11. The root key goes to its own file and passphrase "
        "(MYCERT_ROOT_KEY_PASSPHRASE) or its own token (MYCERT_PKCS11_ROOT_TOKEN_LABEL), to "
        "be taken offline; the command prints how. Refuses to overwrite an existing CA. "
        "With --import, take an existing root and issuing CA from PEM files instead."
    )
    # The checks would only say that there is no CA yet.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--key-type",
            choices=[k.value for k in KeyType],
            default=KeyType.RSA_3072.value,
            help="Key type of the root and issuing CA (default rsa-3072).",
        )
        parser.add_argument(
            "--organization",
            default=None,
            help="O= of the CA names (default MYCERT_CERT_ORGANIZATION).",
        )
        parser.add_argument(
            "--import", dest="import_ca", action="store_true", help="Import an existing CA."
        )
        parser.add_argument(
            "--root-cert", type=Path, help="With --import: the root CA certificate (PEM)."
        )
        parser.add_argument(
            "--root-key", type=Path, help="With --import: the root CA private key (PEM)."
        )
        parser.add_argument(
            "--issuing-cert", type=Path, help="With --import: the issuing CA certificate (PEM)."
        )
        parser.add_argument(
            "--issuing-key", type=Path, help="With --import: the issuing CA private key (PEM)."
        )
        parser.add_argument(
            "--root-crl",
            type=Path,
            help="With --import: the root's latest CRL (DER or PEM); the new root CRL's "
            "number continues above it (it is time-based in any case).",
        )
        parser.add_argument(
            "--root-key-out",
            type=Path,
            default=None,
            help="File backend: write the root key there (e.g. removable media) instead of "
            "MYCERT_ROOT_KEY_FILE or MYCERT_CA_DIR/root-key.pem.",
        )
        parser.add_argument(
            "--key-passphrase-env",
            default=None,
            help="With --import: name of an environment variable holding the passphrase of the "
            "imported (encrypted PKCS#8) keys; otherwise it is asked on the terminal.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        paths = custody.ca_paths()
        passphrase = b""
        if not custody.uses_token():
            try:
                passphrase = custody.ca_passphrase()
            except custody.CustodyError as exc:
                raise CommandError(str(exc)) from exc
            weak = custody.weak_passphrases()
            if weak and not settings.DEBUG:
                raise CommandError(
                    f"{', '.join(weak)} must be at least {custody.MIN_PASSPHRASE_LENGTH} "
                    "characters in production; refusing to write CA keys with it."
                )
        now = timezone.now()
        try:
            if options["import_ca"]:
                self._import(paths, passphrase, options, now)
            else:
                custody.ca_create(
                    paths,
                    passphrase,
                    organization=options["organization"] or settings.MYCERT_CERT_ORGANIZATION,
                    country=settings.MYCERT_CERT_COUNTRY,
                    key_type=KeyType(options["key_type"]),
                    now=now,
                    root_key_path=options["root_key_out"],
                )
        except custody.CustodyError as exc:
            raise CommandError(str(exc)) from exc
        loaded = custody.ca_load()
        audit_record(
            actor="system",
            action=(
                AuditEvent.Action.CA_IMPORTED
                if options["import_ca"]
                else AuditEvent.Action.CA_CREATED
            ),
            details={
                "issuing_ca": loaded.issuing.certificate.subject.rfc4514_string(),
                "issuing_ca_serial": format(loaded.issuing.certificate.serial_number, "x"),
            },
        )
        # Relying services can fetch a (still empty) CRL from the first minute.
        first_crl = crl_publish(now=now)
        self.stdout.write(self.style.SUCCESS(f"CA ready in {paths.directory}:"))
        for certificate, label in (
            (loaded.root_certificate, "root"),
            (loaded.issuing.certificate, "issuing"),
        ):
            self.stdout.write(
                f"  {label:8} {certificate.subject.rfc4514_string()}  "
                f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}"
            )
        self.stdout.write(f"  CRL #{first_crl.number} published.")
        self._say_how_the_root_goes_offline(paths, options["root_key_out"])

    def _say_how_the_root_goes_offline(
        self, paths: custody.CaPaths, root_key_out: Path | None
    ) -> None:
        """The root key must leave the workers: say how, now, while the operator is here."""
        if custody.root_key_online():
            self.stdout.write(self.style.WARNING(custody.ROOT_ONLINE_MEANING))
            return
        if custody.uses_token():
            self.stdout.write(
                self.style.WARNING(
                    f"Next step: the root key is in the token "
                    f"{settings.MYCERT_PKCS11_ROOT_TOKEN_LABEL!r}. Disconnect that token "
                    "from this host and keep it offline (safe); connect it only for "
                    "sign_root_crl and renew_issuing_ca. Workers never see it."
                )
            )
            return
        root_key = root_key_out or custody.root_key_default_path(paths)
        self.stdout.write(
            self.style.WARNING(
                f"Next step: take the root key offline. {root_key} is encrypted with "
                "MYCERT_ROOT_KEY_PASSPHRASE: copy it to two removable media kept in the safe, "
                f"then delete it here (shred -u {root_key}). sign_root_crl and "
                "renew_issuing_ca take it with --root-key; `manage.py check` on a worker "
                "reports an error while the root key is there."
            )
        )

    def _import(
        self, paths: custody.CaPaths, passphrase: bytes, options: dict[str, Any], now: Any
    ) -> None:
        files = {
            name: options[name] for name in ("root_cert", "root_key", "issuing_cert", "issuing_key")
        }
        missing = [f"--{name.replace('_', '-')}" for name, value in files.items() if value is None]
        if missing:
            raise CommandError(f"--import needs {', '.join(missing)}.")
        contents: dict[str, bytes] = {}
        for name, path in files.items():
            try:
                contents[name] = Path(path).read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {path}: {exc.strerror}.") from exc
        previous_root_crl = None
        if options["root_crl"] is not None:
            try:
                previous_root_crl = Path(options["root_crl"]).read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {options['root_crl']}: {exc.strerror}.") from exc
        if options["key_passphrase_env"]:
            source_passphrase = os.environ.get(options["key_passphrase_env"], "").encode()
        else:
            source_passphrase = getpass.getpass("Passphrase of the imported keys: ").encode()
        custody.ca_import(
            paths,
            passphrase,
            root_cert_pem=contents["root_cert"],
            root_key_pem=contents["root_key"],
            root_key_passphrase=source_passphrase,
            issuing_cert_pem=contents["issuing_cert"],
            issuing_key_pem=contents["issuing_key"],
            issuing_key_passphrase=source_passphrase,
            now=now,
            previous_root_crl_der=previous_root_crl,
            root_key_path=options["root_key_out"],
        )
