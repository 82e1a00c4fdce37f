"""The helpdesk's admin site, with a second factor: /admin/ asks staff for a TOTP code.

:class:`MyCertAdminSite` is Django's default admin site here: ``MyCertAdminConfig``
(``mycert.apps``) names it as ``default_site`` and takes ``django.contrib.admin``'s
place in ``INSTALLED_APPS``, as Django documents for overriding the default site. The
second factor is django-otp's, switched by ``MYCERT_ADMIN_REQUIRE_OTP``, which is read
on every request, so a test can flip it.

Password POSTs to the login page count against ``MYCERT_RATELIMIT_LOGIN``. With the
switch on, a staff user is let in only once verified by one of their confirmed
devices during this login (django-otp's ``OTPMiddleware`` puts ``is_verified()`` on the
user); a staff user without a device cannot enter at all. Devices are made with
``manage.py add_totp_device USERNAME``.

The login page asks for username, password and code at once, and one submission is
enough (:class:`MyCertOTPAuthenticationForm`): django-otp wants a device chosen from a
list it can show only once it knows the user, so its first answer is always « Veuillez
choisir un appareil ». Here an agent's only device is used; with several, the code
itself says which device produced it. The list is offered only after a wrong code, and
only to an agent with several devices.

The page is MyCert's (``admin/mycert/otp_login.html``): django-otp's has a « Get OTP
Challenge » button, which means nothing for TOTP (the app shows the code; there is no
challenge to send). A wrong code is not shown again in the field. django-otp refuses any
code for one second after a wrong one (its throttle: 1, 2, 4… seconds); the agent who
types the right code within that second waits it out here instead of being refused
(:func:`_wait_out_first_failure`).
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.contrib.auth.base_user import AbstractBaseUser
from django.forms import TextInput, ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.models import Device, ThrottlingMixin
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from mycert.models import CertificateRequest
from mycert.ops.ratelimit import ratelimit

__all__ = [
    "DJANGO_OTP_MESSAGES",
    "MyCertAdminSite",
    "MyCertOTPAuthenticationForm",
]

#: django-otp's own messages on the admin login that its catalogs leave untranslated
#: in French and German (a helpdesk agent who forgets to choose the device sees it).
#: Marked here so that makemessages keeps them in MyCert's catalogs, which
#: ``LOCALE_PATHS`` puts before django-otp's.
DJANGO_OTP_MESSAGES = (gettext_noop("Please select a device."),)


def _totp_matches(device: TOTPDevice, token: str) -> bool:
    """Whether ``token`` is ``device``'s current code, recording nothing.

    The same test as ``TOTPDevice.verify_token`` (tolerance, drift, no replay of a used
    time step), without its side effects: the device that matches is then verified the
    usual way, and the others are left alone (django-otp's reason for asking to choose
    is that trying each device throttles those that do not match).
    """
    allowed, _detail = device.verify_is_allowed()
    if not allowed or not token.isdigit():
        return False
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return bool(totp.verify(int(token), device.tolerance, device.last_t + 1))


#: The longest throttle a login waits out rather than refuse: django-otp's first, after
#: one wrong code (``OTP_TOTP_THROTTLE_FACTOR`` × 2⁰). The next ones (2, 4… s) refuse.
FIRST_FAILURE_WAIT_SECONDS = 1.0


def _wait_out_first_failure(device: Device) -> None:
    """Wait until ``device`` may verify again, if only a first wrong code holds it back.

    The throttle's rate is unchanged (one more try per second at most; the rows are
    locked by django-otp's ``clean_otp`` transaction, so concurrent tries queue up).
    """
    if not isinstance(device, ThrottlingMixin) or device.throttling_failure_count != 1:
        return
    allowed, detail = device.verify_is_allowed()
    if allowed or not detail or "locked_until" not in detail:
        return
    remaining = (detail["locked_until"] - timezone.now()).total_seconds()
    if 0 < remaining <= FIRST_FAILURE_WAIT_SECONDS:
        time.sleep(remaining)


class _CodeInput(TextInput):
    """The code field, never filled in again: a wrong code is of no use to retype."""

    def format_value(self, value: Any) -> str | None:
        return None


class MyCertOTPAuthenticationForm(OTPAdminAuthenticationForm):
    """Username, password and code in one submission; no device to choose beforehand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A one-time code: digits, from an authenticator app (HTML autocomplete token).
        self.fields["otp_token"].widget = _CodeInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}
        )

    @property
    def offers_device_choice(self) -> bool:
        """The device list is worth showing only to an agent with several devices."""
        choices = list(getattr(self.fields["otp_device"].widget, "choices", []))
        return len([value for value, _label in choices if value]) > 1

    def _verify_token(
        self, user: AbstractBaseUser, token: str, device: Device | None = None
    ) -> Any:
        if device is not None:
            _wait_out_first_failure(device)
        return super()._verify_token(user, token, device)

    def _chosen_device(self, user: AbstractBaseUser) -> Device | None:
        if self.cleaned_data.get("otp_device"):
            # An explicit choice is django-otp's to check (it must be this user's).
            chosen: Device | None = super()._chosen_device(user)
            return chosen
        # django-otp's clean_otp() runs this in a transaction: the rows stay locked.
        devices: list[Device] = list(devices_for_user(user, confirmed=True, for_verify=True))
        if len(devices) == 1:
            return devices[0]
        token = str(self.cleaned_data.get("otp_token") or "").strip()
        for device in devices:
            if isinstance(device, TOTPDevice) and _totp_matches(device, token):
                return device
        if token:
            # A wrong code typed without a device counts against every device it could
            # have been meant for, as brute force against each would.
            for device in devices:
                device.throttle_increment(commit=True)
            self._update_form(user)  # now the list can be shown: the password was right
            raise ValidationError(self.otp_error_messages["invalid_token"], code="invalid_token")
        return None


