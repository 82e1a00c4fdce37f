"""The audit trail (docs/architecture.md « The audit trail »): read-only, labelled."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import AuditEvent


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
        # The label of AuditEvent.Action in the reader's language; a code written before
        # it had a name (or by an older release) shows as stored.
        return str(obj.get_action_display())
