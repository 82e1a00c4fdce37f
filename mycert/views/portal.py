"""The professional's pages: entry, request form, My certificates. Thin: services do the work."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.functional import Promise
from django.utils.translation import get_language, gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from mycert.forms import CertificateRequestForm, SelfRevocationForm
from mycert.models import Certificate, CertificateRequest, Professional
from mycert.ops.ratelimit import ratelimit
from mycert.problems import render_problem
from mycert.selectors import keystore_delivered, professional_overview, request_progress
from mycert.services.requests import RequestRefused, request_submit
from mycert.services.revocation import AlreadyRevoked, certificate_revoke
from mycert.views.auth import ID_TOKEN_SESSION_KEY

View = Callable[..., HttpResponse]


class ProfessionalRequest(HttpRequest):
    """A request let through by :func:`professional_required`."""

    professional: Professional


def professional_required(view: View) -> View:
    """Let through only a logged-in professional; anyone else gets a plain explanation.

    The professional found is ``request.professional``, and stays cached on
    ``request.user`` (the base template shows their name): one query per page.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            professional: Professional = request.user.professional
        except Professional.DoesNotExist:
            return render_problem(
                request,
                title=_("This page is for health professionals"),
                explanation=_("Your account is not a health professional's account."),
                what_to_do=_(
                    "Log in on the eSanté portal with your professional account and a LuxTrust means."
                ),
                status=403,
            )
        cast(ProfessionalRequest, request).professional = professional
        return view(request, *args, **kwargs)

    return wrapper


def _not_found(request: HttpRequest, title: Promise, explanation: Promise) -> HttpResponse:
    """A 404 that names no one: another professional's row looks like a missing one."""
    return render_problem(
        request,
        title=title,
        explanation=explanation,
        status=404,
        back_url=reverse("my-certificates"),
        back_label=_("My certificates"),
    )


def _in_progress_problem(request: HttpRequest) -> HttpResponse:
    return render_problem(
        request,
        title=_("A request is already in progress"),
        explanation=_(
            "You already have a certificate request in progress. You will receive the keystore "
            "and its password in two separate e-mails."
        ),
        what_to_do=_("Wait for these e-mails; you can follow your request on “My certificates”."),
        status=409,
        back_url=reverse("my-certificates"),
        back_label=_("My certificates"),
    )


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers and bots ask for whatever the pages link to."""
    # Not permanent: the static address carries a hash that changes with the icon.
    response = redirect(static("mycert/favicon.ico"))
    patch_cache_control(response, public=True, max_age=86400)
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The entry page."""
    return render(request, "mycert/home.html")


@never_cache
@require_http_methods(["GET", "POST"])
@professional_required
@ratelimit("request", setting="MYCERT_RATELIMIT_REQUEST", methods=("POST",))
def request_certificate(request: ProfessionalRequest) -> HttpResponse:
    """Show and accept the request form (vendor, usage information, "Envoyer")."""
    professional = request.professional
    overview = professional_overview(professional, now=timezone.now())
    if overview.request_in_progress is not None:
        return _in_progress_problem(request)
    form = CertificateRequestForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                submitted = request_submit(
                    professional=professional,
                    vendor=form.chosen_vendor(),
                    terms_accepted=form.cleaned_data["terms_accepted"],
                    language=professional.language or get_language() or "fr",
                    now=timezone.now(),
                    id_token=request.session.get(ID_TOKEN_SESSION_KEY, ""),
                )
            except RequestRefused as refused:
                if refused.code == "in_progress":
                    return _in_progress_problem(request)
                form.add_error("vendor" if refused.code == "vendor" else None, str(refused))
            else:
                return redirect("request-sent", request_id=submitted.pk)
        status = 400
    else:
        status = 200
    return render(
        request,
        "mycert/request_form.html",
        {
            "form": form,
            "valid_certificate": overview.valid_certificate,
            # The same delay as the password e-mail's date and « will be replaced on ».
            "supersede_after_days": settings.MYCERT_SUPERSEDE_AFTER_DAYS,
        },
        status=status,
    )


