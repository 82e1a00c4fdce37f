"""The request form (docs/architecture.md « The request's life »), in the agency's own words."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from mycert.models import Certificate, Vendor
from mycert.pki import canonical_revocation_code
from mycert.selectors import vendors_offered

NO_VENDOR = "none"


class CertificateRequestForm(forms.Form):
    vendor = forms.ChoiceField(
        label=_("Choose your vendor"),
        help_text=_(
            "Your software vendor receives a copy of the certificate to help you install it."
        ),
        error_messages={
            "required": _("Choose your vendor, or “I have no vendor”."),
            "invalid_choice": _(
                "This vendor is not in the list. Choose one from the list, or “I have no vendor”."
            ),
        },
    )
    terms_accepted = forms.BooleanField(
        label=_("I confirm that I have read the usage information."),
        error_messages={
            "required": _(
                "Please confirm that you have read the usage information before sending."
            ),
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only vendors whose copies can be encrypted, unless the agency turned that
        # policy off (MYCERT_VENDOR_COPY_REQUIRES_PGP).
        self.vendors = {str(v.pk): v for v in vendors_offered(now=timezone.now())}
        vendor_field = cast(forms.ChoiceField, self.fields["vendor"])
        vendor_field.choices = [
            ("", _("— Choose your vendor —")),
            (NO_VENDOR, _("I have no vendor")),
            *((pk, vendor.name) for pk, vendor in self.vendors.items()),
        ]

    def chosen_vendor(self) -> Vendor | None:
        """The vendor to receive a copy, or None for “I have no vendor”."""
        value = self.cleaned_data["vendor"]
        return None if value == NO_VENDOR else self.vendors[value]


class SelfRevocationForm(forms.Form):
    """The professional revokes their own certificate: a reason and an explicit "yes"."""

    # Two of RFC 5280's reasons, worded for the professional.
    REASONS = [
        (
            Certificate.RevocationReason.KEY_COMPROMISE,
            _("Someone else may have the keystore or its password (key compromise)"),
        ),
        (
            Certificate.RevocationReason.CESSATION_OF_OPERATION,
            _("I no longer need this certificate"),
        ),
    ]

    reason = forms.ChoiceField(
        label=_("Why do you revoke this certificate?"),
        choices=REASONS,
        widget=forms.RadioSelect,
        error_messages={
            "required": _("Choose why you revoke the certificate."),
            "invalid_choice": _("Choose one of the two reasons shown."),
        },
    )
    confirm = forms.BooleanField(
        label=_("I understand that the certificate stops working at once and for good."),
        error_messages={
            "required": _("Tick the box to confirm that you want to revoke the certificate."),
        },
    )


class CodeRevocationForm(forms.Form):
    """« Revoke without logging in », first step: which certificate, and its code."""

    identifier = forms.CharField(
        label=_("Serial number or professional identifier"),
        max_length=200,
        help_text=_(
            "The serial number is next to the code in the e-mail with your password; its "
            "first 16 characters are enough."
        ),
        error_messages={
            "required": _("Enter the certificate's serial number or your professional identifier."),
        },
    )
    code = forms.CharField(
        label=_("Revocation code"),
        max_length=200,
        help_text=_(
            "Five groups of five characters, from the same e-mail. Upper and lower case matter."
        ),
        error_messages={"required": _("Enter the revocation code from the e-mail.")},
    )

    def clean_code(self) -> str:
        code = canonical_revocation_code(self.cleaned_data["code"])
        if code is None:
            raise forms.ValidationError(
                _(
                    "A revocation code has 25 letters and digits in five groups of five. "
                    "Copy it from the e-mail with your password."
                ),
                code="shape",
            )
        return code
