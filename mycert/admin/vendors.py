"""The vendors' pages: only superusers add or change a vendor, through its services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from mycert.admin.base import NoDeleteAdmin
from mycert.models import Vendor
from mycert.services.audit import actor_label
from mycert.services.vendors import (
    clean_pgp_key,
    vendor_create,
    vendor_key_misses_address,
    vendor_update,
)


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
