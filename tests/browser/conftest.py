"""Browser tests: headless Chromium (Debian's) driven by Playwright against ``live_server``.

The site runs in this process (pytest-django's live server thread), Celery tasks run
eagerly here too, the OpenID provider is the real ``oidc-provider-mock`` process and mail
goes to an in-process SMTP server. The issuing task is *held* when a request is submitted
and released by the test, so that "My certificates" is seen moving from « soumise » to
« envoyée » by itself (progress.js), as it does with a real worker.

Screenshots go to a temporary folder; ``MYCERT_SCREENSHOT_DIR=docs/screenshots`` (what
``make screenshots`` sets) writes the ones shown in the README.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.support.oidc_provider import OidcProvider, professional_claims

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

BROWSER_DIR = Path(__file__).resolve().parent
AXE_PATH = BROWSER_DIR / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
# Playwright's sync API keeps an event loop in this thread; the ORM calls the tests make
# between browser steps are synchronous and safe (the live server has its own thread).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _chromium() -> str | None:
    configured = os.environ.get("MYCERT_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the run; the tests skip only if there is no Chromium."""
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "browser tests need Chromium: /usr/bin/chromium is missing "
            "(apt-get install chromium, or `make system-deps`)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _new_page(browser: Browser, *, bypass_csp: bool) -> Iterator[Page]:
    context = browser.new_context(
        viewport=VIEWPORT,  # type: ignore[arg-type]
        locale="fr-FR",
        bypass_csp=bypass_csp,
    )
    context.set_default_timeout(15_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (no cookies) in French, 1280 px wide, the site's CSP on."""
    yield from _new_page(browser, bypass_csp=False)


@pytest.fixture
def a11y_page(browser: Browser) -> Iterator[Page]:
    """The same, but the page accepts axe-core's injected script whatever the CSP says."""
    yield from _new_page(browser, bypass_csp=True)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("MYCERT_SCREENSHOT_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def shot(screenshot_dir: Path) -> Callable[[Page, str], Path]:
    """Save a full-page PNG of ``page`` as ``<name>.png``."""

    def take(page: Page, name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    return take


@dataclass
class AxeReport:
    url: str
    violations: list[dict[str, Any]]

    @property
    def serious(self) -> list[dict[str, Any]]:
        return [v for v in self.violations if v.get("impact") in ("serious", "critical")]

    def describe(self) -> str:
        lines = [f"axe-core on {self.url}:"]
        for violation in self.serious:
            targets = [", ".join(node["target"]) for node in violation["nodes"]]
            lines.append(
                f"- {violation['impact']} {violation['id']}: {violation['help']} {targets}"
            )
        return "\n".join(lines)


def axe_run(page: Page) -> AxeReport:
    """Inject axe-core into ``page`` and run it (WCAG 2.x A/AA rules and best practices)."""
    if not AXE_PATH.exists():
        pytest.fail(f"axe-core is missing: run `npm ci --prefix {BROWSER_DIR}` ({AXE_PATH})")
    page.add_script_tag(path=str(AXE_PATH))
    result = page.evaluate(
        "async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))"
    )
    return AxeReport(url=page.url, violations=json.loads(result)["violations"])


@pytest.fixture
def axe() -> Callable[[Page], AxeReport]:
    """Run axe-core on a page; assert ``not report.serious``."""
    return axe_run


@dataclass
class HeldTasks:
    """The issuing task, held when a request is submitted, run when the test says so."""

    task: Any
    request_ids: list[int] = field(default_factory=list)

    def delay(self, request_id: int) -> None:
        self.request_ids.append(request_id)

    def release(self) -> None:
        """Run the held tasks now, as a worker would (deliveries run eagerly after them)."""
        while self.request_ids:
            self.task.apply(args=(self.request_ids.pop(0),), throw=True)


@dataclass
class Site:
    url: str
    oidc: OidcProvider
    smtp: Any
    tasks: HeldTasks
    # A vendor's OpenPGP public key in MyCert's keyring: the form offers only vendors
    # whose copies are encrypted (MYCERT_VENDOR_COPY_REQUIRES_PGP).
    vendor_key: str = ""

    def professional(self, sub: str, **claims: Any) -> str:
        """Create ``sub`` at the OpenID provider with a professional's claims."""
        self.oidc.set_user(sub, professional_claims(**claims))
        return sub


@pytest.fixture
def site(
    live_server: Any,
    settings: Any,
    ca: Any,
    oidc_settings: OidcProvider,
    smtp_settings: Any,
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
    transactional_db: None,
    mycert_gpg_home: Any,
    vendor_key: Any,
) -> Site:
    """MyCert on ``live_server`` with the real OpenID provider, SMTP and eager tasks."""
    import mycert.tasks.issuance

    settings.MYCERT_BASE_URL = live_server.url
    settings.MYCERT_CERT_KEY_TYPE = "ec-p256"  # fast; the key types are tested elsewhere
    settings.MYCERT_ADMIN_REQUIRE_OTP = False
    # form-action names the portal's origin, computed from OIDC_ISSUER when settings
    # load (the logout form's redirect goes there); this provider runs on its own port.
    policy = copy.deepcopy(settings.CONTENT_SECURITY_POLICY)
    issuer = urlsplit(oidc_settings.issuer)
    policy["DIRECTIVES"]["form-action"] = ["'self'", f"{issuer.scheme}://{issuer.netloc}"]
    settings.CONTENT_SECURITY_POLICY = policy
    held = HeldTasks(task=mycert.tasks.issuance.issue_certificate)
    monkeypatch.setattr(mycert.tasks.issuance, "issue_certificate", held)
    return Site(
        url=live_server.url,
        oidc=oidc_settings,
        smtp=smtp_settings,
        tasks=held,
        vendor_key=vendor_key.public,
    )
