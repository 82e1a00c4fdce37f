"""Run the whole service on embedded defaults with demo data (the README's "run" command).

Starts, as child processes: a local OpenID provider (``oidc-provider-mock``) with demo
professionals, an SMTP sink storing mail in ``var/mail`` (a Maildir), a Celery worker
with beat on the filesystem broker, and the web server. Ctrl-C stops them all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mycert import ca_store
from mycert.models import Vendor

DEMO_PROFESSIONALS = [
    {
        "sub": "dr-anne-muller",
        "given_name": "Anne",
        "family_name": "Muller",
        "name": "Anne Muller",
        "email": "anne.muller@cabinet-muller.lu",
        "email_verified": True,
        "professional_id": "LU-MED-100234",
        "acr": "urn:luxtrust:loa:high",
        "locale": "fr",
    },
    {
        "sub": "dr-jean-schmit",
        "given_name": "Jean",
        "family_name": "Schmit",
        "name": "Jean Schmit",
        "email": "jean.schmit@pharmacie-schmit.lu",
        "email_verified": True,
        "professional_id": "LU-PHA-200871",
        "acr": "urn:luxtrust:loa:substantial",
        "locale": "de",
    },
    {
        "sub": "weak-login",
        "given_name": "Paul",
        "family_name": "Weber",
        "name": "Paul Weber",
        "email": "paul.weber@example.lu",
        "email_verified": True,
        "professional_id": "LU-MED-300555",
        "acr": "urn:esante:loa:password",
        "locale": "fr",
    },
    {
        "sub": "not-a-professional",
        "given_name": "Claire",
        "family_name": "Hoffmann",
        "name": "Claire Hoffmann",
        "email": "claire.hoffmann@example.lu",
        "email_verified": True,
        "acr": "urn:luxtrust:loa:high",
        "locale": "en",
    },
]


class Command(BaseCommand):
    help = "Set up demo data and run MyCert with a local OpenID provider, mail sink and worker."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--oidc-port", type=int, default=9400)
        parser.add_argument("--smtp-port", type=int, default=8025)
        parser.add_argument(
            "--setup-only",
            action="store_true",
            help="Prepare the database, CA and demo data, then exit.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            # The demo makes a superuser with a password printed in the README.
            raise CommandError("demo runs only with DJANGO_DEBUG=true; it changed nothing.")
        var = Path(settings.VAR_DIR)
        call_command("migrate", verbosity=0)
        if not ca_store.configured_paths().issuing_cert.exists():
            call_command("init_ca")
        call_command("check")
        self._demo_vendors(var)
        self._demo_admin()
        if options["setup_only"]:
            return
        self._run(var, options)

    def _demo_vendors(self, var: Path) -> None:
        from mycert.services.vendors import vendor_create

        if Vendor.objects.exists():
            return
        armored = self._demo_vendor_key(var)
        vendor_create(
            name="Logiciel Médical SA (OpenPGP)",
            email="support@logiciel-medical.lu",
            pgp_key=armored,
            legacy_keystore=False,
            actor="system",
            now=timezone.now(),
        )
        vendor_create(
            name="CabinetSoft Sàrl",
            email="installation@cabinetsoft.lu",
            legacy_keystore=True,
            actor="system",
            now=timezone.now(),
        )
        self.stdout.write("Demo vendors created (one with an OpenPGP key in var/demo-vendor-gpg).")

    def _demo_vendor_key(self, var: Path) -> str:
        """Make the demo vendor's OpenPGP key, so its encrypted copies can be read."""
        home = var / "demo-vendor-gpg"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        gpg = [settings.MYCERT_GPG_BINARY, "--homedir", str(home), "--batch"]
        listed = subprocess.run([*gpg, "--list-keys"], capture_output=True, text=True, check=False)  # noqa: S603
        if "support@logiciel-medical.lu" not in listed.stdout:
            subprocess.run(  # noqa: S603
                [
                    *gpg,
                    "--passphrase",
                    "",
                    "--quick-gen-key",
                    "Logiciel Médical SA <support@logiciel-medical.lu>",
                    # gpg's default algorithm makes a signing key with an encryption subkey.
                    "default",
                    "default",
                    "2y",
                ],
                check=True,
                capture_output=True,
            )
        exported = subprocess.run(  # noqa: S603
            [*gpg, "--armor", "--export", "support@logiciel-medical.lu"],
            check=True,
            capture_output=True,
            text=True,
        )
        return exported.stdout

    def _demo_admin(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        user_model = get_user_model()
        if user_model.objects.filter(username="helpdesk").exists():
            return
        # Demo accounts on a local, DEBUG-only instance; printed in the banner.
        helpdesk_password, admin_password = "helpdesk-demo-2026", "admin-demo-2026"
        user = user_model.objects.create_user(
            "helpdesk", email="helpdesk@esante.lu", password=helpdesk_password, is_staff=True
        )
        user.groups.add(Group.objects.get(name="Helpdesk"))
        user_model.objects.create_superuser(
            "admin", email="admin@esante.lu", password=admin_password
        )

    def _run(self, var: Path, options: dict[str, Any]) -> None:
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ)
        env.setdefault("DJANGO_DEBUG", "true")
        env["OIDC_ISSUER"] = f"http://127.0.0.1:{options['oidc_port']}"
        env["EMAIL_URL"] = f"smtp://127.0.0.1:{options['smtp_port']}"
        env["MYCERT_BASE_URL"] = f"http://127.0.0.1:{options['port']}"
        oidc = [str(bin_dir / "oidc-provider-mock"), "--port", str(options["oidc_port"])]
        for professional in DEMO_PROFESSIONALS:
            oidc += ["--user-claims", json.dumps(professional)]
        maildir = var / "mail"
        commands = {
            "openid-provider": oidc,
            "mail-sink": [
                sys.executable,
                "-m",
                "mycert.mail.sink",
                "--port",
                str(options["smtp_port"]),
                "--maildir",
                str(maildir),
            ],
            "worker": [
                str(bin_dir / "celery"),
                "-A",
                "config",
                "worker",
                "--beat",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--schedule",
                str(var / "celerybeat-schedule"),
            ],
            "web": [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{options['port']}",
                "--noreload",
            ],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, command in commands.items():
                processes[name] = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR)  # noqa: S603
            self._wait_for(f"http://127.0.0.1:{options['port']}/", "web server")
            self._wait_for(
                f"{env['OIDC_ISSUER']}/.well-known/openid-configuration", "OpenID provider"
            )
            self._banner(options, maildir)
            while all(p.poll() is None for p in processes.values()):
                time.sleep(1)
            stopped = [name for name, p in processes.items() if p.poll() is not None]
            self.stderr.write(f"Stopped unexpectedly: {', '.join(stopped)}; shutting down.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping…")
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _wait_for(self, url: str, what: str) -> None:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310  (loopback, fixed URL)
                    return
            except OSError:
                time.sleep(0.5)
        self.stderr.write(f"The {what} did not answer at {url}.")

    def _banner(self, options: dict[str, Any], maildir: Path) -> None:
        mutt = "mutt -f " + str(maildir) if shutil.which("mutt") else f"ls {maildir}/new"
        lines = [
            "",
            "MyCert is running with demo data:",
            f"  Professionals:  http://127.0.0.1:{options['port']}/  → “Log in with LuxTrust”, then pick",
            "                  dr-anne-muller (fr) or dr-jean-schmit (de) at the demo OpenID provider;",
            "                  weak-login and not-a-professional show the refusal pages.",
            f"  Helpdesk admin: http://127.0.0.1:{options['port']}/admin/  helpdesk / helpdesk-demo-2026",
            "                  (superuser: admin / admin-demo-2026)",
            f"  Mail received:  {maildir} (Maildir; {mutt})",
            "  Open a keystore: openssl pkcs12 -info -in FILE.p12 -noout  (password from the other e-mail)",
            "  Vendor copies are OpenPGP-encrypted: gpg --homedir var/demo-vendor-gpg --decrypt",
            "Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))
