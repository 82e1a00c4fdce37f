"""Run the whole service on embedded defaults with demo data (the README's "run" command).

Starts, as child processes: a local OpenID provider (``oidc-provider-mock``) with demo
professionals, an SMTP sink storing mail in ``var/mail`` (a Maildir), a Celery worker
with beat on the filesystem broker, and the web server. Ctrl-C (SIGINT) or SIGTERM
stops them all, with their own children and the gpg-agents of the demo's keyrings, so
that no process is left and every port is free again (:class:`Children`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone, translation
from django.utils.translation import gettext

from mycert import custody
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


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: leave the main loop and stop every child."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Stopped` while the demo runs."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Children:
    """Every process the demo starts, all stopped in one place (:meth:`stop_all`).

    Each child leads its own process group: SIGTERM goes to the child, which stops its
    own children as it knows how (Celery's warm shutdown of its pool and beat); SIGKILL
    after ``grace`` seconds, and then to whatever is left in its group. A signal sent only to the demo (``kill PID``, ``make run`` stopped by its
    supervisor) therefore stops everything, as Ctrl-C in the terminal does. gpg-agent
    detaches from whoever started it; ``gpgconf --kill all`` stops it per keyring.
    """

    env: dict[str, str]
    cwd: Path
    gnupg_homes: Sequence[Path] = ()
    grace: float = 15.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 - our own fixed commands
            list(command), env=self.env, cwd=self.cwd, start_new_session=True
        )
        self.processes[name] = process
        return process

    def exited(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def stop_all(self) -> None:
        """Stop every child and its process group, then the keyrings' gpg-agents."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # Whatever the leader left behind in its group goes too.
            self._signal_group(process, signal.SIGKILL)
        for home in self.gnupg_homes:
            if home.is_dir():
                subprocess.run(  # noqa: S603
                    [_gpgconf(), "--homedir", str(home), "--kill", "all"],
                    check=False,
                    capture_output=True,
                    env=self.env,
                )

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):  # the group has already gone
            os.killpg(process.pid, sig)  # the child leads its group (start_new_session)


def _gpgconf() -> str:
    """``gpgconf`` next to the configured gpg, or on the PATH."""
    beside = Path(shutil.which(settings.MYCERT_GPG_BINARY) or "").with_name("gpgconf")
    return str(beside) if beside.name and beside.exists() else "gpgconf"


