"""The professionals' pages: read-only (they come from the OIDC login)."""

from __future__ import annotations

from django.contrib import admin

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import Professional


@admin.register(Professional)
class ProfessionalAdmin(ReadOnlyAdmin):
    list_display = ["family_name", "given_name", "professional_id", "email", "created_at"]
    search_fields = ["family_name", "given_name", "professional_id", "email", "oidc_subject"]
    exclude = ["user"]
