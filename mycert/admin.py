"""The helpdesk's admin. Nothing is ever deleted; crypto fields are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from mycert.models import (
    AuditEvent,
    Certificate,
    CertificateRequest,
    Crl,
    Delivery,
    Professional,
    Vendor,
)


class NoDeleteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(NoDeleteAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Vendor)
class VendorAdmin(NoDeleteAdmin):
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


@admin.register(Professional)
class ProfessionalAdmin(ReadOnlyAdmin):
    list_display = ["family_name", "given_name", "professional_id", "email", "created_at"]
    search_fields = ["family_name", "given_name", "professional_id", "email", "oidc_subject"]


@admin.register(CertificateRequest)
class CertificateRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "professional",
        "vendor",
        "status",
        "submitted_at",
        "due_at",
        "completed_at",
    ]
    list_filter = ["status", "vendor"]
    search_fields = [
        "professional__family_name",
        "professional__professional_id",
        "professional__email",
    ]


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ["serial", "professional", "not_after", "revoked_at", "revocation_reason"]
    search_fields = ["serial", "professional__family_name", "professional__professional_id"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "certificate",
        "recipient",
        "content",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "recipient", "content"]
    exclude = ["sealed_payload"]


@admin.register(Crl)
class CrlAdmin(ReadOnlyAdmin):
    list_display = ["number", "this_update", "next_update", "entries"]
    exclude = ["der"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id"]
    list_filter = ["action"]
    search_fields = ["actor", "action", "object_id"]
