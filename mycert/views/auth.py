"""Login and logout through the portal's OpenID provider. Thin: ``mycert.oidc`` checks the
protocol, ``mycert.services.professionals`` writes; a refusal is a plain page, never a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from mycert import oidc
from mycert.oidc import LoginRefused, RefusalCode
from mycert.ops.ratelimit import ratelimit
from mycert.problems import render_problem
from mycert.selectors import landing_page
from mycert.services.professionals import (
    professional_login,
    professional_login_refused,
    professional_logout,
)

logger = logging.getLogger(__name__)

# Kept for the id_token_hint of RP-initiated logout; the session lives server-side.
ID_TOKEN_SESSION_KEY = "mycert_oidc_id_token"  # noqa: S105 - a session key name
_BACKEND = "django.contrib.auth.backends.ModelBackend"


@dataclass(frozen=True)
class _Explanation:
    title: str | Promise
    explanation: str | Promise
    what_to_do: str | Promise
    status: int


_LOG_IN_AGAIN = _(
    "Log in again on the eSanté portal with a LuxTrust means: smartcard, token or mobile app."
)
_TRY_AGAIN = _("Go back to the eSanté portal and log in again.")
_CALL_HELPDESK = _("Contact the helpdesk: it can check your professional account.")

_EXPLANATIONS: dict[RefusalCode, _Explanation] = {
    RefusalCode.WEAK_ACR: _Explanation(
        _("A LuxTrust login is required"),
        _(
            "You logged in with a means that is not strong enough for a certificate. "
            "MyCert accepts only a login with LuxTrust."
        ),
        _LOG_IN_AGAIN,
        403,
    ),
    RefusalCode.NOT_A_PROFESSIONAL: _Explanation(
        _("This service is for health professionals"),
        _("Your eSanté account is not linked to an active professional account."),
        _(
            "Log in with your professional account. If you are a health professional and see "
            "this message, contact the helpdesk."
        ),
        403,
    ),
    RefusalCode.INVALID_PROFESSIONAL_ID: _Explanation(
        _("Your professional identifier cannot be used"),
        _("The identifier your eSanté account gives for you has a form MyCert cannot accept."),
        _CALL_HELPDESK,
        403,
    ),
    RefusalCode.MISSING_EMAIL: _Explanation(
        _("A confirmed e-mail address is needed"),
        _(
            "Your certificate is sent by e-mail, but your eSanté account has no confirmed "
            "e-mail address."
        ),
        _("Add and confirm your e-mail address in your eSanté account, then log in again."),
        403,
    ),
    RefusalCode.INVALID_PROFILE: _Explanation(
        _("Your name is missing from your eSanté account"),
        _("Your certificate carries your given name and family name; your account lacks one."),
        _CALL_HELPDESK,
        403,
    ),
    RefusalCode.NAME_TOO_LONG: _Explanation(
        _("Your name is too long for a certificate"),
        _(
            "A certificate holds at most 64 characters for your given name and family name "
            "together; the names in your eSanté account are longer."
        ),
        _(
            "Shorten your name in your eSanté account on the portal (for example, keep only "
            "your first given name), then log in again. If you cannot change it, contact the "
            "helpdesk."
        ),
        403,
    ),
    RefusalCode.EMAIL_NOT_SUPPORTED: _Explanation(
        _("Your e-mail address cannot go into a certificate"),
        _(
            "Your certificate carries your e-mail address, which may only use unaccented "
            "letters, digits and a few signs. Your address contains other characters."
        ),
        _(
            "Enter such an address in your eSanté account on the portal, confirm it, then "
            "log in again."
        ),
        403,
    ),
    RefusalCode.PROFESSIONAL_ID_TAKEN: _Explanation(
        _("Your professional identifier is used by another account"),
        _(
            "Another eSanté account has already logged in to MyCert with your professional identifier."
        ),
        _CALL_HELPDESK,
        403,
    ),
    RefusalCode.PROFESSIONAL_ID_CHANGED: _Explanation(
        _("Your professional identifier has changed"),
        _("Your eSanté account now gives another professional identifier than before."),
        _CALL_HELPDESK,
        403,
    ),
    RefusalCode.ACCOUNT_DISABLED: _Explanation(
        _("Your MyCert account is disabled"),
        _("The helpdesk has disabled your access to MyCert."),
        _CALL_HELPDESK,
        403,
    ),
    RefusalCode.ACCESS_DENIED: _Explanation(
        _("Login cancelled"),
        _("The login on the eSanté portal was cancelled or refused, so you are not logged in."),
        _TRY_AGAIN,
        403,
    ),
    RefusalCode.PROVIDER_ERROR: _Explanation(
        _("The login did not succeed"),
        _("The eSanté portal could not complete your login."),
        _TRY_AGAIN,
        400,
    ),
    RefusalCode.STATE_MISMATCH: _Explanation(
        _("The login could not be completed"),
        _(
            "This login answer does not belong to a login started in this browser, or it "
            "has already been used or has expired."
        ),
        _TRY_AGAIN,
        400,
    ),
    RefusalCode.INVALID_CALLBACK: _Explanation(
        _("The login could not be completed"),
        _("The answer from the eSanté portal was incomplete."),
        _TRY_AGAIN,
        400,
    ),
    RefusalCode.TOKEN_REQUEST_FAILED: _Explanation(
        _("The login could not be completed"),
        _("The eSanté portal did not confirm your login."),
        _TRY_AGAIN,
        400,
    ),
    RefusalCode.INVALID_ID_TOKEN: _Explanation(
        _("The login could not be verified"),
        _("The proof of login received from the eSanté portal is not valid, so it was refused."),
        _TRY_AGAIN,
        403,
    ),
    RefusalCode.PROVIDER_UNAVAILABLE: _Explanation(
        _("The login service is unavailable"),
        _("MyCert cannot reach the eSanté portal's login service at the moment."),
        _("Try again in a few minutes."),
        503,
    ),
}


# Anyone can send these to the callback without logging in: logs, not the audit chain.
_LOG_ONLY = frozenset({RefusalCode.STATE_MISMATCH, RefusalCode.PROVIDER_UNAVAILABLE})


def _safe_next(request: HttpRequest, url: str) -> str:
    """Keep ``url`` only if it is a path on this site (no open redirect, RFC 9700 §4.11)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return ""
    if not url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return ""
    return url