@never_cache
@require_GET
@professional_required
def request_sent(request: HttpRequest, request_id: int) -> HttpResponse:
    """Confirm the request: "Demande envoyée."."""
    certificate_request = CertificateRequest.objects.filter(
        pk=request_id, professional__user_id=cast(int, request.user.pk)
    ).first()
    if certificate_request is None:
        return _not_found(
            request, _("Request not found"), _("There is no such request among yours.")
        )
    return render(request, "mycert/request_sent.html", {"certificate_request": certificate_request})


@never_cache
@require_GET
@professional_required
def my_certificates(request: ProfessionalRequest) -> HttpResponse:
    """List the professional's own requests and certificates."""
    professional = request.professional
    rows = request_progress(professional, now=timezone.now())
    return render(
        request,
        "mycert/my_certificates.html",
        {
            "rows": rows,
            # « Check that your certificate works » only while one works or is coming.
            "certificate_to_check": any(
                row.state not in ("revoked", "expired", "failed") for row in rows
            ),
        },
    )


@never_cache
@require_GET
@professional_required
def my_certificates_status(request: ProfessionalRequest) -> JsonResponse:
    """The same states as JSON, polled by the page so progress shows without a refresh."""
    professional = request.professional
    rows = request_progress(professional, now=timezone.now())
    return JsonResponse(
        {
            "requests": [
                {"id": row.request_id, "state": row.state, "label": str(row.state_label)}
                for row in rows
            ],
            "in_progress": any(row.in_progress for row in rows),
        }
    )


def _not_revocable_problem(request: HttpRequest, certificate: Certificate) -> HttpResponse:
    if certificate.is_revoked:
        title, explanation = (
            _("This certificate is already revoked"),
            _("It was revoked before; a revocation cannot be changed or repeated."),
        )
    else:
        title, explanation = (
            _("This certificate has expired"),
            _("An expired certificate no longer works anywhere; there is nothing to revoke."),
        )
    return render_problem(
        request,
        title=title,
        explanation=explanation,
        what_to_do=_("If you need a certificate, make a new request."),
        status=409,
        back_url=reverse("my-certificates"),
        back_label=_("My certificates"),
    )


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
@professional_required
def revoke_certificate(request: HttpRequest, certificate_id: int) -> HttpResponse:
    """Revoke one's own certificate: GET asks (reason, consequences), POST revokes."""
    certificate = Certificate.objects.filter(
        pk=certificate_id, professional__user_id=cast(int, request.user.pk)
    ).first()
    if certificate is None:
        # Someone else's certificate looks exactly like one that does not exist.
        return _not_found(
            request, _("Certificate not found"), _("There is no such certificate among yours.")
        )
    now = timezone.now()
    if certificate.is_revoked or certificate.not_after <= now:
        return _not_revocable_problem(request, certificate)
    if not keystore_delivered(certificate):
        return render_problem(
            request,
            title=_("This certificate is still being sent"),
            explanation=_(
                "Your keystore has not been sent yet. It can be revoked once you have received it."
            ),
            what_to_do=_(
                "Wait for the e-mail with your keystore. If you suspect a problem now, "
                "contact the helpdesk."
            ),
            status=409,
            back_url=reverse("my-certificates"),
            back_label=_("My certificates"),
        )
    form = SelfRevocationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            certificate_revoke(
                certificate_id=certificate.pk,
                reason=form.cleaned_data["reason"],
                via=Certificate.RevokedVia.PROFESSIONAL,
                actor=request.user,  # type: ignore[arg-type]
                now=now,
            )
        except AlreadyRevoked:  # revoked meanwhile (the helpdesk, a second tab)
            certificate.refresh_from_db()
            return _not_revocable_problem(request, certificate)
        messages.success(
            request,
            gettext(
                "Your certificate has been revoked. You will receive a confirmation by e-mail."
            ),
        )
        return redirect("my-certificates")
    return render(
        request,
        "mycert/revoke_certificate.html",
        {"certificate": certificate, "form": form},
        status=400 if request.method == "POST" else 200,
    )
