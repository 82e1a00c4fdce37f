"""The two host roles of docs/architecture.md « Hosts and trust boundaries » as environments: a web
host holds no secret.

One place builds each role's environment, so a test can run the same journey with the
worker's keys in files or (``MYCERT_CA_BACKEND=pkcs11``) in a token.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: The CA files a web host gets: certificates and the root's CRL, never a key.
PUBLIC_CA_FILES = ("root.pem", "issuing.pem", "ocsp.pem", "root.crl")

#: Variables only workers may hold (docs/architecture.md « Hosts and trust boundaries »).
WORKER_SECRETS = (
    "MYCERT_CA_KEY_PASSPHRASE",
    "MYCERT_OCSP_KEY_PASSPHRASE",
    "MYCERT_PKCS11_PIN",
    "MYCERT_PKCS11_PIN_FILE",
    "MYCERT_OUTBOX_KEY",
)


def public_ca_copy(source: Path, target: Path) -> Path:
    """Copy a CA folder's public files into ``target`` (created); return it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLIC_CA_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    # The root's OCSP answers on the issuing CA, copied with root.crl (docs/deploy.md §4).
    if (source / "root-ocsp").is_dir():
        shutil.copytree(source / "root-ocsp", target / "root-ocsp", dirs_exist_ok=True)
    return target


def without_worker_secrets(env: dict[str, str]) -> dict[str, str]:
    """``env`` as a web host gets it: every worker secret removed."""
    return {name: value for name, value in env.items() if name not in WORKER_SECRETS}
