"""What every page of the helpdesk's admin shares (docs/architecture.md « Roles »).

Nothing is ever deleted, by anyone: no delete permission on any MyCert model, and the
site-wide ``delete_selected`` action is gone. Crypto and status fields are read-only;
they change only through the services (revocation, delivery retry, vendor keys), which
write the audit trail.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


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
