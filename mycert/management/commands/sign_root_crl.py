"""Re-sign the root's CRL (root.crl): the offline root's yearly ceremony."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert import custody


class Command(BaseCommand):
    help = (
        "Re-sign MYCERT_CA_DIR/root.crl with the root key (--root-key, MYCERT_ROOT_KEY_FILE, "
        "root-key.pem, or the root's own PKCS#11 token), valid 365 days, with the next "
        "cRLNumber, and the root's OCSP answers on the issuing CA (root-ocsp/). Needs no "
        "database: run it on the offline root host, then copy root.crl and root-ocsp/ to the "
        "web hosts."
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

        parser.add_argument(
            "--revoke-issuing",
            metavar="SERIAL",
            default=None,
            help="Revoke this issuing CA certificate (its serial number in hex, as "
            "`openssl x509 -serial` prints it): it is listed in the root CRL from now on and "
            "the root's OCSP answer on it says revoked. Needs --reason. docs/deploy.md, "
            "'The issuing CA key is compromised'.",
        )
        parser.add_argument(
            "--reason",
            choices=[reason.value for reason in CA_REASONS],
            default=None,
            help="The RFC 5280 §5.3.1 reason: cACompromise after a compromise of the "
            "issuing key, superseded or cessationOfOperation when it is retired.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        revoke = _revocation(options["revoke_issuing"], options["reason"])
        try:
            if revoke is not None:
                _require_known_issuing(revoke[0])
            number = custody.root_crl_sign(
                now=now, root_key_path=options["root_key"], revoke_issuing=revoke
            )
        except custody.CustodyError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            custody.tokens_close()
        paths = custody.ca_paths()
        if revoke is not None:
            self.stdout.write(
                self.style.WARNING(
                    f"Issuing CA {revoke[0]:x} revoked ({revoke[1].value}): every certificate "
                    "it issued is refused by relying services that check the whole chain."
                )
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"{paths.root_crl}: CRL #{number}, next update "
                f"{now + custody.ROOT_CRL_VALIDITY:%Y-%m-%d}. Copy it and "
                f"{custody.ROOT_OCSP_DIRECTORY}/ to every web host."
            )
        )


# RFC 5280 §5.3.1 reasons that apply to a CA certificate (keyCompromise is the end
# entity's, cACompromise the CA's; removeFromCRL belongs to delta CRLs).
CA_REASONS = (
    x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.unspecified,
)


def _revocation(serial: str | None, reason: str | None) -> tuple[int, x509.ReasonFlags] | None:
    if serial is None:
        if reason is not None:
            raise CommandError("--reason only goes with --revoke-issuing.")
        return None
    if reason is None:
        raise CommandError("--revoke-issuing needs --reason (e.g. cACompromise).")
    text = serial.strip().lower().removeprefix("serial=").removeprefix("0x").replace(":", "")
    try:
        number = int(text, 16)
    except ValueError:
        raise CommandError(f"{serial!r} is not a serial number in hex.") from None
    if number <= 0:
        raise CommandError(f"{serial!r} is not a serial number in hex.")
    return number, x509.ReasonFlags(reason)


def _require_known_issuing(serial: int) -> None:
    """Refuse a serial that names none of this root's issuing CA certificates (a typo)."""
    paths = custody.ca_paths()
    root = custody.ca_certificates_load().root
    known = {c.serial_number for c in custody.issuing_certificates(paths, root)}
    if serial not in known:
        listed = ", ".join(f"{n:x}" for n in sorted(known)) or "none"
        raise CommandError(
            f"{serial:x} is not an issuing CA certificate of this root in {paths.directory} "
            f"(issuing.pem, issuing-<serial>.pem: {listed})."
        )