class Command(BaseCommand):
    # Not before handle(): the checks would warn that the CA is missing (mycert.W001)
    # just before the demo creates it. handle() runs them once the CA exists.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--oidc-port", type=int, default=9400)
        parser.add_argument("--smtp-port", type=int, default=8025)
        parser.add_argument("--check-port", type=int, default=8443)
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
        if not custody.ca_paths().issuing_cert.exists():
            # As in production, the root key leaves the CA folder the workers read.
            call_command("init_ca", root_key_out=var / "offline-root" / "root-key.pem")
        call_command("check")
        self._demo_vendors(var)
        self._demo_admin()
        if options["setup_only"]:
            return
        self._run(var, options)

    def _demo_vendors(self, var: Path) -> None:
        from mycert.services.vendors import vendor_create

        if Vendor.objects.exists():
            self._confirm_demo_vendors()
            return
        armored = self._demo_vendor_key(var)
        vendor_create(
            # Named as a real vendor is: whether its key is on file shows in the admin.
            name="Logiciel Médical SA",
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
        self._confirm_demo_vendors()

    def _confirm_demo_vendors(self) -> None:
        """Confirm the demo's vendors in the worker's keyring, as ``confirm_vendor`` does.

        The worker sends vendor copies only where a security officer confirmed them on
        its host (``mycert.mail.anchor``); here the demo is that officer, and the web
        and the worker share one machine and one keyring (production does not).
        """
        from mycert.mail.anchor import vendor_anchor
        from mycert.services.vendors import vendor_confirm

        for vendor in Vendor.objects.filter(is_active=True).order_by("pk"):
            anchored = vendor_anchor().get(vendor.pk)
            if anchored is not None and (anchored.email, anchored.fingerprint) == (
                vendor.email.lower(),
                vendor.pgp_fingerprint,
            ):
                continue
            try:
                vendor_confirm(
                    vendor_id=vendor.pk,
                    fingerprint=vendor.pgp_fingerprint,
                    email=vendor.email,
                    actor="command:demo",
                    now=timezone.now(),
                )
            except ValueError as exc:
                self.stdout.write(f"Demo vendor #{vendor.pk} not confirmed: {exc}")

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
        from django_otp.plugins.otp_totp.models import TOTPDevice

        user_model = get_user_model()
        if user_model.objects.filter(username="helpdesk").exists():
            # A demo database of before the second factor: enrol its accounts now.
            for account in user_model.objects.filter(username__in=["helpdesk", "admin"]):
                if not TOTPDevice.objects.filter(user=account).exists():
                    call_command(
                        "add_totp_device", account.get_username(), "--no-qr", stdout=io.StringIO()
                    )
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
        # The admin asks staff for a TOTP code in the demo too (_run turns it on), as in
        # production; `make totp` prints the current code.
        for username in ("helpdesk", "admin"):
            call_command("add_totp_device", username, "--no-qr", stdout=io.StringIO())

    def _run(self, var: Path, options: dict[str, Any]) -> None:
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ)
        env.setdefault("DJANGO_DEBUG", "true")
        # The helpdesk's second factor, as in production (off by default in DEBUG).
        env.setdefault("MYCERT_ADMIN_REQUIRE_OTP", "true")
        env["OIDC_ISSUER"] = f"http://127.0.0.1:{options['oidc_port']}"
        env["EMAIL_URL"] = f"smtp://127.0.0.1:{options['smtp_port']}"
        env["MYCERT_BASE_URL"] = f"http://127.0.0.1:{options['port']}"
        # oidc-provider-mock, without its imports' deprecation warnings (demo_oidc).
        oidc = [sys.executable, "-m", "mycert.management.demo_oidc"]
        oidc += ["--port", str(options["oidc_port"])]
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
            # No -Q: one worker reads every queue, the revocation's too (config/settings.py).
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
        commands.update(self._self_check(var, options, env))
        children = Children(
            env=env,
            cwd=Path(settings.BASE_DIR),
            gnupg_homes=[Path(settings.MYCERT_GNUPG_HOME), var / "demo-vendor-gpg"],
        )
        with _stop_on_signals():
            try:
                for name, command in commands.items():
                    children.start(name, command)
                self._wait_for(f"http://127.0.0.1:{options['port']}/", "web server")
                self._wait_for(
                    f"{env['OIDC_ISSUER']}/.well-known/openid-configuration", "OpenID provider"
                )
                self._banner(options, maildir)
                while not children.exited():
                    time.sleep(1)
                stopped = ", ".join(children.exited())
                self.stderr.write(f"Stopped unexpectedly: {stopped}; shutting down.")
            except Stopped as stop:
                self.stdout.write(f"\nStopping ({stop})…")
            finally:
                # Further signals must not interrupt the stopping itself.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                children.stop_all()
        self.stdout.write("Stopped.")

    def _self_check(
        self, var: Path, options: dict[str, Any], env: dict[str, str]
    ) -> dict[str, list[str]]:
        """nginx in front of the self-check (deploy/nginx/mycert-check.conf), if installed."""
        from mycert.ops import selfcheck_nginx

        if selfcheck_nginx.nginx_binary() is None:
            self.stderr.write("nginx is not installed: the mutual-TLS self-check is not started.")
            return {}
        prefix = var / "check-nginx"
        certificate, key = selfcheck_nginx.server_certificate(prefix, now=timezone.now())
        site = selfcheck_nginx.check_site(
            port=options["check_port"],
            upstream=f"127.0.0.1:{options['port']}",
            certificate=certificate,
            key=key,
        )
        env["MYCERT_CHECK_BASE_URL"] = options["check_url"] = (
            f"https://127.0.0.1:{options['check_port']}"
        )
        # The self-signed server certificate, for curl --cacert (the banner, the README).
        options["check_ca"] = str(certificate)
        return {"self-check-nginx": selfcheck_nginx.nginx_command(prefix, site)}

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
        # The button's own words, from the catalogues: the page opens in French unless
        # the browser asks otherwise.
        with translation.override("fr"):
            french = gettext("Log in with LuxTrust")
        with translation.override("en"):
            english = gettext("Log in with LuxTrust")
        lines = [
            "",
            "MyCert is running with demo data:",
            f"  Professionals:  http://127.0.0.1:{options['port']}/  → « {french} »",
            f"                  (“{english}” in English), then pick",
            "                  dr-anne-muller or dr-jean-schmit at the demo OpenID provider; e-mails",
            "                  speak the portal profile's language (locale claim): French for",
            "                  Anne Muller, German for Jean Schmit; the pages follow the browser.",
            "                  weak-login and not-a-professional show the refusal pages.",
            f"  Helpdesk admin: http://127.0.0.1:{options['port']}/admin/  helpdesk / helpdesk-demo-2026",
            "                  (superuser: admin / admin-demo-2026) and a TOTP code: in another",
            "                  terminal, `make totp` prints the current one (`make totp AGENT=admin`)",
            f"  Mail received:  {maildir} (Maildir; {mutt})",
            "  Read the mail:  `make mail` in another terminal (the text, and the keystores saved",
            "                  to var/keystores/, the newest as latest.p12)",
            "  Open a keystore: openssl pkcs12 -info -noout -in var/keystores/latest.p12",
            "                  (the password is in the other e-mail)",
            "  Vendor copies are OpenPGP-encrypted: gpg --homedir var/demo-vendor-gpg --decrypt",
            *(
                [
                    f"  Self-check:     {options['check_url']}/  (mutual TLS, self-signed server",
                    "                  certificate; import a keystore from the mail, or:",
                    f"                  curl --cacert {options['check_ca']} --cert-type P12",
                    "                  --cert var/keystores/latest.p12:PASSWORD "
                    f"{options['check_url']}/status.json)",
                ]
                if options.get("check_url")
                else []
            ),
            "Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))
