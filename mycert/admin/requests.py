"""The certificate requests' pages: read-only, with the service-level filter."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import CertificateRequest
from mycert.querysets import CertificateRequestQuerySet


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
