"""The outbox's deliveries: read-only, retry of the failed ones; the sealed payload appears on no page and in no form."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from mycert.admin.base import ReadOnlyAdmin
from mycert.models import Delivery
from mycert.outbox import delivery_retry
from mycert.services.audit import actor_label


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "certificate",
        "recipient",
        "content",
        "to_email",
        "status",
        "attempts",
        "short_last_error",
        "next_attempt_at",
        "sent_at",
    ]
    list_filter = ["status", "recipient", "content", "recipient_refused"]
    list_select_related = ["certificate"]
    search_fields = [
        "to_email",
        "certificate__serial",
        "certificate__professional__family_name",
        "certificate__professional__professional_id",
    ]
    # Explicit: ``sealed_payload`` (the keystore or password, sealed) is never shown.
    fields = readonly_fields = (
        "certificate",
        "recipient",
        "content",
        "to_email",
        "vendor",
        "language",
        "pgp_fingerprint",
        "after",
        "status",
        "attempts",
        "last_error",
        "recipient_refused",
        "next_attempt_at",
        "message_id",
        "payload_held",
        "created_at",
        "updated_at",
        "sent_at",
    )
    actions = ["retry_failed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The payload is never loaded for display; only whether one is still held.
        queryset: QuerySet[Delivery] = (
            super()
            .get_queryset(request)
            .defer("sealed_payload")
            .annotate(
                has_payload=ExpressionWrapper(
                    Q(sealed_payload__isnull=False), output_field=BooleanField()
                )
            )
        )
        return queryset

    @admin.display(description=_("last error"))
    def short_last_error(self, obj: Delivery) -> str:
        return obj.last_error if len(obj.last_error) <= 120 else obj.last_error[:119] + "…"

    @admin.display(boolean=True, description=_("payload still held (sealed)"))
    def payload_held(self, obj: Delivery) -> bool:
        return bool(getattr(obj, "has_payload", False))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mycert.change_delivery")

    @admin.action(permissions=["retry"], description=_("Retry selected failed deliveries"))
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        """Queue failed deliveries again; any other selected row is skipped."""
        actor = actor_label(request.user)
        queued = 0
        skipped = 0
        for delivery_id, status in queryset.order_by("pk").values_list("pk", "status"):
            if status != Delivery.Status.FAILED:
                skipped += 1
                continue
            try:
                delivery_retry(delivery_id=delivery_id, actor=actor)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
                skipped += 1
            else:
                queued += 1
        if queued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery queued again.",
                    "%(count)d deliveries queued again.",
                    queued,
                )
                % {"count": queued},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d delivery skipped: only failed deliveries with their payload can be retried.",
                    "%(count)d deliveries skipped: only failed deliveries with their payload can be retried.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
