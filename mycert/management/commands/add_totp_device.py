"""``manage.py add_totp_device USERNAME``: give a staff user a TOTP device for /admin/.

Prints the otpauth:// URI (and a QR code when the optional ``qrcode`` package is
installed) for the agent's authenticator app. The URI holds the device's secret: show
it to that agent only, once. A user who already has a device is refused unless
``--replace`` is given (the old devices are then removed).
"""

from __future__ import annotations

import io
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from mycert.models import AuditEvent
from mycert.services.audit import audit_record


class Command(BaseCommand):
    help = "Create a TOTP device for a staff user and print its otpauth:// URI."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator", help="device name")
        parser.add_argument(
            "--replace", action="store_true", help="remove the user's existing TOTP devices"
        )
        parser.add_argument("--no-qr", action="store_true", help="print the URI only")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: options["username"]})
        except user_model.DoesNotExist as exc:
            raise CommandError(f"No user {options['username']!r}.") from exc
        if not user.is_staff:
            raise CommandError(
                f"{options['username']!r} is not staff: the admin would not let them in."
            )
        with transaction.atomic():
            existing = TOTPDevice.objects.filter(user=user)
            if existing.exists():
                if not options["replace"]:
                    raise CommandError(
                        f"{options['username']!r} already has a TOTP device; "
                        "--replace removes it and makes a new one."
                    )
                existing.delete()
            device = TOTPDevice.objects.create(user=user, name=options["name"], confirmed=True)
            audit_record(
                actor="system",
                action=AuditEvent.Action.ADMIN_TOTP_DEVICE_CREATED,
                target=user,
                details={"device_id": device.pk, "replaced": bool(options["replace"])},
            )
        uri: str = device.config_url
        self.stdout.write(uri)
        if not options["no_qr"]:
            self.stdout.write(_qr_text(uri))


def _qr_text(uri: str) -> str:
    try:
        import qrcode
    except ImportError:
        return "(install the optional `qrcode` package to see a QR code here)"
    code = qrcode.QRCode(border=1)
    code.add_data(uri)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()
