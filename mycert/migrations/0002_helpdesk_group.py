"""Create the ``Helpdesk`` group: view everything MyCert keeps, revoke, retry; never delete."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

HELPDESK_PERMISSIONS = [
    ("mycert", "view_certificaterequest"),
    ("mycert", "view_certificate"),
    ("mycert", "revoke_certificate"),
    ("mycert", "view_delivery"),
    ("mycert", "change_delivery"),  # the "retry" action
    # View only: a vendor decides where copies of keystores go, so only superusers add
    # or change vendors (docs/architecture.md « Roles »). Databases migrated while this list still
    # held
    # add_vendor and change_vendor lose them in 0007_security_hardening.
    ("mycert", "view_vendor"),
    ("mycert", "view_professional"),
    ("mycert", "view_auditevent"),
    ("mycert", "view_crl"),
]


def create_helpdesk_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions are normally made after migrate; make them now so the group can hold them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    group, _ = group_model.objects.get_or_create(name="Helpdesk")
    for app_label, codename in HELPDESK_PERMISSIONS:
        group.permissions.add(
            permission_model.objects.get(content_type__app_label=app_label, codename=codename)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("mycert", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_helpdesk_group, migrations.RunPython.noop)]
