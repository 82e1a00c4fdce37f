"""A second factor for the helpdesk: /admin/ asks staff for a TOTP code (django-otp).

``config/urls.py`` serves ``django.contrib.admin.site``, customised in ``mycert.admin``.
Rather than replace that instance (and lose its customisations), ``install()`` changes
its class to :class:`SwitchableOTPAdminSite` from ``MyCertConfig.ready()``. The switch,
``MYCERT_ADMIN_REQUIRE_OTP``, is read on every request, so a test can flip it.

Password POSTs to the login page count against ``MYCERT_RATELIMIT_LOGIN``. With the
switch on, a staff user is let in only once verified by one of their confirmed
devices during this login (django-otp's ``OTPMiddleware`` puts ``is_verified()`` on the
user); a staff user without a device cannot enter at all. Devices are made with
``manage.py add_totp_device USERNAME``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_noop
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

from mycert.ratelimit import ratelimit

__all__ = ["DJANGO_OTP_MESSAGES", "SwitchableOTPAdminSite", "install"]

#: django-otp's own messages on the admin login that its catalogs leave untranslated
#: in French and German (a helpdesk agent who forgets to choose the device sees it).
#: Marked here so that makemessages keeps them in MyCert's catalogs, which
#: ``LOCALE_PATHS`` puts before django-otp's.
DJANGO_OTP_MESSAGES = (gettext_noop("Please select a device."),)


class SwitchableOTPAdminSite(OTPAdminSite):
    """django-otp's admin site when ``MYCERT_ADMIN_REQUIRE_OTP`` is on, Django's otherwise."""

    @property  # type: ignore[override]
    def login_form(self) -> type[AdminAuthenticationForm]:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            form: type[AdminAuthenticationForm] = OTPAdminAuthenticationForm
            return form
        return AdminAuthenticationForm

    @property  # type: ignore[override]
    def login_template(self) -> str | None:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            template: str = OTPAdminSite.login_template
            return template
        return None

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's (or django-otp's) login, with the login rate limit on its POSTs."""

        def view(request: HttpRequest) -> HttpResponse:
            response: HttpResponse = super(SwitchableOTPAdminSite, self).login(
                request, extra_context
            )
            return response

        limited = ratelimit("admin-login", setting="MYCERT_RATELIMIT_LOGIN", methods=("POST",))
        return limited(view)(request)

    def has_permission(self, request: HttpRequest) -> bool:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            return bool(super().has_permission(request))
        return AdminSite.has_permission(self, request)


def install() -> None:
    """Give the default admin site the switchable second factor (idempotent)."""
    admin.site.__class__ = SwitchableOTPAdminSite
