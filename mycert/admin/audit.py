"""The audit trail (docs/architecture.md « The audit trail »): read-only, labelled."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import AuditEvent

#: What each audit code means, in the reader's language. The codes stay in the data
#: (stable, searchable, hashed into the chain); a code missing here is shown as is.
AUDIT_ACTIONS: dict[str, Any] = {
    "audit.chain_keyed": _("Audit chain keyed (MYCERT_AUDIT_KEY) from here on"),
    "audit.downgrade_detected": _(
        "Audit chain rewritten without the key: an unkeyed link after the keyed chain (found here)"
    ),
    "auth.login": _("Professional logged in"),
    "auth.login_refused": _("Professional login refused"),
    "auth.logout": _("Professional logged out"),
    "staff.login": _("Staff member signed in to the admin"),
    "staff.login_failed": _("Failed sign-in to the admin"),
    "admin.user_added": _("User account added"),
    "admin.user_changed": _("User account changed"),
    "admin.user_deleted": _("User account deleted"),
    "admin.group_added": _("Group added"),
    "admin.group_changed": _("Group changed"),
    "admin.group_deleted": _("Group deleted"),
    "admin.totpdevice_added": _("TOTP device added"),
    "admin.totpdevice_changed": _("TOTP device changed"),
    "admin.totpdevice_deleted": _("TOTP device deleted"),
    "admin.totp_device_created": _("TOTP device created (command)"),
    "ca.created": _("CA created"),
    "ca.imported": _("CA imported"),
    "request.submitted": _("Certificate request submitted"),
    "request.sent": _("Certificate request completed"),
    "certificate.issued": _("Certificate issued"),
    "certificate.revoked": _("Certificate revoked"),
    "delivery.sent": _("E-mail sent"),
    "delivery.failed": _("E-mail failed"),
    "delivery.retried": _("E-mail queued again"),
    "vendor.created": _("Vendor added"),
    "vendor.changed": _("Vendor changed"),
    "vendor.confirmed": _("Vendor confirmed on a worker host"),
    "vendor.withdrawn": _("Vendor withdrawn from a worker host"),
}


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
        label = AUDIT_ACTIONS.get(obj.action)
        return str(label) if label is not None else obj.action
