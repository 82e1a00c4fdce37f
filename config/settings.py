"""MyCert settings: one entry point, read from the environment with django-environ.

Every operator-facing name is listed in the README (« Configuration »). Embedded defaults
(SQLite, a filesystem Celery broker, state under ``var/``) let the service run with no
server; production sets ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``EMAIL_URL``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("MYCERT_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core --------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set (it may be omitted only with DJANGO_DEBUG=true)."
        )
    SECRET_KEY = "insecure-development-key-only-for-DJANGO_DEBUG"  # noqa: S105
ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set (comma-separated host names).")

MYCERT_BASE_URL: str = env.str("MYCERT_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
MYCERT_PKI_BASE_URL: str = env.str("MYCERT_PKI_BASE_URL", default=MYCERT_BASE_URL).rstrip("/")
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[MYCERT_BASE_URL])

INSTALLED_APPS = [
    # django.contrib.admin, with the helpdesk's site (second factor) as admin.site.
    "mycert.apps.MyCertAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "csp",
    "mycert.apps.MyCertConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "mycert.middleware.SessionMaxAgeMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "mycert.context_processors.service",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'mycert.sqlite3'}"),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes (embedded default only).
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Rate limits count in this cache: Redis in production (every web process must share
# the counters), process-local memory by default.
# Outside DEBUG the default is a file cache under MYCERT_VAR_DIR, shared by every process
# of the host (several hosts: Redis).
CACHES = {
    "default": env.cache_url(
        "CACHE_URL", default="locmemcache://" if DEBUG else f"filecache://{VAR_DIR / 'cache'}"
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Languages: French first, German and English ---------------------------------------
LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", _("Français")), ("de", _("Deutsch")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "mycert" / "locale"]
USE_I18N = True
TIME_ZONE = "Europe/Luxembourg"
USE_TZ = True
# Day-first dates in every language, 24-hour clock (mycert/formats/<language>/formats.py).
FORMAT_MODULE_PATH = ["mycert.formats"]

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing folder
# WhiteNoise serves static files from the web processes (gunicorn), compressed. With
# the manifest (hashed names, cached for ever) `collectstatic` must run before start:
# the default outside DEBUG; the test run, which never collects, turns it off.
MYCERT_STATIC_MANIFEST = env.bool("MYCERT_STATIC_MANIFEST", default=not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if MYCERT_STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not MYCERT_STATIC_MANIFEST  # serve straight from the apps' folders

# --- Sessions and cookies ----------------------------------------------------------------
SESSION_COOKIE_AGE = env.int("MYCERT_SESSION_SECONDS", default=30 * 60)
SESSION_SAVE_EVERY_REQUEST = True  # idle timeout, not absolute
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"  # the OpenID callback is a top-level GET from the portal
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Production is HTTPS: the redirect is on whenever DEBUG is off, whatever
# MYCERT_BASE_URL says, and with it secure cookies and HSTS. An operator who turns the
# redirect off explicitly (DJANGO_SECURE_SSL_REDIRECT=false) with a plain http base URL
# gets a site that works over plain http. CRL, OCSP, /healthz and /metrics are never
# redirected (SECURE_REDIRECT_EXEMPT below).
_HTTPS = MYCERT_BASE_URL.startswith("https://") or not DEBUG
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_HTTPS)
_SECURE = MYCERT_BASE_URL.startswith("https://") or SECURE_SSL_REDIRECT
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=_SECURE)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=_SECURE)
# An absolute lifetime on top of the idle timeout: a session kept alive by polling or a
# forgotten tab still ends (mycert.middleware.SessionMaxAgeMiddleware).
MYCERT_SESSION_MAX_SECONDS = env.int("MYCERT_SESSION_MAX_SECONDS", default=8 * 3600)

# --- HTTPS behind the reverse proxy (docs/deploy.md) -----------------------------------------
# The proxy terminates TLS and says so in X-Forwarded-Proto; trust that header only when
# the proxy is the sole way in (it must overwrite a client's own header).
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# CRL and OCSP are fetched over plain HTTP by relying parties and must never be redirected
# (RFC 5280 §4.2.1.13, RFC 6960 practice); probes and scrapers reach the web processes
# directly, without the proxy's header.
SECURE_REDIRECT_EXEMPT = [r"^pki/", r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int(
    "DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if _SECURE else 0
)
# Covers names under this host only (*.mycert.esante.lu), not the agency's other sites.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS: list[str] = []
if not SECURE_HSTS_PRELOAD:
    # The preload list takes registrable domains only (esante.lu, with every subdomain):
    # that is the agency's decision for its whole domain, not this service's.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# --- Content-Security-Policy (django-csp 4): no inline script or style anywhere ---------------
_OIDC_ORIGIN = "/".join(env.str("OIDC_ISSUER", default="http://127.0.0.1:9400").split("/")[:3])
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        # Logging out posts here, then goes on to the portal's end-session page.
        "form-action": ["'self'", _OIDC_ORIGIN],
        **(
            {"report-uri": [env.str("MYCERT_CSP_REPORT_URI")]}
            if env.str("MYCERT_CSP_REPORT_URI", default="")
            else {}
        ),
    },
}

# --- Admin second factor (django-otp, TOTP) ---------------------------------------------------
# Staff who can revoke sign in at /admin/ with a password and a TOTP code
# (`manage.py add_totp_device USERNAME`). Off by default only in DEBUG.
MYCERT_ADMIN_REQUIRE_OTP = env.bool("MYCERT_ADMIN_REQUIRE_OTP", default=not DEBUG)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="MyCert")

# --- Rate limits (mycert.ops.ratelimit): "COUNT/SECONDS" per client address and per user ----------
MYCERT_RATELIMIT_ENABLED = env.bool("MYCERT_RATELIMIT_ENABLED", default=True)
MYCERT_RATELIMIT_LOGIN: str = env.str("MYCERT_RATELIMIT_LOGIN", default="60/300")
MYCERT_RATELIMIT_REQUEST: str = env.str("MYCERT_RATELIMIT_REQUEST", default="30/3600")
# « Révoquer sans connexion » (issue 23): code checks per client address and, apart,
# per certificate the identifier names; past either, a 429 that names the helpdesk.
MYCERT_RATELIMIT_REVOCATION_CODE: str = env.str(
    "MYCERT_RATELIMIT_REVOCATION_CODE", default="10/900"
)
# scrypt's N for the stored hash of revocation codes (r = 8, p = 1; RFC 7914): a power of
# two. 2^14 takes 16 MiB and tens of milliseconds; each stored hash keeps its own N.
MYCERT_REVOCATION_CODE_SCRYPT_N = env.int("MYCERT_REVOCATION_CODE_SCRYPT_N", default=2**14)
if MYCERT_REVOCATION_CODE_SCRYPT_N < 2 or MYCERT_REVOCATION_CODE_SCRYPT_N & (
    MYCERT_REVOCATION_CODE_SCRYPT_N - 1
):
    raise ImproperlyConfigured("MYCERT_REVOCATION_CODE_SCRYPT_N must be a power of two (16384).")
# How many reverse proxies append to X-Forwarded-For in front of the web processes (0: use
# the TCP peer address; 1: one nginx/HAProxy). Never more than there really are.
MYCERT_TRUSTED_PROXY_COUNT = env.int("MYCERT_TRUSTED_PROXY_COUNT", default=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024  # no form here needs more
LOGIN_URL = "oidc-login"
LOGIN_REDIRECT_URL = "request-certificate"

# --- E-mail ----------------------------------------------------------------------------
vars().update(env.email_url("EMAIL_URL", default="smtp://127.0.0.1:8025"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="MyCert <mycert@esante.lu>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
MYCERT_HELPDESK_EMAIL: str = env.str("MYCERT_HELPDESK_EMAIL", default="helpdesk@esante.lu")
# Where alerts about changes to vendors (where copies of keystores go) are sent: the
# agency's security officer, not the helpdesk whose changes they report.
MYCERT_SECURITY_EMAIL: str = env.str("MYCERT_SECURITY_EMAIL", default="securite@esante.lu")
MYCERT_HELPDESK_PHONE: str = env.str("MYCERT_HELPDESK_PHONE", default="(+352) 27 12 50 18 33")
MYCERT_GNUPG_HOME = Path(env.str("MYCERT_GNUPG_HOME", default=str(VAR_DIR / "gnupg")))
MYCERT_GPG_BINARY: str = env.str("MYCERT_GPG_BINARY", default="gpg")
# Secret payloads (keystore, password) wait in the outbox sealed with this key
# (Fernet). Workers only; required outside debug at first use (mycert.sealing) and by
# `check` on workers, never at start-up: web hosts run without it. Derived from
# DJANGO_SECRET_KEY only in debug.
MYCERT_OUTBOX_KEY: str = env.str("MYCERT_OUTBOX_KEY", default="")
# The audit chain's HMAC key (mycert.services.audit): outside the database, on every
# host that writes audit events (web and workers). Unset: unkeyed SHA-256 links, which
# `check --deploy` reports.
MYCERT_AUDIT_KEY: str = env.str("MYCERT_AUDIT_KEY", default="")
# Beat appends the chain's head here (one JSON line per export); `verify_audit` checks
# the chain against its last line. Keep it where the database's users cannot rewrite it.
MYCERT_AUDIT_HEAD_FILE: str = env.str("MYCERT_AUDIT_HEAD_FILE", default="")
MYCERT_AUDIT_HEAD_EXPORT_SECONDS = env.float("MYCERT_AUDIT_HEAD_EXPORT_SECONDS", default=900.0)
# A vendor without a usable OpenPGP key would get the keystore and its password in clear
# in one mailbox: such vendors are not offered on the form unless this is turned off.
MYCERT_VENDOR_COPY_REQUIRES_PGP = env.bool("MYCERT_VENDOR_COPY_REQUIRES_PGP", default=True)
MYCERT_DELIVERY_MAX_ATTEMPTS = env.int("MYCERT_DELIVERY_MAX_ATTEMPTS", default=12)
# First wait after a temporary SMTP failure, doubled per attempt, capped at 30 min.
MYCERT_DELIVERY_BACKOFF_SECONDS = env.int("MYCERT_DELIVERY_BACKOFF_SECONDS", default=30)

# --- OpenID Connect (the agency portal, LuxTrust behind it) -----------------------------
OIDC_ISSUER: str = env.str("OIDC_ISSUER", default="http://127.0.0.1:9400").rstrip("/")
OIDC_CLIENT_ID: str = env.str("OIDC_CLIENT_ID", default="mycert")
OIDC_CLIENT_SECRET: str = env.str("OIDC_CLIENT_SECRET", default="mycert-demo-secret")
MYCERT_OIDC_ACCEPTED_ACR: list[str] = env.list(
    "MYCERT_OIDC_ACCEPTED_ACR", default=["urn:luxtrust:loa:high", "urn:luxtrust:loa:substantial"]
)
MYCERT_OIDC_PROFESSIONAL_ID_CLAIM: str = env.str(
    "MYCERT_OIDC_PROFESSIONAL_ID_CLAIM", default="professional_id"
)
MYCERT_OIDC_SCOPES: str = env.str("MYCERT_OIDC_SCOPES", default="openid profile email")
# A request carries the signed ID token of its login; the worker refuses a token issued
# (iat) longer ago than this, in seconds, when it checks it (mycert.request_proof). A day:
# a worker outage of a few hours must not fail requests.
MYCERT_REQUEST_PROOF_MAX_AGE = env.int("MYCERT_REQUEST_PROOF_MAX_AGE", default=24 * 3600)

# --- PKI ---------------------------------------------------------------------------------
MYCERT_CA_DIR = Path(env.str("MYCERT_CA_DIR", default=str(VAR_DIR / "ca")))
MYCERT_CA_KEY_PASSPHRASE: str = env.str("MYCERT_CA_KEY_PASSPHRASE", default="")
if not MYCERT_CA_KEY_PASSPHRASE and DEBUG:
    MYCERT_CA_KEY_PASSPHRASE = "insecure-development-ca-passphrase"  # noqa: S105
MYCERT_CERT_ORGANIZATION: str = env.str("MYCERT_CERT_ORGANIZATION", default="Agence eSanté")
MYCERT_CERT_COUNTRY: str = env.str("MYCERT_CERT_COUNTRY", default="LU")
MYCERT_CERT_VALIDITY_DAYS = env.int("MYCERT_CERT_VALIDITY_DAYS", default=3 * 365)
MYCERT_CERT_KEY_TYPE: str = env.str("MYCERT_CERT_KEY_TYPE", default="rsa-3072")
# Placeholder policy arc under the agency's private enterprise number; the agency sets
# its registered OID in production.
MYCERT_CERT_POLICY_OID: str = env.str("MYCERT_CERT_POLICY_OID", default="1.3.6.1.4.1.59999.1.1")
MYCERT_TERMS_VERSION: str = env.str("MYCERT_TERMS_VERSION", default="2023-03")
MYCERT_SLA_BUSINESS_DAYS = env.int("MYCERT_SLA_BUSINESS_DAYS", default=5)
# A request still without its certificate this long after submission lost its task:
# beat's request sweep queues it again (issuing is idempotent).
MYCERT_REQUEST_SWEEP_AFTER_SECONDS = env.int("MYCERT_REQUEST_SWEEP_AFTER_SECONDS", default=600)
MYCERT_CRL_VALIDITY = timedelta(hours=env.int("MYCERT_CRL_VALIDITY_HOURS", default=24))
# 4 h: beat re-signs an answer at 110 min, so workers or beat may be down ~2 h before the
# answers expire (the alarm: 15 min late); a "good" fetched before a revocation can be
# replayed to a relying party that caches until nextUpdate for at most 4 h (docs/deploy.md §13).
MYCERT_OCSP_VALIDITY = timedelta(minutes=env.int("MYCERT_OCSP_VALIDITY_MINUTES", default=240))
# The highest CRL number this worker host signed or verified (mycert.crl_mark), outside the
# database: a previous CRL below it, or missing, stops publication (issue 20 §2). Workers
# only; on storage the database's users and web hosts cannot write.
MYCERT_CRL_HIGH_WATER_FILE: str = env.str(
    "MYCERT_CRL_HIGH_WATER_FILE", default=str(VAR_DIR / "crl-high-water.json")
)

# --- CA key custody (issue 11): file keys (default) or a PKCS#11 token -----------------------
# file: keys in MYCERT_CA_DIR, PKCS#8 with PBKDF2-SHA256 600,000 rounds; pkcs11: keys in the
# token named below (docs/deploy.md, "Key custody"). The PIN comes from the variable or,
# better, from a file readable by the worker's user only.
MYCERT_CA_BACKEND: str = env.str("MYCERT_CA_BACKEND", default="file")
if MYCERT_CA_BACKEND not in ("file", "pkcs11"):
    raise ImproperlyConfigured("MYCERT_CA_BACKEND must be 'file' or 'pkcs11'.")
MYCERT_PKCS11_MODULE: str = env.str("MYCERT_PKCS11_MODULE", default="")
MYCERT_PKCS11_TOKEN_LABEL: str = env.str("MYCERT_PKCS11_TOKEN_LABEL", default="")
MYCERT_PKCS11_PIN: str = env.str("MYCERT_PKCS11_PIN", default="")
MYCERT_PKCS11_PIN_FILE: str = env.str("MYCERT_PKCS11_PIN_FILE", default="")
# The root key lives offline (issue 22): its own token, or its own file and passphrase.
# The root's own token for init_ca and the offline ceremonies (never the workers' token).
MYCERT_PKCS11_ROOT_TOKEN_LABEL: str = env.str("MYCERT_PKCS11_ROOT_TOKEN_LABEL", default="")
# The root token's own PIN, in a file (default: the workers' PIN source).
MYCERT_PKCS11_ROOT_PIN_FILE: str = env.str("MYCERT_PKCS11_ROOT_PIN_FILE", default="")
# File backend: the root key's own passphrase (never MYCERT_CA_KEY_PASSPHRASE, which
# workers hold) and where the ceremonies find the key (removable media); default
# MYCERT_CA_DIR/root-key.pem, where init_ca writes it to be taken offline.
MYCERT_ROOT_KEY_PASSPHRASE: str = env.str("MYCERT_ROOT_KEY_PASSPHRASE", default="")
if not MYCERT_ROOT_KEY_PASSPHRASE and DEBUG:
    MYCERT_ROOT_KEY_PASSPHRASE = "insecure-development-root-passphrase"  # noqa: S105
MYCERT_ROOT_KEY_FILE: str = env.str("MYCERT_ROOT_KEY_FILE", default="")
# Keep the root key with the workers (their token, their CA folder, their passphrase): a
# compromised worker can then sign a new issuing CA. Throwaway and test set-ups only.
MYCERT_ROOT_KEY_ONLINE = env.bool("MYCERT_ROOT_KEY_ONLINE", default=False)
# The OCSP responder key file's own passphrase (file backend); unset: the CA's.
MYCERT_OCSP_KEY_PASSPHRASE: str = env.str("MYCERT_OCSP_KEY_PASSPHRASE", default="")

# --- Celery --------------------------------------------------------------------------------
# "localhost": the filesystem transport ignores it, but without a host kombu warns "No
# hostname was supplied" on every start, a warning nobody can act on.
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _folder in ("queue", "processed", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    # Both folders point at one directory so separate web and worker processes share
    # the queue (kombu's filesystem transport).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Retry back-off stays far below Redis's visibility timeout (docs/architecture.md « Known
    # pitfalls »).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Two queues (docs/architecture.md « Queues »). A revocation's work (its revoked OCSP
# answers, the CRL) has its own, so that it never waits behind an issuance backlog (launch
# day queues minutes of issuances) while the responder answers tryLater and soft-fail
# relying services accept the certificate.
# A worker started without -Q, as docs/deploy.md says, consumes every queue listed here.
# "celery" stays the default queue, declared as Celery declares it when none is listed
# (exchange "celery", direct, routing key "celery"): messages an older release queued still
# run, and RabbitMQ sees the same queue declared again.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (
    Queue("celery", Exchange("celery", type="direct"), routing_key="celery"),
    Queue("revocation", Exchange("revocation", type="direct"), routing_key="revocation"),
)
# Routed by task name, here rather than with the decorators' queue=: a name routes the same
# whoever sends it (delay, beat's schedule, send_task by name), and the former name of
# publish_crl, which messages from an older release carry, is listed beside the new one.
CELERY_TASK_ROUTES = {
    "mycert.tasks.sign_ocsp_responses": {"queue": "revocation"},
    "mycert.tasks.publish_crl": {"queue": "revocation"},
    "mycert.tasks.publication.publish_crl": {"queue": "revocation"},
}
# How long a revocation can still wait: a worker with several queues asks them in turn.
# kombu's Redis transport sends one BRPOP naming all of them and, after each message, moves
# that message's queue to the end of the list (round robin: ``_queue_cycle.rotate``), so
# after an issuance the revocation queue is asked first; the filesystem transport of `make
# run` takes its queues in turn as well (``FairCycle``); RabbitMQ delivers from each queue
# separately, within the prefetch limit of the worker's channel. A worker holds no more
# messages than its prefetch count (pool processes × this multiplier), and with late acks
# a running task's message counts until it ends: with 1, a busy worker holds only the
# messages it is running, none prefetched behind them. So the revoked answers wait for the
# first running task to end on any worker (one issuance, ≈ 0.1–1 s), and the CRL, which the
# rotation serves after one more message of the other queue, for one more at most.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connection before and after every task,
# so each task paid a new PostgreSQL connection (a server process). Past this many tasks
# it never does; config/celery.py applies Django's own rules instead (CONN_MAX_AGE,
# CONN_HEALTH_CHECKS), as for a web request.
CELERY_DB_REUSE_MAX = 2**31
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "sweep-outbox": {"task": "mycert.tasks.sweep_outbox", "schedule": 60.0},
    "sweep-requests": {"task": "mycert.tasks.sweep_requests", "schedule": 300.0},
    "sweep-operator-alerts": {"task": "mycert.tasks.sweep_operator_alerts", "schedule": 300.0},
    "export-audit-head": {
        "task": "mycert.tasks.export_audit_head",
        "schedule": MYCERT_AUDIT_HEAD_EXPORT_SECONDS,
    },
    # Re-signed hourly, valid 24 h: a missed run or two never lets the CRL expire.
    "publish-crl": {"task": "mycert.tasks.publish_crl", "schedule": 3600.0},
    # Stored OCSP answers are re-signed before half their validity has passed
    # (mycert.services.ocsp.REFRESH_EVERY is this period).
    "refresh-ocsp-responses": {
        "task": "mycert.tasks.refresh_ocsp_responses",
        "schedule": 300.0,
    },
    "renew-ocsp-responder": {
        "task": "mycert.tasks.renew_ocsp_responder",
        "schedule": 6 * 3600.0,
    },
    # Supersession (MYCERT_SUPERSEDE_AFTER_DAYS) and the wipe of payloads failed for good
    # (MYCERT_FAILED_PAYLOAD_DAYS): both count in days, so hourly is precise enough.
    "supersede-certificates": {"task": "mycert.tasks.supersede_certificates", "schedule": 3600.0},
    "wipe-failed-payloads": {"task": "mycert.tasks.wipe_failed_payloads", "schedule": 3600.0},
    # Daily, in the morning (Luxembourg time): 60, 30 and 7 days before the end, once each.
    "send-expiry-reminders": {
        "task": "mycert.tasks.send_expiry_reminders",
        "schedule": crontab(hour=8, minute=0),
    },
}

# --- Mutual-TLS self-check (mycert.views.check, deploy/nginx/mycert-check.conf) ----------------
# The HTTPS address users type ("/" and "/status.json"); nginx there terminates TLS, asks
# for a client certificate and maps those paths to Django's /check/ and /check/status.json.
MYCERT_CHECK_BASE_URL: str = env.str("MYCERT_CHECK_BASE_URL", default="").rstrip("/")
# Addresses or networks of the nginx that terminates the self-check's TLS: only from them
# is the X-MyCert-Client-Cert header read (from anyone else it is ignored).
MYCERT_CHECK_TRUSTED_PROXIES: list[str] = env.list(
    "MYCERT_CHECK_TRUSTED_PROXIES", default=["127.0.0.1/32", "::1/128"]
)
MYCERT_RATELIMIT_CHECK: str = env.str("MYCERT_RATELIMIT_CHECK", default="60/300")
if MYCERT_CHECK_BASE_URL:
    _CHECK_HOST = urlsplit(MYCERT_CHECK_BASE_URL).hostname or ""
    _CHECK_HOST = f"[{_CHECK_HOST}]" if ":" in _CHECK_HOST else _CHECK_HOST
    if _CHECK_HOST not in ALLOWED_HOSTS and "*" not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_CHECK_HOST)
    if MYCERT_CHECK_BASE_URL not in CSRF_TRUSTED_ORIGINS:  # the page's language switch
        CSRF_TRUSTED_ORIGINS.append(MYCERT_CHECK_BASE_URL)
# --- Request lifecycle: supersession and failed payloads (mycert.tasks.delivery) -----------------
# Older valid certificates are revoked as superseded this many days after the new one was
# delivered (the vendor's time to install it); 0 revokes them at once.
MYCERT_SUPERSEDE_AFTER_DAYS = env.int("MYCERT_SUPERSEDE_AFTER_DAYS", default=14)
# The largest bulk revocation one helpdesk agent may make; above it, a superuser's (issue 22).
MYCERT_BULK_REVOCATION_MAX = env.int("MYCERT_BULK_REVOCATION_MAX", default=20)
# A keystore or password e-mail failed for good keeps its sealed payload this long for the
# helpdesk to retry; then it is wiped and the request fails (the professional requests again).
MYCERT_FAILED_PAYLOAD_DAYS = env.int("MYCERT_FAILED_PAYLOAD_DAYS", default=7)

# --- Health and metrics (mycert.ops.health, mycert.ops.metrics) ------------------------------------------
# SMTP and broker answers are reused this long, so a 10 s probe stays cheap.
MYCERT_HEALTH_CACHE_SECONDS = env.float("MYCERT_HEALTH_CACHE_SECONDS", default=5.0)
# /metrics: a bearer token (if set) and client addresses or networks allowed to scrape.
MYCERT_METRICS_TOKEN: str = env.str("MYCERT_METRICS_TOKEN", default="")
MYCERT_METRICS_ALLOWED_IPS: list[str] = env.list(
    "MYCERT_METRICS_ALLOWED_IPS", default=["127.0.0.0/8", "::1/128"]
)
# Celery workers: an exporter for task durations on this port (0: none); with the prefork
# pool, PROMETHEUS_MULTIPROC_DIR must be set too (docs/deploy.md).
MYCERT_WORKER_METRICS_PORT = env.int("MYCERT_WORKER_METRICS_PORT", default=0)
MYCERT_WORKER_METRICS_ADDR: str = env.str("MYCERT_WORKER_METRICS_ADDR", default="127.0.0.1")

# --- Logging: ids, never secrets or e-mail bodies ---------------------------------------------
# MYCERT_LOG_FORMAT=json writes one JSON object a line with the ids a record names
# (request_id, certificate_id, delivery_id, task) for log shippers.
MYCERT_LOG_FORMAT: str = env.str("MYCERT_LOG_FORMAT", default="plain")
if MYCERT_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("MYCERT_LOG_FORMAT must be 'plain' or 'json'.")
# Workers log through the same handlers (and format) as the web.
CELERY_WORKER_HIJACK_ROOT_LOGGER = MYCERT_LOG_FORMAT != "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "mycert.ops.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": MYCERT_LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": env.str("MYCERT_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "gnupg": {"level": "WARNING"},
        "aiosmtpd": {"level": "WARNING"},
    },
}
