"""``manage.py demo_totp [USERNAME]``: the demo helpdesk's current TOTP code (DEBUG only).

``make run`` turns the admin's second factor on and gives the demo ``helpdesk`` account a
TOTP device, so that the demo shows the login as production has it. Without an
authenticator app at hand, this prints the code the app would show now (``make totp``);
with one, add the printed ``otpauth://`` URI to it. Outside DEBUG it refuses: on a real
host the secret stays in the agent's app.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Print the demo helpdesk's current TOTP code and its otpauth:// URI (DEBUG only)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", default="helpdesk")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_totp runs only with DJANGO_DEBUG=true (the demo).")
        device = (
            TOTPDevice.objects.filter(user__username=options["username"], confirmed=True)
            .order_by("pk")
            .first()
        )
        if device is None:
            raise CommandError(
                f"{options['username']!r} has no TOTP device: start `make run` first."
            )
        code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
        self.stdout.write(f"{code:0{device.digits}d}")
        self.stdout.write(
            f"(valid for {device.step} s; or add this to an authenticator app: {device.config_url})"
        )
