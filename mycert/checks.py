"""System checks (``manage.py check``): the CA and the tools MyCert cannot work without,
and (``check --deploy``) the production settings that would weaken it."""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from mycert import crl_mark, custody
from mycert.custody import CustodyError
from mycert.sealing import outbox_key_problem

_CA_CHECK_IDS = {
    "unreadable": "mycert.E002",
    "passphrase": "mycert.E003",
    "mismatch": "mycert.E004",
    "invalid": "mycert.E005",
    "token": "mycert.E006",
    "pin": "mycert.E007",
    "key": "mycert.E008",
}
_CA_HINTS = {
    "token": "Check MYCERT_PKCS11_MODULE (the library's path) and MYCERT_PKCS11_TOKEN_LABEL, "
    "and that the token is connected.",
    "pin": "Check MYCERT_PKCS11_PIN or MYCERT_PKCS11_PIN_FILE. After a refused PIN each "
    "process stops logging in until the PIN changes, so that the HSM does not lock it: "
    "fix the PIN file and the workers try it at their next use.",
    "key": "The token lacks the key of a certificate in MYCERT_CA_DIR (is it the right "
    "token?), or holds it extractable or not sensitive (import it again as sensitive and "
    "non-extractable).",
}


def holds_ca_secrets() -> bool:
    """Whether this host is given a secret to open CA keys: a worker, not a web host.

    Web hosts hold only the public CA files (docs/architecture.md « Hosts and trust boundaries »);
    their checks stop there, so
    `check --deploy` passes on them without a passphrase, PIN or outbox key.
    """
    return any(
        getattr(settings, name, "")
        for name in ("MYCERT_CA_KEY_PASSPHRASE", "MYCERT_PKCS11_PIN", "MYCERT_PKCS11_PIN_FILE")
    )


