"""The benchmark's own world: a dedicated database, Redis db, CA, keyrings and folders.

Everything lives under one short folder in /tmp (gpg-agent's socket paths must stay
short) and in the database ``mycert_bench`` and Redis db 9, never the ``mycert``
database nor Redis db 15 of the test suite. The environment is set before Django is
imported, so this process, the workers and gunicorn all read the same settings.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parents[1]
# MYCERT_BENCH_DATABASE (a name starting mycert_bench) and MYCERT_BENCH_REDIS_DB let a
# second run on the same machine keep to its own database and Redis db.
DATABASE_NAME = os.environ.get("MYCERT_BENCH_DATABASE", "mycert_bench")
REDIS_DB = os.environ.get("MYCERT_BENCH_REDIS_DB", "9")
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
CA_PASSPHRASE = "bench-ca-passphrase"  # noqa: S105 - a throwaway CA in /tmp
OUTBOX_KEY = "YmVuY2ggb3V0Ym94IGtleSwgdGhyb3dhd2F5IGRiISE="  # a throwaway outbox


def _check_targets(database_url: str, broker_url: str) -> None:
    # Never the developers' or the test suite's database and broker.
    name = urlsplit(database_url).path.lstrip("/")
    if not (name.startswith("mycert_bench") and name.isidentifier()):
        raise SystemExit(f"refusing to benchmark on database {name!r} (only mycert_bench*)")
    if urlsplit(broker_url).path.lstrip("/") in ("15", "0"):
        raise SystemExit(f"refusing to use broker {broker_url} (the test suite's or the default)")


@dataclass
class BenchEnv:
    root: Path
    web_port: int
    sink_port: int
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def var_dir(self) -> Path:
        return self.root / "var"

    @property
    def gnupg_home(self) -> Path:
        return self.root / "g"

    @property
    def vendor_home(self) -> Path:
        return self.root / "v"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def variables(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": DATABASE_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            # The rate-limit counters in Redis, as docs/deploy.md §2 deploys them (the
            # production default without CACHE_URL is a file cache for one host).
            "CACHE_URL": BROKER_URL,
            "EMAIL_URL": f"smtp://127.0.0.1:{self.sink_port}",
            "MYCERT_BASE_URL": self.base_url,
            # Plain http on loopback: production's HTTPS redirect turned off explicitly.
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "MYCERT_VAR_DIR": str(self.var_dir),
            "MYCERT_CA_DIR": str(self.ca_dir),
            "MYCERT_CA_KEY_PASSPHRASE": CA_PASSPHRASE,
            # A throwaway CA: its root key stays beside the others (no ceremony to run).
            "MYCERT_ROOT_KEY_ONLINE": "true",
            "MYCERT_OUTBOX_KEY": OUTBOX_KEY,
            "MYCERT_GNUPG_HOME": str(self.gnupg_home),
            # One line per task and per e-mail at INFO; a busy production worker logs
            # WARNING and up. Errors still show in the worker logs.
            "MYCERT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(BASE_DIR),
            **_proof_issuer(),
        }

    def apply(self) -> None:
        """Set the variables in this process (before Django is imported)."""
        os.environ.update(self.variables())

    def child_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.variables(), **extra}


def _proof_issuer() -> dict[str, str]:
    """The provider whose keys the workers read to verify requests' proofs of login.

    The tests' signing provider (a JWKS served on loopback by this process): the
    benchmark makes its requests without a browser login, as the tests' factories do.
    """
    from tests.support.id_tokens import ACCEPTED_ACR, CLIENT_ID, signing_provider

    return {
        "OIDC_ISSUER": signing_provider().issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "MYCERT_OIDC_ACCEPTED_ACR": ",".join(ACCEPTED_ACR),
        "MYCERT_OIDC_PROFESSIONAL_ID_CLAIM": "professional_id",
    }


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_env() -> BenchEnv:
    _check_targets(DATABASE_URL, BROKER_URL)
    root = Path(tempfile.mkdtemp(prefix="mcb", dir="/tmp"))
    env = BenchEnv(root=root, web_port=free_port(), sink_port=free_port())
    for folder in (env.var_dir, env.gnupg_home, env.vendor_home):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return env


def remove_env(env: BenchEnv) -> None:
    for home in (env.gnupg_home, env.vendor_home):
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True
        )
    shutil.rmtree(env.root, ignore_errors=True)


# --- The database ------------------------------------------------------------------------


def _admin_connection():
    import psycopg

    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)


def create_database() -> None:
    """Drop and create ``mycert_bench`` (FORCE ends connections a crashed run left)."""
    with _admin_connection() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE_NAME}")


def drop_database() -> None:
    with _admin_connection() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


# --- Django-side setup (after django.setup()) ------------------------------------------------


def migrate() -> None:
    """Migrate, and collect the static files as a deployment does (hashed names)."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)


def create_ca(key_type: str = "rsa-3072") -> None:
    """The agency's CA as in production: RSA-3072 root and issuing CA, EC P-256 OCSP."""
    from django.conf import settings
    from django.utils import timezone

    from mycert import custody
    from mycert.pki import KeyType

    custody.ca_create(
        custody.ca_paths(),
        settings.MYCERT_CA_KEY_PASSPHRASE.encode(),
        organization=settings.MYCERT_CERT_ORGANIZATION,
        country=settings.MYCERT_CERT_COUNTRY,
        key_type=KeyType(key_type),
        now=timezone.now(),
    )


def gpg(home: Path, *args: str) -> bytes:
    command = ["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback"]
    command += ["--passphrase", ""]
    return subprocess.run([*command, *args], capture_output=True, check=True).stdout


def vendor_public_key(env: BenchEnv) -> str:
    """A vendor's OpenPGP key (ed25519 + cv25519, as GnuPG makes by default)."""
    uid = "Support Bench <support@bench-vendor.example.lu>"
    gpg(env.vendor_home, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y")
    listing = gpg(env.vendor_home, "--with-colons", "--list-keys", uid).decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line[:4] == "fpr:")
    gpg(env.vendor_home, "--quick-add-key", fingerprint, "cv25519", "encr", "1y")
    return gpg(env.vendor_home, "--armor", "--export", fingerprint).decode()
