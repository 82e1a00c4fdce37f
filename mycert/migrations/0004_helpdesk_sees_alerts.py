"""The ``Helpdesk`` group sees the staff alerts (it cannot change or delete them)."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def allow_helpdesk_to_view_alerts(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    app_config = apps.get_app_config("mycert")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    group, _ = group_model.objects.get_or_create(name="Helpdesk")
    group.permissions.add(
        permission_model.objects.get(
            content_type__app_label="mycert", codename="view_operatoralert"
        )
    )


class Migration(migrations.Migration):
    dependencies = [("mycert", "0003_operator_alerts")]

    operations = [migrations.RunPython(allow_helpdesk_to_view_alerts, migrations.RunPython.noop)]
