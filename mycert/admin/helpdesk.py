"""The helpdesk's admin (docs/architecture.md « Roles », « Revocation », « The audit trail »).

Nothing is ever deleted, by anyone: no delete permission on any MyCert model, and the
site-wide ``delete_selected`` action is gone. Crypto and status fields are read-only;
they change only through the services (revocation, delivery retry, vendor keys), which
write the audit trail. The outbox's sealed payload appears on no page and in no form.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, cast

from cryptography import x509
from cryptography.x509.oid import NameOID
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import (
    BooleanField,
    CharField,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from mycert.models import (
    AuditEvent,
    Certificate,
    CertificateRequest,
    Crl,
    Delivery,
    OperatorAlert,
    Professional,
    Vendor,
)
from mycert.outbox import delivery_retry
from mycert.querysets import CertificateQuerySet, CertificateRequestQuerySet
from mycert.selectors import replaced_on
from mycert.services.audit import actor_label
from mycert.services.revocation import AlreadyRevoked, certificate_revoke
from mycert.services.vendors import clean_pgp_key, vendor_create, vendor_update


class NoDeleteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Deleting is refused to everyone, superusers included."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(NoDeleteAdmin):
    """View only: these rows change through services, never through a form."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- List filters --------------------------------------------------------------------------


class OverdueFilter(admin.SimpleListFilter):
    """Requests still in progress past their due date (5 Luxembourg business days)."""

    title = _("service level")
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("overdue"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() == "yes":
            return cast(CertificateRequestQuerySet, queryset).overdue(timezone.now())
        return queryset


class ExpiringSoonFilter(admin.SimpleListFilter):
    """Valid certificates that end within 7, 30 or 60 days."""

    title = _("expiring soon")
    parameter_name = "expiring"
    DAYS = (7, 30, 60)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (
                str(days),
                ngettext("within %(days)d day", "within %(days)d days", days) % {"days": days},
            )
            for days in self.DAYS
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value in {str(days) for days in self.DAYS}:
            return cast(CertificateQuerySet, queryset).expiring_within(
                timezone.now(), int(value or 0)
            )
        return queryset


class CertificateStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("valid", _("valid")), ("revoked", _("revoked")), ("expired", _("expired"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        certificates = cast(CertificateQuerySet, queryset)
        now = timezone.now()
        match self.value():
            case "valid":
                return certificates.valid(now)
            case "revoked":
                return certificates.revoked()
            case "expired":
                return certificates.expired(now)
        return queryset


# --- Vendors -------------------------------------------------------------------------------


class VendorForm(forms.ModelForm):  # type: ignore[type-arg]
    """A vendor; its OpenPGP key is checked on entry (one usable public key, not expired)."""

    class Meta:
        model = Vendor
        fields = ["name", "email", "pgp_public_key", "legacy_keystore", "is_active"]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        others = Vendor.objects.filter(name__iexact=name)
        if self.instance.pk is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise ValidationError(_("A vendor with this name already exists."), code="unique")
        return name

    def clean_pgp_public_key(self) -> str:
        armored = str(self.cleaned_data.get("pgp_public_key") or "").strip()
        if armored:
            try:
                clean_pgp_key(armored, now=timezone.now())
            except ValidationError as exc:
                raise ValidationError(
                    _("This OpenPGP key cannot be used: %(reason)s"),
                    code="invalid_pgp_key",
                    params={"reason": " ".join(exc.messages)},
                ) from exc
        return armored


@admin.register(Vendor)
class VendorAdmin(NoDeleteAdmin):
    """Vendors: the helpdesk views them; only superusers add or change them.

    A vendor decides where copies of keystores and passwords go, so a change is not a
    helpdesk task whatever permissions a group holds (docs/architecture.md « Roles »). Saving goes
    through the vendor services, which pin the key, write the audit trail and alert the
    security officer.
    """

    form = VendorForm
    list_display = [
        "name",
        "email",
        "pgp_fingerprint",
        "pgp_expires_at",
        "legacy_keystore",
        "is_active",
    ]
    list_filter = ["is_active", "legacy_keystore"]
    search_fields = ["name", "email", "pgp_fingerprint"]
    readonly_fields = ["pgp_fingerprint", "pgp_expires_at", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def save_model(self, request: HttpRequest, obj: Vendor, form: Any, change: bool) -> None:
        """Save through the vendor services, which pin the key and write the audit trail."""
        actor = actor_label(request.user)
        now = timezone.now()
        data = form.cleaned_data
        if not change:
            vendor = vendor_create(
                name=data["name"],
                email=data["email"],
                pgp_key=data.get("pgp_public_key") or "",
                legacy_keystore=data["legacy_keystore"],
                is_active=data["is_active"],
                actor=actor,
                now=now,
            )
        else:
            arguments = {
                "name": "name",
                "email": "email",
                "pgp_public_key": "pgp_key",
                "legacy_keystore": "legacy_keystore",
                "is_active": "is_active",
            }
            changes: dict[str, Any] = {
                arguments[name]: data[name] for name in form.changed_data if name in arguments
            }
            vendor = vendor_update(vendor_id=obj.pk, actor=actor, now=now, **changes)
        obj.pk = vendor.pk
        obj.refresh_from_db()
        from mycert.services.vendors import vendor_key_misses_address

        if vendor_key_misses_address(obj, now=now):
            self.message_user(
                request,
                gettext(
                    "The OpenPGP key does not carry the address %(email)s as a user ID: the "
                    "workers will not confirm it. Ask the vendor for a key with that address, "
                    "or correct the address."
                )
                % {"email": obj.email},
                messages.ERROR,
            )
        if not change or {"email", "pgp_public_key", "is_active"} & set(form.changed_data):
            # The workers believe their own keyring, not this row (issue 20 §3).
            self.message_user(
                request,
                gettext(
                    "The workers send this vendor's copies only where a security officer "
                    "confirmed them: on each worker host, run python manage.py "
                    "confirm_vendor %(id)s and compare the fingerprint with the vendor's."
                )
                % {"id": obj.pk},
                messages.WARNING,
            )
        if obj.pgp_fingerprint:
            self.message_user(
                request,
                gettext("OpenPGP key %(fingerprint)s, expires %(expires)s.")
                % {
                    "fingerprint": obj.pgp_fingerprint,
                    "expires": obj.pgp_expires_at.isoformat()
                    if obj.pgp_expires_at
                    else gettext("never"),
                },
                messages.INFO,
            )
        elif settings.MYCERT_VENDOR_COPY_REQUIRES_PGP:
            self.message_user(
                request,
                gettext(
                    "This vendor has no OpenPGP key: professionals cannot choose it until "
                    "it has one (MYCERT_VENDOR_COPY_REQUIRES_PGP)."
                ),
                messages.WARNING,
            )


# --- Professionals and requests ------------------------------------------------------------


@admin.register(Professional)
class ProfessionalAdmin(ReadOnlyAdmin):
    list_display = ["family_name", "given_name", "professional_id", "email", "created_at"]
    search_fields = ["family_name", "given_name", "professional_id", "email", "oidc_subject"]
    exclude = ["user"]


@admin.register(CertificateRequest)
class CertificateRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "professional",
        "vendor",
        "status",
        "submitted_at",
        "due_at",
        "is_overdue",
        "completed_at",
    ]
    list_filter = [OverdueFilter, "status", "vendor"]
    list_select_related = ["professional", "vendor"]
    search_fields = [
        "professional__family_name",
        "professional__given_name",
        "professional__professional_id",
        "professional__email",
    ]
    date_hierarchy = "submitted_at"

    @admin.display(boolean=True, description=_("overdue"))
    def is_overdue(self, obj: CertificateRequest) -> bool:
        return obj.is_in_progress and obj.due_at < timezone.now()


# --- Certificates and revocation -----------------------------------------------------------

# Reasons the helpdesk may give (RFC 5280 §5.3.1); certificateHold is not a revocation.
HELPDESK_REASONS = [
    Certificate.RevocationReason.KEY_COMPROMISE,
    Certificate.RevocationReason.AFFILIATION_CHANGED,
    Certificate.RevocationReason.SUPERSEDED,
    Certificate.RevocationReason.CESSATION_OF_OPERATION,
    Certificate.RevocationReason.PRIVILEGE_WITHDRAWN,
    Certificate.RevocationReason.UNSPECIFIED,
]

# Serials as tools print them: openssl x509 -serial (upper case, padded with a leading
# zero to whole bytes), -text (colon-separated bytes), 0x-prefixed, spaced, or decimal.
_SERIAL_SEPARATORS = re.compile(r"[\s:]")
# The label a tool prints before it, pasted with the serial: `openssl x509 -serial`'s
# "serial=0D48…", -text's "Serial Number:", keytool's "Serial number:".
_SERIAL_LABEL = re.compile(r"^\s*serial(?:\s*number)?\s*[=:]\s*", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-f]+")
_DECIMAL = re.compile(r"[0-9]+")
# Below this many hex digits a term is more likely a name or an id than a serial prefix.
_SERIAL_PREFIX_MIN_DIGITS = 6


def serial_search_q(term: str) -> Q | None:
    """The stored serials (hex, lower case, no leading zero) a search term may spell."""
    compact = _SERIAL_SEPARATORS.sub("", _SERIAL_LABEL.sub("", term)).lower()
    hex_digits = compact.removeprefix("0x")
    matches: list[Q] = []
    if len(hex_digits) >= _SERIAL_PREFIX_MIN_DIGITS and _HEX.fullmatch(hex_digits):
        # A whole serial or its beginning (a tool's output cut short, an e-mail's prefix).
        matches.append(Q(serial__startswith=hex_digits.lstrip("0") or "0"))
    if compact == hex_digits and _DECIMAL.fullmatch(compact):
        matches.append(Q(serial=format(int(compact), "x")))
    if not matches:
        return None
    combined = matches[0]
    for match in matches[1:]:
        combined |= match
    return combined


# RFC 4519 / X.520 short names that cryptography prints as dotted OIDs (RFC 4514 §2.3
# names only CN, L, ST, O, OU, C, STREET, DC and UID).
_READABLE_ATTRIBUTES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "surname",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


def readable_name(rfc4514: str) -> str:
    """``2.5.4.5=LU-MED-1,2.5.4.4=Muller,…`` as ``serialNumber=LU-MED-1, surname=Muller, …``."""
    try:
        name = x509.Name.from_rfc4514_string(rfc4514)
    except ValueError:
        return rfc4514  # shown as stored rather than not at all
    # rfc4514_string() lists the RDNs last first (RFC 4514 §2.1); so does this.
    return ", ".join(rdn.rfc4514_string(_READABLE_ATTRIBUTES) for rdn in reversed(name.rdns))


class RevocationForm(forms.Form):
    # No reason is chosen in advance: a default (key compromise, the first) would be
    # recorded, published in the CRL and told to the professional whenever an agent
    # forgets to choose.
    reason = forms.ChoiceField(
        label=_("Reason (RFC 5280)"),
        choices=[
            ("", "---------"),
            *[(reason.value, reason.label) for reason in HELPDESK_REASONS],
        ],
        error_messages={"required": _("Choose the reason for the revocation.")},
    )
    compromised_at = forms.DateTimeField(
        label=_("Compromise date"),
        required=False,
        help_text=_(
            "For a key compromise only: when the key was, or may have been, compromised "
            "(Luxembourg time). Not in the future."
        ),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    # Who asked is part of the revocation's record (docs/architecture.md « Revocation »: who, when,
    # why).
    comment = forms.CharField(
        label=_("Comment"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Why, and on whose request."),
        error_messages={"required": _("Say why, and on whose request.")},
    )

    def clean_compromised_at(self) -> datetime | None:
        value: datetime | None = self.cleaned_data.get("compromised_at")
        if value is not None and value > timezone.now():
            raise ValidationError(_("The compromise date cannot be in the future."), code="future")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if (
            cleaned.get("compromised_at") is not None
            and cleaned.get("reason") != Certificate.RevocationReason.KEY_COMPROMISE
        ):
            self.add_error(
                "compromised_at",
                ValidationError(
                    _("A compromise date applies only to the reason “key compromise”."),
                    code="not_key_compromise",
                ),
            )
        return cleaned


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    # What the helpdesk looks for first comes first, and every column is narrow enough
    # for the list to fit beside the navigation and the filters at 1280 px: the serial's
    # first 16 digits (as the e-mails give them; the search takes the whole one), dates
    # without the time where the time does not matter.
    list_display = [
        "serial_prefix",
        "professional",
        "state",
        "revoked",
        "revocation_reason",
        "valid_until",
        "pem_link",
    ]
    list_display_links = ["serial_prefix"]

    class Media:
        css = {"all": ["mycert/admin-certificates.css"]}

    list_filter = [
        CertificateStateFilter,
        ExpiringSoonFilter,
        "revocation_reason",
        ("request__vendor", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["professional"]
    search_fields = [
        "serial",
        "fingerprint_sha256",
        "professional__family_name",
        "professional__given_name",
        "professional__professional_id",
        "professional__email",
    ]
    date_hierarchy = "issued_at"
    actions = ["revoke_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "serial",
                    "professional",
                    "request",
                    "subject_name",
                    "issuer_name",
                    "key_type",
                    "not_before",
                    "not_after",
                    "fingerprint_sha256",
                    "issued_at",
                    "pem",
                ]
            },
        ),
        (
            _("Revocation"),
            {
                "fields": [
                    "revoked_at",
                    "revocation_reason",
                    "compromised_at",
                    "revocation_comment",
                    "revoked_by",
                    "revoked_via",
                ]
            },
        ),
    ]
    revoke_confirmation_template = "admin/mycert/certificate/revoke_confirmation.html"

    # -- Display

    def get_queryset(self, request: HttpRequest) -> QuerySet[Certificate]:
        # One subquery for the whole page: « will be replaced on » in the state column.
        queryset = cast(CertificateQuerySet, super().get_queryset(request))
        return queryset.with_replacement_delivered_at()

    @admin.display(description=_("state"))
    def state(self, obj: Certificate) -> str:
        now = timezone.now()
        if obj.is_revoked:
            return str(_("revoked"))
        if obj.not_after <= now:
            return str(_("expired"))
        if obj.not_before > now:
            return str(_("not yet valid"))
        replaced = replaced_on(obj, now=now)
        if replaced is not None:
            # The date the password e-mail gave and « My certificates » shows.
            return format_html(
                "{}<br><small>{}</small>",
                _("valid"),
                gettext("will be replaced on %(date)s")
                % {"date": date_format(timezone.localtime(replaced), "SHORT_DATE_FORMAT")},
            )
        return str(_("valid"))

    @admin.display(description=_("serial number"), ordering="serial")
    def serial_prefix(self, obj: Certificate) -> str:
        return format_html('<code title="{}">{}…</code>', obj.serial, obj.serial[:16])

    @admin.display(description=_("revoked"), ordering="revoked_at")
    def revoked(self, obj: Certificate) -> str | None:
        if obj.revoked_at is None:
            return None  # the list's "-", as for the reason
        return date_format(timezone.localtime(obj.revoked_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("valid until"), ordering="not_after")
    def valid_until(self, obj: Certificate) -> str:
        return date_format(timezone.localtime(obj.not_after), "SHORT_DATE_FORMAT")

    @admin.display(description=_("subject"))
    def subject_name(self, obj: Certificate) -> str:
        return readable_name(obj.subject)

    @admin.display(description=_("issuer"))
    def issuer_name(self, obj: Certificate) -> str:
        return readable_name(obj.issuer)

    @admin.display(description=_("PEM"))
    def pem_link(self, obj: Certificate) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse(
                "admin:mycert_certificate_pem", args=[obj.pk], current_app=self.admin_site.name
            ),
            _("download"),
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Django's search (names, ids, e-mail), plus a serial in any common spelling."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        serial = serial_search_q(search_term)
        if serial is not None:
            found = found | queryset.filter(serial)
        return found, may_have_duplicates

    # -- Permissions and URLs

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mycert.revoke_certificate")

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/pem/",
                self.admin_site.admin_view(self.pem_view),
                name="{}_{}_pem".format(*info),
            ),
            path(
                "<path:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="{}_{}_revoke".format(*info),
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_revoke": self.has_revoke_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def pem_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The certificate (public part) as a PEM file."""
        certificate = get_object_or_404(self.get_queryset(request), pk=unquote(object_id))
        if not self.has_view_permission(request, certificate):
            raise PermissionDenied
        response = HttpResponse(certificate.pem, content_type="application/x-pem-file")
        response["Content-Disposition"] = f'attachment; filename="{certificate.serial}.pem"'
        return response

    # -- Revocation: the bulk action and the change page's button share one confirmation

    @admin.action(permissions=["revoke"], description=_("Revoke selected certificates"))
    def revoke_selected(
        self, request: HttpRequest, queryset: QuerySet[Certificate]
    ) -> HttpResponse | None:
        """Ask for the reason on a confirmation page, then revoke (like ``delete_selected``)."""
        certificates = list(queryset.select_related("professional"))
        to_revoke = [c for c in certificates if not c.is_revoked]
        if not to_revoke:
            self._refuse_already_revoked(request, certificates)
            return None
        if self._bulk_too_large(request, len(to_revoke)):
            return None
        if request.POST.get("post"):
            form = RevocationForm(request.POST)
            if form.is_valid():
                self._revoke(request, to_revoke, form, skipped=len(certificates) - len(to_revoke))
                return None
        else:
            form = RevocationForm()
        return self._render_confirmation(request, certificates, form, bulk=True)

    def _bulk_too_large(self, request: HttpRequest, count: int) -> bool:
        """Refuse an agent's revocation of more than MYCERT_BULK_REVOCATION_MAX at once.

        "Select all" would otherwise revoke the whole population with one agent's click;
        a superuser (a second, rarer account) makes the large ones.
        """
        limit: int = settings.MYCERT_BULK_REVOCATION_MAX
        if count <= limit or request.user.is_superuser:
            return False
        self.message_user(
            request,
            ngettext(
                "You selected %(count)d certificate to revoke; above %(limit)d at once, a "
                "bulk revocation needs a superuser. Nothing was done.",
                "You selected %(count)d certificates to revoke; above %(limit)d at once, a "
                "bulk revocation needs a superuser. Nothing was done.",
                count,
            )
            % {"count": count, "limit": limit},
            messages.ERROR,
        )
        return True

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Revoke" button: the same confirmation, for one certificate."""
        if not (self.has_view_permission(request) and self.has_revoke_permission(request)):
            raise PermissionDenied
        certificate = get_object_or_404(
            self.get_queryset(request).select_related("professional"), pk=unquote(object_id)
        )
        change_url = reverse(
            "admin:mycert_certificate_change",
            args=[certificate.pk],
            current_app=self.admin_site.name,
        )
        if certificate.is_revoked:
            self._refuse_already_revoked(request, [certificate])
            return HttpResponseRedirect(change_url)
        if request.method == "POST":
            form = RevocationForm(request.POST)
            if form.is_valid():
                self._revoke(request, [certificate], form)
                return HttpResponseRedirect(change_url)
        else:
            form = RevocationForm()
        return self._render_confirmation(request, [certificate], form, bulk=False)

    def _render_confirmation(
        self,
        request: HttpRequest,
        certificates: list[Certificate],
        form: RevocationForm,
        *,
        bulk: bool,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": _("Revoke certificates"),
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "to_revoke": [c for c in certificates if not c.is_revoked],
            "already_revoked": [c for c in certificates if c.is_revoked],
            "queryset": certificates,
            "bulk": bulk,
            "bulk_limit": settings.MYCERT_BULK_REVOCATION_MAX,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.revoke_confirmation_template, context)

    def _revoke(
        self,
        request: HttpRequest,
        certificates: list[Certificate],
        form: RevocationForm,
        *,
        skipped: int = 0,
    ) -> None:
        """Revoke through the service (audit and CRL included); report the counts."""
        revoked: list[Certificate] = []
        now = timezone.now()
        # One transaction: the whole batch or none of it (a refusal only skips its row).
        with transaction.atomic():
            for certificate in certificates:
                try:
                    revoked.append(
                        certificate_revoke(
                            certificate_id=certificate.pk,
                            reason=form.cleaned_data["reason"],
                            via=Certificate.RevokedVia.HELPDESK,
                            actor=request.user,  # type: ignore[arg-type]
                            now=now,
                            compromised_at=form.cleaned_data["compromised_at"],
                            comment=form.cleaned_data["comment"],
                        )
                    )
                except AlreadyRevoked:  # revoked meanwhile, by someone else
                    skipped += 1
        for certificate in revoked:
            self.log_change(request, certificate, gettext("Revoked."))
        if revoked:
            self.message_user(
                request,
                ngettext(
                    "Revoked %(count)d certificate (%(reason)s); the CRL is being re-signed.",
                    "Revoked %(count)d certificates (%(reason)s); the CRL is being re-signed.",
                    len(revoked),
                )
                % {
                    "count": len(revoked),
                    "reason": Certificate.RevocationReason(form.cleaned_data["reason"]).label,
                },
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d certificate was already revoked and was left unchanged.",
                    "%(count)d certificates were already revoked and were left unchanged.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    def _refuse_already_revoked(
        self, request: HttpRequest, certificates: list[Certificate]
    ) -> None:
        self.message_user(
            request,
            ngettext(
                "Certificate %(serials)s is already revoked; a revocation is never changed. Nothing was done.",
                "Certificates %(serials)s are already revoked; a revocation is never changed. Nothing was done.",
                len(certificates),
            )
            % {"serials": ", ".join(c.serial for c in certificates)},
            messages.ERROR,
        )


# --- Deliveries (the outbox) ---------------------------------------------------------------


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "certificate",
        "recipient",
        "content",
        "to_email",
        "status",
        "attempts",
        "short_last_error",
        "next_attempt_at",
        "sent_at",
    ]
    list_filter = ["status", "recipient", "content", "recipient_refused"]
    list_select_related = ["certificate"]
    search_fields = [
        "to_email",
        "certificate__serial",
        "certificate__professional__family_name",
        "certificate__professional__professional_id",
    ]
    # Explicit: ``sealed_payload`` (the keystore or password, sealed) is never shown.
    fields = readonly_fields = (
        "certificate",
        "recipient",
        "content",
        "to_email",
        "vendor",
        "language",
        "pgp_fingerprint",
        "after",
        "status",
        "attempts",
        "last_error",
        "recipient_refused",
        "next_attempt_at",
        "message_id",
        "payload_held",
        "created_at",
        "updated_at",
        "sent_at",
    )
    actions = ["retry_failed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The payload is never loaded for display; only whether one is still held.
        queryset: QuerySet[Delivery] = (
            super()
            .get_queryset(request)
            .defer("sealed_payload")
            .annotate(
                has_payload=ExpressionWrapper(
                    Q(sealed_payload__isnull=False), output_field=BooleanField()
                )
            )
        )
        return queryset

    @admin.display(description=_("last error"))
    def short_last_error(self, obj: Delivery) -> str:
        return obj.last_error if len(obj.last_error) <= 120 else obj.last_error[:119] + "…"

    @admin.display(boolean=True, description=_("payload still held (sealed)"))
    def payload_held(self, obj: Delivery) -> bool:
        return bool(getattr(obj, "has_payload", False))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mycert.change_delivery")

    @admin.action(permissions=["retry"], description=_("Retry selected failed deliveries"))
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        """Queue failed deliveries again; any other selected row is skipped."""
        actor = actor_label(request.user)
        queued = 0
        skipped = 0
        for delivery_id, status in queryset.order_by("pk").values_list("pk", "status"):
            if status != Delivery.Status.FAILED:
                skipped += 1
                continue
            try:
                delivery_retry(delivery_id=delivery_id, actor=actor)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                skipped += 1
            else:
                queued += 1
        if queued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery queued again.",
                    "%(count)d deliveries queued again.",
                    queued,
                )
                % {"count": queued},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery skipped: only failed deliveries with their payload can be retried.",
                    "%(count)d deliveries skipped: only failed deliveries with their payload can be retried.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )


# --- Published CRLs and the audit trail ----------------------------------------------------


@admin.register(Crl)
class CrlAdmin(ReadOnlyAdmin):
    list_display = ["number", "this_update", "next_update", "entries", "created_at"]
    exclude = ["der"]


@admin.register(OperatorAlert)
class OperatorAlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "recipient", "kind", "subject", "sent_at", "attempts"]
    list_filter = ["recipient", "kind", ("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["subject"]
    date_hierarchy = "created_at"


#: What each audit code means, in the reader's language. The codes stay in the data
#: (stable, searchable, hashed into the chain); a code missing here is shown as is.
AUDIT_ACTIONS: dict[str, Any] = {
    "audit.chain_keyed": _("Audit chain keyed (MYCERT_AUDIT_KEY) from here on"),
    "audit.downgrade_detected": _(
        "Audit chain rewritten without the key: an unkeyed link after the keyed chain (found here)"
    ),
    "auth.login": _("Professional logged in"),
    "auth.login_refused": _("Professional login refused"),
    "auth.logout": _("Professional logged out"),
    "staff.login": _("Staff member signed in to the admin"),
    "staff.login_failed": _("Failed sign-in to the admin"),
    "admin.user_added": _("User account added"),
    "admin.user_changed": _("User account changed"),
    "admin.user_deleted": _("User account deleted"),
    "admin.group_added": _("Group added"),
    "admin.group_changed": _("Group changed"),
    "admin.group_deleted": _("Group deleted"),
    "admin.totpdevice_added": _("TOTP device added"),
    "admin.totpdevice_changed": _("TOTP device changed"),
    "admin.totpdevice_deleted": _("TOTP device deleted"),
    "admin.totp_device_created": _("TOTP device created (command)"),
    "ca.created": _("CA created"),
    "ca.imported": _("CA imported"),
    "request.submitted": _("Certificate request submitted"),
    "request.sent": _("Certificate request completed"),
    "certificate.issued": _("Certificate issued"),
    "certificate.revoked": _("Certificate revoked"),
    "delivery.sent": _("E-mail sent"),
    "delivery.failed": _("E-mail failed"),
    "delivery.retried": _("E-mail queued again"),
    "vendor.created": _("Vendor added"),
    "vendor.changed": _("Vendor changed"),
    "vendor.confirmed": _("Vendor confirmed on a worker host"),
    "vendor.withdrawn": _("Vendor withdrawn from a worker host"),
}


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_name", "description", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "action", "object_id"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        # The actor is stored as "user:<pk>" (never a name: names change, the chain must
        # not); the name is looked up for display, in the same query.
        users = get_user_model()._default_manager.annotate(
            label=Concat(Value("user:"), Cast("pk", CharField()))
        )
        person = users.filter(label=OuterRef("actor"))
        queryset: QuerySet[AuditEvent] = (
            super()
            .get_queryset(request)
            .annotate(
                actor_username=Subquery(person.values("username")[:1]),
                actor_first_name=Subquery(person.values("first_name")[:1]),
                actor_last_name=Subquery(person.values("last_name")[:1]),
            )
        )
        return queryset

    @admin.display(description=_("actor"), ordering="actor")
    def actor_name(self, obj: AuditEvent) -> str:
        username = getattr(obj, "actor_username", None)
        if not username:
            return obj.actor
        full_name = " ".join(
            part
            for part in (getattr(obj, "actor_first_name", ""), getattr(obj, "actor_last_name", ""))
            if part
        )
        return f"{full_name} ({username})" if full_name else str(username)

    @admin.display(description=_("action"), ordering="action")
    def description(self, obj: AuditEvent) -> str:
        label = AUDIT_ACTIONS.get(obj.action)
        return str(label) if label is not None else obj.action
