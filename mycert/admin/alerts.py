"""The staff alerts: read-only."""

from __future__ import annotations

from django.contrib import admin

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import OperatorAlert


@admin.register(OperatorAlert)
class OperatorAlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "recipient", "kind", "subject", "sent_at", "attempts"]
    list_filter = ["recipient", "kind", ("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["subject"]
    date_hierarchy = "created_at"