def _refuse(request: HttpRequest, refusal: LoginRefused, *, flush: bool = True) -> HttpResponse:
    """Record the refusal and send the browser to its explanation.

    The callback's own address carries a one-time code: reloading it, or switching the
    language on it, would run the callback again and fail for another reason (the state
    is spent). The explanation lives at a stable address instead (Post/Redirect/Get).
    """
    if flush and refusal.code is not RefusalCode.STATE_MISMATCH:
        # A real attempt from this browser failed: drop any earlier session too, so a
        # refused login never leaves someone logged in. A state mismatch may be forged
        # by a third party (RFC 6749 §10.12), so it does not get to log anyone out.
        request.session.flush()
    if refusal.code in _LOG_ONLY:
        logger.warning("login refused: reason=%s detail=%s", refusal.code, refusal.detail)
    else:
        professional_login_refused(code=refusal.code, sub=refusal.sub, detail=refusal.detail)
    return redirect("login-refused", reason=refusal.code.value)


def _explain(request: HttpRequest, code: RefusalCode) -> HttpResponse:
    """The plain-words page for ``code``, in the page's language, with its status."""
    text = _EXPLANATIONS[code]
    return render_problem(
        request,
        title=text.title,
        explanation=text.explanation,
        what_to_do=text.what_to_do,
        status=text.status,
        back_url=reverse("home"),
        back_label=_("Back to MyCert"),
    )


@never_cache
@require_GET
@ratelimit("login", setting="MYCERT_RATELIMIT_LOGIN")
def login(request: HttpRequest) -> HttpResponse:
    """Start a login at the portal, coming back to ``next`` (a path on this site)."""
    next_url = _safe_next(request, request.GET.get(REDIRECT_FIELD_NAME, ""))
    redirect_uri = f"{settings.MYCERT_BASE_URL}{reverse('oidc-callback')}"
    try:
        return oidc.begin_login(
            request, redirect_uri=redirect_uri, next_url=next_url, ui_locales=get_language() or ""
        )
    except LoginRefused as refusal:
        # Nothing was spent yet: reloading this address simply tries again.
        logger.warning("login refused: reason=%s detail=%s", refusal.code, refusal.detail)
        return _explain(request, refusal.code)


@never_cache
@require_GET
@ratelimit("login", setting="MYCERT_RATELIMIT_LOGIN")
def callback(request: HttpRequest) -> HttpResponse:
    """Finish the login: every check passes before the session gets a user."""
    try:
        completed = oidc.finish_login(request)
        professional = professional_login(claims=completed.claims, language=get_language() or "")
    except LoginRefused as refusal:
        return _refuse(request, refusal)
    # login() cycles the session key (session fixation) or flushes a session that
    # belonged to someone else.
    auth_login(request, professional.user, backend=_BACKEND)
    request.session[ID_TOKEN_SESSION_KEY] = completed.id_token
    next_url = _safe_next(request, completed.next_url)
    return redirect(next_url or landing_page(professional, now=timezone.now()))


@never_cache
@require_GET
def refused(request: HttpRequest, reason: str) -> HttpResponse:
    """Why the last login was refused: the same page on reload and in every language.

    Only an explanation is shown; the reason in the address grants and records nothing.
    """
    try:
        code = RefusalCode(reason)
    except ValueError as exc:
        raise Http404 from exc
    if code not in _EXPLANATIONS:
        raise Http404
    return _explain(request, code)


@never_cache
@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Log out here, then at the portal when this session came from it."""
    id_token = request.session.get(ID_TOKEN_SESSION_KEY, "")
    professional_logout(user=request.user)
    auth_logout(request)  # flushes the session
    home = reverse("home")
    if id_token:
        url = oidc.end_session_url(
            id_token_hint=id_token, post_logout_redirect_uri=f"{settings.MYCERT_BASE_URL}{home}"
        )
        if url:
            return redirect(url)
    return redirect(home)
