from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MyCertConfig(AppConfig):
    name = "mycert"
    verbose_name = _("MyCert")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # ``checks`` registers the system checks on import.
        from mycert import admin_otp, ca_store, checks, metrics  # noqa: F401

        admin_otp.install()
        metrics.connect_task_signals()
        ca_store.connect_worker_signals()