@register("mycert")
def check_ca(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Report a missing CA (warning: fresh install) or a broken one (error)."""
    weak = custody.weak_passphrases()
    if weak and not settings.DEBUG:
        return [
            Error(
                f"{', '.join(weak)} is shorter than {custody.MIN_PASSPHRASE_LENGTH} characters.",
                hint="Use a long random passphrase (e.g. `openssl rand -base64 24`), then "
                "re-encrypt the key files (docs/deploy.md, 'Key custody').",
                id="mycert.E009",
            )
        ]
    probe: custody.Probe | None = None
    try:
        if holds_ca_secrets():
            probe = custody.ca_probe()
        else:
            custody.ca_certificates_load()
    except CustodyError as exc:
        if exc.code == "missing":
            return [
                Warning(
                    str(exc),
                    hint="Create one with `python manage.py init_ca` (or `init_ca --import`).",
                    id="mycert.W001",
                )
            ]
        return [
            Error(
                str(exc),
                hint=_CA_HINTS.get(
                    exc.code,
                    "Check MYCERT_CA_DIR, the files' permissions and MYCERT_CA_KEY_PASSPHRASE.",
                ),
                id=_CA_CHECK_IDS.get(exc.code, "mycert.E005"),
            )
        ]
    return _root_key_with_the_workers(probe) if probe is not None else []


def _root_key_with_the_workers(probe: custody.Probe) -> list[CheckMessage]:
    """A worker must not hold the root key: with it, a compromised worker signs CAs."""
    if custody.root_key_online():
        return []
    messages: list[CheckMessage] = []
    if probe.root_key_in_token:
        messages.append(
            Error(
                f"The workers' token {settings.MYCERT_PKCS11_TOKEN_LABEL!r} holds the root "
                "CA key: whoever compromises a worker can sign a new issuing CA.",
                hint="Move the root key to a token of its own, kept offline "
                "(MYCERT_PKCS11_ROOT_TOKEN_LABEL), and delete it from this one "
                "(docs/deploy.md, 'The root key offline').",
                id="mycert.E012",
            )
        )
    messages.extend(
        Error(
            f"This worker holds the root CA key file {path}: whoever compromises a "
            "worker can sign a new issuing CA.",
            hint="Copy it to the offline media of the root ceremonies, then delete it "
            "here (shred -u); sign_root_crl and renew_issuing_ca take it with "
            "--root-key (docs/deploy.md, 'The root key offline').",
            id="mycert.E013",
        )
        for path in custody.root_key_files_online(custody.ca_paths())
    )
    return messages


@register("mycert")
def check_outbox_key(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """On a worker (or wherever a key is given), the outbox key must be usable."""
    configured: str = settings.MYCERT_OUTBOX_KEY
    if not configured and not holds_ca_secrets():
        return []  # a web host: it never seals nor unseals
    problem = outbox_key_problem(configured, debug=settings.DEBUG)
    if problem is None:
        return []
    return [
        Error(
            problem,
            hint="Set MYCERT_OUTBOX_KEY on every worker (only there), the same key on all.",
            id="mycert.E011",
        )
    ]


@register("mycert")
def check_gpg(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Report a missing ``gpg`` binary (needed to encrypt mail to vendors)."""
    binary: str = settings.MYCERT_GPG_BINARY
    if shutil.which(binary) is None:
        return [
            Error(
                f"The OpenPGP program {binary!r} was not found.",
                hint="Install GnuPG (Debian: apt-get install gnupg) or set MYCERT_GPG_BINARY.",
                id="mycert.E010",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_production_guards(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Rate limits need a shared cache; the helpdesk admin needs its second factor."""
    messages: list[CheckMessage] = []
    backend: str = settings.CACHES["default"]["BACKEND"]
    if settings.MYCERT_RATELIMIT_ENABLED and backend.endswith(("LocMemCache", "DummyCache")):
        messages.append(
            Warning(
                "Rate limits count in a per-process cache: each web process allows the full rate.",
                hint="Set CACHE_URL to the Redis server (redis://host:6379/2).",
                id="mycert.W020",
            )
        )
    if not settings.MYCERT_ADMIN_REQUIRE_OTP:
        messages.append(
            Warning(
                "The helpdesk admin (/admin/) does not ask for a TOTP code.",
                hint="Unset MYCERT_ADMIN_REQUIRE_OTP (or set it to true) outside development.",
                id="mycert.W021",
            )
        )
    return messages


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@register(Tags.security, deploy=True)
def check_mail_relay(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Keystores leave through the relay: a remote relay over plain SMTP sees them in clear."""
    backend: str = settings.EMAIL_BACKEND
    if not backend.endswith("smtp.EmailBackend"):
        return []
    if settings.EMAIL_USE_TLS or settings.EMAIL_USE_SSL or _is_loopback(settings.EMAIL_HOST):
        # A relay on this host (an MTA that forwards over TLS) is the operator's choice.
        return []
    return [
        Warning(
            f"Mail goes to {settings.EMAIL_HOST} over plain SMTP (no STARTTLS, no TLS).",
            hint="Use EMAIL_URL=smtp+tls://host:587 (STARTTLS) or smtp+ssl://host:465.",
            id="mycert.W040",
        )
    ]


@register(Tags.security, deploy=True)
def check_pki_base_url(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """CRL and OCSP addresses are written into certificates for years: keep them http."""
    if not settings.MYCERT_PKI_BASE_URL.startswith("https://"):
        return []
    return [
        Warning(
            "MYCERT_PKI_BASE_URL is an https address: it is written into every certificate "
            "(CRL distribution point, OCSP, caIssuers) for its whole life, and relying "
            "services fetch CRLs and OCSP over plain http (RFC 5280 §4.2.1.13, RFC 5019 §5); "
            "many cannot follow https or would need a CRL to check the server's own "
            "certificate.",
            hint="Set MYCERT_PKI_BASE_URL=http://<host> (these answers are signed; "
            "they need no TLS).",
            id="mycert.W041",
        )
    ]


# At least 256 bits, as a random string from `secrets.token_urlsafe(32)` (43 characters).
_AUDIT_KEY_MIN_LENGTH = 32


@register(Tags.security, deploy=True)
def check_audit_key(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Without its key, the audit chain can be rewritten by anyone with database access."""
    key: str = settings.MYCERT_AUDIT_KEY
    if not key:
        return [
            Warning(
                "MYCERT_AUDIT_KEY is not set: audit events are chained with plain SHA-256, "
                "which anyone who can write to the database can recompute.",
                hint="Set MYCERT_AUDIT_KEY on every web and worker host, from the secret "
                "store (python -c 'import secrets; print(secrets.token_urlsafe(32))').",
                id="mycert.W042",
            )
        ]
    if len(key) < _AUDIT_KEY_MIN_LENGTH:
        return [
            Warning(
                f"MYCERT_AUDIT_KEY is {len(key)} characters long; a guessable key lets a "
                "database user forge the audit chain.",
                hint=f"Use at least {_AUDIT_KEY_MIN_LENGTH} random characters.",
                id="mycert.W043",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_request_proof(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Workers verify each request's ID token; its age is counted from the login.

    (An http or loopback ``OIDC_ISSUER``, from which workers would read the provider's
    keys, is W051 of :func:`check_identity_and_addresses`.)
    """
    messages: list[CheckMessage] = []
    session_max: int = settings.MYCERT_SESSION_MAX_SECONDS
    if session_max and session_max >= settings.MYCERT_REQUEST_PROOF_MAX_AGE:
        messages.append(
            Warning(
                "MYCERT_REQUEST_PROOF_MAX_AGE is not longer than MYCERT_SESSION_MAX_SECONDS: "
                "a request sent late in a session can reach a worker with a proof of login "
                "already too old, and fail as unproven.",
                hint="Keep MYCERT_REQUEST_PROOF_MAX_AGE a few hours above the session's "
                "lifetime (default 86400 s against 28800 s).",
                id="mycert.W061",
            )
        )
    return messages


#: The demo's client secret (config/settings.py default, `make run`): public, in the repository.
_DEMO_OIDC_CLIENT_SECRET = "mycert-demo-secret"  # noqa: S105 - the value warned about


def _url_is_loopback(url: str) -> bool:
    return _is_loopback(urlsplit(url).hostname or "")


@register(Tags.security, deploy=True)
def check_identity_and_addresses(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The login and the site's own address: values fit for the demo, never for production."""
    messages: list[CheckMessage] = []
    if settings.OIDC_CLIENT_SECRET == _DEMO_OIDC_CLIENT_SECRET:
        messages.append(
            Warning(
                "OIDC_CLIENT_SECRET is the demo's secret, published with MyCert's source: "
                "anyone can present themselves to the provider as MyCert.",
                hint="Set OIDC_CLIENT_SECRET to the secret the agency's provider issued.",
                id="mycert.W050",
            )
        )
    issuer: str = settings.OIDC_ISSUER
    if not issuer.startswith("https://") or _url_is_loopback(issuer):
        messages.append(
            Warning(
                f"OIDC_ISSUER is {issuer}: a plain-http or loopback provider (the demo's "
                "mock). Logins, their ID tokens and the signing keys would come from it.",
                hint="Set OIDC_ISSUER to the agency portal's https address.",
                id="mycert.W051",
            )
        )
    base_url: str = settings.MYCERT_BASE_URL
    if not base_url.startswith("https://"):
        messages.append(
            Warning(
                f"MYCERT_BASE_URL is {base_url}: the login redirect, links in e-mails and "
                "secure cookies need the site's https address.",
                hint="Set MYCERT_BASE_URL=https://<the public host name>.",
                id="mycert.W052",
            )
        )
    return messages


def check_audit_head_export(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The audit chain's head, and its pinned first keyed event, need a home outside the
    database: without it a database writer can cut the chain's tail or rewrite it all as
    plain SHA-256 links and `verify_audit` cannot tell. Beat exports it on workers, so
    the check is theirs (a web host neither exports nor can write there)."""
    if settings.MYCERT_AUDIT_HEAD_FILE or not holds_ca_secrets():
        return []
    return [
        Warning(
            "MYCERT_AUDIT_HEAD_FILE is not set: the audit chain's head and its first keyed "
            "event are exported to the log only, and `verify_audit` has nothing outside "
            "the database to compare the chain with.",
            hint="Set MYCERT_AUDIT_HEAD_FILE on the beat worker to an append-only file "
            "that web hosts and the database's users cannot write (docs/deploy.md §15).",
            id="mycert.W054",
        )
    ]


@register(Tags.security, deploy=True)
def check_pin_source(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """The HSM PIN in the environment shows in /proc/<pid>/environ and in every child."""
    if not settings.MYCERT_PKCS11_PIN:
        return []
    return [
        Warning(
            "MYCERT_PKCS11_PIN gives the HSM PIN in the environment: every child process "
            "inherits it and /proc/<pid>/environ shows it.",
            hint="Put the PIN in a file readable by the worker's user only (mode 0400) and "
            "set MYCERT_PKCS11_PIN_FILE instead (docs/deploy.md §12).",
            id="mycert.W053",
        )
    ]


@register("mycert")
def check_crl_high_water_mark(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """On a worker, the CRL high-water mark must be readable and its directory writable:
    otherwise the first publication is refused (issue 20 §2, docs/deploy.md §16)."""
    if not holds_ca_secrets():
        return []  # web hosts never publish
    path = Path(settings.MYCERT_CRL_HIGH_WATER_FILE)
    problem = None
    try:
        crl_mark.read_mark("")
    except crl_mark.CrlMarkError as exc:
        problem = str(exc)
    else:
        directory = path.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        if not os.access(directory, os.W_OK):
            problem = f"The CRL high-water mark's directory {directory} is not writable here."
    if problem is None:
        return []
    return [
        Error(
            problem,
            hint="Point MYCERT_CRL_HIGH_WATER_FILE at a file of the worker's user, on the "
            "worker's own disk; never delete or lower it (docs/deploy.md §16).",
            id="mycert.E050",
        )
    ]
