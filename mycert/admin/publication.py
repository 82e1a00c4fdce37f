"""The published CRLs: read-only, without their DER."""

from __future__ import annotations

from django.contrib import admin

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import Crl


@admin.register(Crl)
class CrlAdmin(ReadOnlyAdmin):
    list_display = ["number", "this_update", "next_update", "entries", "created_at"]
    exclude = ["der"]
