"""Test environment, loaded as a pytest plugin before Django reads its settings.

Only defaults: a variable already set (``DATABASE_URL`` for the PostgreSQL run,
``CELERY_BROKER_URL`` for Redis) wins.
"""

import atexit
import os
import socket
import tempfile

_state = tempfile.mkdtemp(prefix="mycert-test-")

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("MYCERT_VAR_DIR", _state)
os.environ.setdefault("MYCERT_CA_DIR", os.path.join(_state, "ca"))
os.environ.setdefault("MYCERT_CA_KEY_PASSPHRASE", "test-ca-passphrase-of-20-chars+")
# Fernet key of the outbox (required outside debug); base64 of "mycert test outbox key, not real".
os.environ.setdefault("MYCERT_OUTBOX_KEY", "bXljZXJ0IHRlc3Qgb3V0Ym94IGtleSwgbm90IHJlYWw=")
os.environ.setdefault("MYCERT_GNUPG_HOME", tempfile.mkdtemp(prefix="g", dir="/tmp"))
os.environ.setdefault("MYCERT_BASE_URL", "http://testserver")
# Production redirects to HTTPS by default; the test client speaks plain http.
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CACHE_URL", "locmemcache://")
# Tests never run collectstatic; admin OTP is tested on its own (tests/test_admin_otp.py).
os.environ.setdefault("MYCERT_STATIC_MANIFEST", "false")
os.environ.setdefault("MYCERT_ADMIN_REQUIRE_OTP", "false")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_state}/test.sqlite3")

# E-mail goes nowhere unless a test starts its own SMTP server (tests/support/smtp_server.py).
# Not the default smtp://127.0.0.1:8025: that is where `make run`'s mail sink listens, and a
# test run beside the demo would fill its mailbox and pass or fail by whether it is open.
# This process keeps a loopback port bound without listening: a connection to it is
# refused, and no other process can take it while the tests run (worker processes the
# tests start inherit the address, and this process outlives them).
_NO_SMTP = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_NO_SMTP.bind(("127.0.0.1", 0))
atexit.register(_NO_SMTP.close)
os.environ.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{_NO_SMTP.getsockname()[1]}")

# The same for the OpenID provider: `make run`'s listens on 9400, the settings' default.
# Tests that log in start their own (tests/support/oidc_provider.py); the others must not
# reach the demo's.
_NO_OIDC = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_NO_OIDC.bind(("127.0.0.1", 0))
atexit.register(_NO_OIDC.close)
os.environ.setdefault("OIDC_ISSUER", f"http://127.0.0.1:{_NO_OIDC.getsockname()[1]}")
