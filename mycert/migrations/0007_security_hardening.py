"""Security hardening: vendors are view-only for the helpdesk; audit links name their scheme.

- The ``Helpdesk`` group loses ``add_vendor`` and ``change_vendor`` (docs/architecture.md « Roles »
gives it
  view only): a vendor decides where copies of keystores go, so only superusers change
  vendors, through ``mycert.services.vendors``.
- ``AuditEvent.hash_scheme``: every event already written is a plain SHA-256 link; new
  events are keyed (HMAC) once ``MYCERT_AUDIT_KEY`` is set (``mycert.services.audit``).
"""

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

REMOVED_HELPDESK_PERMISSIONS = [("mycert", "add_vendor"), ("mycert", "change_vendor")]


def make_vendors_view_only(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    group = group_model.objects.filter(name="Helpdesk").first()
    if group is None:
        return
    for app_label, codename in REMOVED_HELPDESK_PERMISSIONS:
        group.permissions.remove(
            *permission_model.objects.filter(
                content_type__app_label=app_label, codename=codename
            )
        )


class Migration(migrations.Migration):
    dependencies = [("mycert", "0006_delivery_cancelled")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="hash_scheme",
            field=models.CharField(
                choices=[("sha256", "SHA-256 (unkeyed)"), ("hmac-sha256", "HMAC-SHA-256 (keyed)")],
                default="sha256",
                max_length=16,
                verbose_name="hash scheme",
            ),
        ),
        migrations.RunPython(make_vendors_view_only, migrations.RunPython.noop),
    ]
