"""Shared fixtures: a real CA on disk for every test that issues."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycert import custody
from mycert.custody import loading

pytest_plugins = [
    "tests.support.oidc_provider",
    "tests.support.id_tokens",
    "tests.support.worker",
    "tests.support.smtp_server",
    "tests.support.gpg",
    "tests.support.softhsm",
]


def pytest_configure(config: pytest.Config) -> None:
    from tests.support import live_server

    live_server.install()


@pytest.fixture(scope="session")
def _session_ca(tmp_path_factory: pytest.TempPathFactory) -> custody.CaPaths:
    """Create one CA for the whole run (RSA keys are slow to make)."""
    from django.conf import settings
    from django.utils import timezone

    from mycert.pki import KeyType

    paths = custody.CaPaths(tmp_path_factory.mktemp("ca") / "ca")
    original = settings.MYCERT_CA_DIR
    settings.MYCERT_CA_DIR = paths.directory
    try:
        custody.ca_create(
            paths,
            settings.MYCERT_CA_KEY_PASSPHRASE.encode(),
            organization="Agence eSanté",
            country="LU",
            key_type=KeyType.EC_P256,
            now=timezone.now(),
            # Offline, as in production: not in the CA folder the workers read.
            root_passphrase=SESSION_ROOT_KEY_PASSPHRASE.encode(),
            root_key_path=paths.directory.parent / "offline" / "root-key.pem",
        )
    finally:
        settings.MYCERT_CA_DIR = original
    return paths


@pytest.fixture(scope="session")
def _session_ca_opened(_session_ca: custody.CaPaths) -> dict[tuple[str, str], object]:
    """The run's CA as ``mycert.custody.loading`` caches it once opened.

    Opening a key file costs its 600,000 PBKDF2 rounds (~60 ms, issue 11); every test
    that issues would pay it again after ``clear_cache()``. The entries are keyed by path
    and modification time, so a test that rewrites a file still reads it afresh.
    """
    from django.conf import settings

    original = settings.MYCERT_CA_DIR
    settings.MYCERT_CA_DIR = _session_ca.directory
    try:
        custody.cache_clear()
        custody.ca_load()
        custody.ca_certificates_load()
        custody.ocsp_responder_load()
        return dict(loading._loaded)
    finally:
        custody.cache_clear()
        settings.MYCERT_CA_DIR = original


@pytest.fixture
def ca(
    settings: Any,
    _session_ca: custody.CaPaths,
    _session_ca_opened: dict[tuple[str, str], object],
) -> custody.CaPaths:
    """Point MYCERT_CA_DIR at the run's CA, already opened (a test that changes the
    passphrase or the backend calls ``custody.cache_clear()`` and opens it afresh)."""
    settings.MYCERT_CA_DIR = _session_ca.directory
    custody.cache_clear()
    loading._loaded.update(_session_ca_opened)
    return _session_ca


#: Where the run's CA keeps its root key: offline, beside the CA folder, its own passphrase.
SESSION_ROOT_KEY_PASSPHRASE = "test-root-passphrase-of-its-own"


@pytest.fixture
def offline_root(settings: Any, ca: custody.CaPaths) -> Path:
    """Bring the run's root key, as a ceremony does (``MYCERT_ROOT_KEY_FILE``)."""
    path = ca.directory.parent / "offline" / "root-key.pem"
    settings.MYCERT_ROOT_KEY_FILE = str(path)
    settings.MYCERT_ROOT_KEY_PASSPHRASE = SESSION_ROOT_KEY_PASSPHRASE
    return path


@pytest.fixture(autouse=True, scope="session")
def _static_files_found_per_request() -> None:
    """WhiteNoise finds a static file when it is asked for, as in development.

    Without it each test client's middleware lists every file of every app up front
    (the admin's included): 18 ms a client, 4 s of a unit run. Production serves the
    collected, hashed files and keeps the up-front listing.
    """
    from django.conf import settings

    settings.WHITENOISE_AUTOREFRESH = True


@pytest.fixture(autouse=True)
def _no_kept_relay_session() -> Iterator[None]:
    """Close the SMTP session the transport keeps: each test has its own relay."""
    from mycert.mail.transport import close_relay

    yield
    close_relay()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Start every test with empty rate-limit counters (the cache outlives a test)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hasher(request: pytest.FixtureRequest) -> None:
    """A fast hasher, as Django advises for tests: PBKDF2's million rounds cost ~0.3 s a
    password. Not where another process (a worker, a second host) checks the password."""
    if request.node.get_closest_marker("integration") is None:
        settings = request.getfixturevalue("settings")
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        # The same for revocation codes: still scrypt, with a tiny N (2^14 costs ~30 ms).
        settings.MYCERT_REVOCATION_CODE_SCRYPT_N = 2**4


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run Celery tasks in-process, at once (the broker's part is tested in integration)."""
    from config.celery import app

    always, propagates = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = always, propagates


@pytest.fixture
def helpdesk_group(db: None) -> Any:
    """The ``Helpdesk`` group as the migration makes it.

    Transactional tests empty every table when they end, data migrations' rows included;
    a later test that needs the group makes it again with the migration's own code.
    """
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group

    migration = importlib.import_module("mycert.migrations.0002_helpdesk_group")
    migration.create_helpdesk_group(apps, None)
    alerts = importlib.import_module("mycert.migrations.0004_helpdesk_sees_alerts")
    alerts.allow_helpdesk_to_view_alerts(apps, None)
    hardening = importlib.import_module("mycert.migrations.0007_security_hardening")
    hardening.make_vendors_view_only(apps, None)
    return Group.objects.get(name="Helpdesk")


@pytest.fixture
def helpdesk(helpdesk_group: Any) -> Any:
    """A browser session of a helpdesk agent (staff, in the ``Helpdesk`` group), in English."""
    from django.contrib.auth.models import User
    from django.test import Client

    agent = User.objects.create_user("agent", password=None, is_staff=True)
    agent.groups.add(helpdesk_group)
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(agent)
    return client


@pytest.fixture(autouse=True)
def _audit_chain_memory_forgotten() -> None:
    """Each test's database starts a new audit chain: this process has seen no keyed link
    of it yet (``mycert.services.audit`` remembers one, as a web process does)."""
    from mycert.services import audit

    audit._seen_keyed = False


@pytest.fixture(autouse=True)
def _crl_high_water_mark_per_test(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test's database starts with no CRL: its worker host has signed none either
    (``mycert.crl_mark``; the run's CA is shared, so is its key's mark otherwise)."""
    settings.MYCERT_CRL_HIGH_WATER_FILE = str(
        tmp_path_factory.mktemp("crl-mark") / "crl-high-water.json"
    )
