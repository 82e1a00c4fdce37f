"""« Révoquer sans connexion »: revoke a certificate with its revocation code (issue 23).

Two steps, like the helpdesk's and the professional's own revocation. First the
serial (or professional identifier) and the code: a match is remembered in the session
for ``CONFIRM_SECONDS``, never the code. Then the certificate's holder and validity, a
reason and an explicit "yes". Thin: ``mycert.services.revocation_codes`` does the work.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods

from mycert.forms import CodeRevocationForm, SelfRevocationForm
from mycert.models import Certificate
from mycert.ops.ratelimit import client_ip, hit, parse_rate
from mycert.problems import render_problem
from mycert.services.revocation import AlreadyRevoked
from mycert.services.revocation_codes import (
    CodeRevocationRefused,
    certificate_revoke_with_code,
    revocation_code_candidates,
    revocation_code_match,
)

logger = logging.getLogger(__name__)

#: What the session remembers between the two steps (a certificate id and a time).
SESSION_CHECKED = "mycert_revocation_code_checked"
SESSION_DONE = "mycert_revocation_code_done"
#: How long a checked code lets its certificate be revoked without asking it again.
CONFIRM_SECONDS = 600
#: The clock of that delay; tests move it instead of waiting.
clock: Callable[[], float] = time.time

_IDENTIFIER_NOISE = re.compile(r"[\s:\-]+")


def _throttle_keys(request: HttpRequest, identifier: str, candidates: list[int]) -> list[str]:
    """Count against the address and against each certificate named.

    An identifier that names no certificate is counted under its own spelling, so that
    an unknown serial runs into the limit exactly as a known one does.
    """
    keys = [f"ip:{client_ip(request)}"]
    if candidates:
        keys += [f"certificate:{pk}" for pk in candidates]
    elif identifier:
        keys.append(f"identifier:{_IDENTIFIER_NOISE.sub('', identifier).lower()}")
    return keys


def _too_many(request: HttpRequest, retry_after: int) -> HttpResponse:
    response = render_problem(
        request,
        title=_("Too many attempts"),
        explanation=_(
            "We received too many revocation attempts for this certificate or from your "
            "connection in a short time."
        ),
        what_to_do=_("Wait a little, then try again. To revoke at once, call the helpdesk."),
        status=429,
        back_url=reverse("home"),
        back_label=_("Back to MyCert"),
    )
    response["Retry-After"] = str(retry_after)
    return response


def _cannot_revoke(request: HttpRequest) -> HttpResponse:
    return render_problem(
        request,
        title=_("This certificate can no longer be revoked with its code"),
        explanation=_("It was revoked meanwhile, or it has expired: it no longer works anywhere."),
        what_to_do=_("If you need a certificate, log in and make a new request."),
        status=409,
        back_url=reverse("home"),
        back_label=_("Back to MyCert"),
    )


@never_cache
@csrf_protect
@sensitive_post_parameters("code")
@require_http_methods(["GET", "POST"])
def revoke_without_login(request: HttpRequest) -> HttpResponse:
    """Step 1: the serial or professional identifier, and the revocation code."""
    form = CodeRevocationForm(request.POST or None)
    if request.method != "POST":
        return render(request, "mycert/revoke_without_login.html", {"form": form})
    now = timezone.now()
    valid = form.is_valid()
    identifier = form.cleaned_data.get("identifier", "") if valid else ""
    candidates = revocation_code_candidates(identifier=identifier, now=now) if valid else []
    if settings.MYCERT_RATELIMIT_ENABLED:
        # Counted before any hash: past the limit, no code is even compared.
        retry_after = hit(
            "revocation-code",
            _throttle_keys(request, identifier, candidates),
            parse_rate(settings.MYCERT_RATELIMIT_REVOCATION_CODE),
        )
        if retry_after:
            logger.warning("revocation code: rate limit exceeded")
            return _too_many(request, retry_after)
    if valid:
        match = revocation_code_match(candidates=candidates, code=form.cleaned_data["code"])
        if match is not None:
            # A new session key: whoever held the old one does not inherit the check.
            request.session.cycle_key()
            request.session[SESSION_CHECKED] = {
                "certificate_id": match.certificate_id,
                "checked_at": clock(),
            }
            return redirect("revoke-without-login-confirm")
        # One answer for an unknown serial, a wrong, spent or foreign code, a revoked
        # or expired certificate: none of them tells which it was.
        logger.warning("revocation code refused")
        form.add_error(
            None,
            _(
                "This serial number or identifier and this code do not match a certificate "
                "that can be revoked. Check both against the e-mail with your password: a "
                "code revokes only its own certificate, only once, and not a certificate "
                "that is already revoked or expired."
            ),
        )
    return render(request, "mycert/revoke_without_login.html", {"form": form}, status=400)


def _checked_certificate(request: HttpRequest) -> Certificate | None:
    """The certificate whose code this session checked less than CONFIRM_SECONDS ago."""
    checked = request.session.get(SESSION_CHECKED)
    if not isinstance(checked, dict):
        return None
    certificate_id, checked_at = checked.get("certificate_id"), checked.get("checked_at")
    if (
        not isinstance(certificate_id, int)
        or not isinstance(checked_at, float)
        or clock() - checked_at > CONFIRM_SECONDS
    ):
        request.session.pop(SESSION_CHECKED, None)
        return None
    return Certificate.objects.select_related("professional").filter(pk=certificate_id).first()


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def revoke_without_login_confirm(request: HttpRequest) -> HttpResponse:
    """Step 2: whose certificate, valid until when; a reason and an explicit "yes"."""
    certificate = _checked_certificate(request)
    if certificate is None:
        messages.info(
            request,
            gettext("Enter the serial number and the revocation code again, then confirm."),
        )
        return redirect("revoke-without-login")
    now = timezone.now()
    if certificate.is_revoked or certificate.not_after <= now:
        request.session.pop(SESSION_CHECKED, None)
        return _cannot_revoke(request)
    form = SelfRevocationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            certificate_revoke_with_code(
                certificate_id=certificate.pk, reason=form.cleaned_data["reason"], now=now
            )
        except (CodeRevocationRefused, AlreadyRevoked):  # revoked meanwhile, or a second tab
            request.session.pop(SESSION_CHECKED, None)
            return _cannot_revoke(request)
        request.session.pop(SESSION_CHECKED, None)
        request.session[SESSION_DONE] = certificate.pk
        return redirect("revoke-without-login-done")
    return render(
        request,
        "mycert/revoke_without_login_confirm.html",
        {"certificate": certificate, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@never_cache
@require_GET
def revoke_without_login_done(request: HttpRequest) -> HttpResponse:
    """The certificate is revoked: what follows (e-mails, a new request)."""
    certificate_id = request.session.get(SESSION_DONE)
    certificate = (
        Certificate.objects.filter(pk=certificate_id).first()
        if isinstance(certificate_id, int)
        else None
    )
    if certificate is None or not certificate.is_revoked:
        return redirect("revoke-without-login")
    return render(request, "mycert/revoke_without_login_done.html", {"certificate": certificate})