class MyCertAdminSite(OTPAdminSite):
    """The helpdesk's admin: django-otp's site when ``MYCERT_ADMIN_REQUIRE_OTP`` is on,
    Django's otherwise; the overdue requests on the index; no bulk deletion."""

    site_header = _("MyCert — helpdesk")
    site_title = _("MyCert helpdesk")
    index_title = _("Helpdesk")
    index_template = "admin/helpdesk_index.html"

    def __init__(self, name: str = "admin") -> None:
        # django-otp's own default name is "otpadmin"; the URLs are namespaced "admin".
        super().__init__(name)
        # Certificates, requests, deliveries and audit events are evidence (ETSI retention).
        self.disable_action("delete_selected")

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        """Add the overdue count, as a callable: only the index template evaluates it."""
        context: dict[str, Any] = super().each_context(request)
        if request.user.has_perm("mycert.view_certificaterequest"):
            context["overdue_request_count"] = _overdue_request_count
        return context

    @property
    def login_form(self) -> type[AdminAuthenticationForm]:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            form: type[AdminAuthenticationForm] = MyCertOTPAuthenticationForm
            return form
        return AdminAuthenticationForm

    @property
    def login_template(self) -> str | None:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            return "admin/mycert/otp_login.html"
        return None

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's (or django-otp's) login, with the login rate limit on its POSTs."""

        def view(request: HttpRequest) -> HttpResponse:
            response: HttpResponse = super(MyCertAdminSite, self).login(request, extra_context)
            return response

        limited = ratelimit("admin-login", setting="MYCERT_RATELIMIT_LOGIN", methods=("POST",))
        return limited(view)(request)

    def has_permission(self, request: HttpRequest) -> bool:
        if settings.MYCERT_ADMIN_REQUIRE_OTP:
            return bool(super().has_permission(request))
        return AdminSite.has_permission(self, request)


def _overdue_request_count() -> int:
    return CertificateRequest.objects.overdue(timezone.now()).count()
