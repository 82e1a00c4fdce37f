"""The certificates' pages: search by serial in any spelling, the PEM, and revocation.

Revocation (docs/architecture.md « Revocation ») asks for the reason on a confirmation
page, for the bulk action and the change page's button alike, then goes through the
revocation service, which writes the audit trail and re-signs the CRL.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.x509.oid import NameOID
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import Certificate, CertificateRequest, Professional
from mycert.querysets import CertificateQuerySet
from mycert.selectors import replaced_on
from mycert.services.revocation import certificates_revoke

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise as StrPromise


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


class VendorFilter(admin.RelatedFieldListFilter):
    """The vendors chosen in at least one request.

    Django's ``RelatedOnlyFieldListFilter`` finds them with a DISTINCT over every
    certificate joined to its request, on every page of the list (issue 24 §5); this asks
    the vendors table, each vendor through the requests' vendor index.
    """

    def field_choices(
        self, field: Any, request: HttpRequest, model_admin: Any
    ) -> list[tuple[str, str | StrPromise]]:
        chosen = Exists(CertificateRequest.objects.filter(vendor_id=OuterRef("pk")))
        ordering = self.field_admin_ordering(field, request, model_admin)
        choices: list[tuple[str, str | StrPromise]] = field.get_choices(
            include_blank=False, limit_choices_to=Q(chosen), ordering=ordering
        )
        return choices


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


_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def _search_words(search_term: str) -> list[str]:
    """The words of a search, quoted phrases kept whole (as Django's admin splits them)."""
    words = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        if bit.strip():
            words.append(bit)
    return words


def _professional_q(word: str) -> Q:
    return (
        Q(family_name__icontains=word)
        | Q(given_name__icontains=word)
        | Q(professional_id__icontains=word)
        | Q(email__icontains=word)
    )


def _certificate_q(word: str) -> Q | None:
    """What a word may spell of the certificate itself: a serial, a whole fingerprint."""
    matches = serial_search_q(word)
    fingerprint = _SERIAL_SEPARATORS.sub("", word).lower()
    if _FINGERPRINT.fullmatch(fingerprint):
        by_fingerprint = Q(fingerprint_sha256=fingerprint)
        matches = by_fingerprint if matches is None else matches | by_fingerprint
    return matches


def _word_matches(word: str) -> QuerySet[Any]:
    """Primary keys of the certificates one search word finds, each way through an index."""
    professionals = Professional.objects.order_by().filter(_professional_q(word))
    certificates = Certificate.objects.order_by()
    by_professional = certificates.filter(professional_id__in=professionals.values("pk"))
    own = _certificate_q(word)
    if own is None:
        return by_professional.values("pk")
    return by_professional.values("pk").union(certificates.filter(own).values("pk"))


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
        ("request__vendor", VendorFilter),
        # A filter by period rather than Django's date_hierarchy, whose list of years
        # reads every certificate on every page (issue 24 §5).
        ("issued_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["professional"]
    # What get_search_results searches (each through an index, migration 0016); the
    # admin shows the search box when this is not empty.
    search_fields = [
        "serial",
        "fingerprint_sha256",
        "professional__family_name",
        "professional__given_name",
        "professional__professional_id",
        "professional__email",
    ]
    search_help_text = _(
        "A name, e-mail or professional identifier (or part of it), a serial number in any "
        "spelling or its beginning, or a whole SHA-256 fingerprint."
    )
    # The unfiltered count is a second COUNT(*) over every certificate on each search.
    show_full_result_count = False
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
        """Names, e-mail, identifiers, serials and fingerprints, each through an index.

        As Django's search, every word must match one field, and a part of a name, an
        e-mail or an identifier matches (trigram indexes); a serial in any common
        spelling or its beginning, and a whole fingerprint, match too. Django's own
        search ORs the fields across the join to professionals, which PostgreSQL can
        only answer by reading every certificate (issue 24 §5): here each field is its
        own indexed query and the certificates are found by primary key.
        """
        words = _search_words(search_term)
        if not words:
            return queryset, False
        if all(_certificate_q(word) is None for word in words):
            # Names only (« marie schmit »): the professionals who match every word, in
            # one query, rather than every Marie and every Schmit intersected.
            professionals = Professional.objects.order_by()
            for word in words:
                professionals = professionals.filter(_professional_q(word))
            # Their ids read first: given a subquery, PostgreSQL guesses thousands of
            # matches and walks the whole list newest first to fill a page of a few;
            # given the ids, it fetches those certificates and sorts them.
            professional_ids = list(professionals.values_list("pk", flat=True))
            return queryset.filter(professional_id__in=professional_ids), False
        found = Certificate.objects.order_by()
        for word in words:
            found = found.filter(pk__in=_word_matches(word))
        serial = serial_search_q(search_term)
        if serial is not None and len(words) > 1:
            # A serial spelt with spaces: the whole term, not word by word.
            matches = found.values("pk").union(
                Certificate.objects.order_by().filter(serial).values("pk")
            )
            return queryset.filter(pk__in=matches), False
        return queryset.filter(pk__in=found.values("pk")), False

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
        revoked, skipped_meanwhile = certificates_revoke(
            certificate_ids=[certificate.pk for certificate in certificates],
            reason=form.cleaned_data["reason"],
            via=Certificate.RevokedVia.HELPDESK,
            actor=request.user,  # type: ignore[arg-type]
            now=timezone.now(),
            compromised_at=form.cleaned_data["compromised_at"],
            comment=form.cleaned_data["comment"],
        )
        skipped += skipped_meanwhile  # revoked meanwhile, by someone else
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
