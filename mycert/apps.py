from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MyCertConfig(AppConfig):
    name = "mycert"
    verbose_name = _("MyCert")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from mycert import checks  # noqa: F401  (registers the system checks)
