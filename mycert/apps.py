from typing import Any

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.utils.translation import gettext_lazy as _


class MyCertAdminConfig(AdminConfig):
    """``django.contrib.admin`` with MyCert's admin site as the default ``admin.site``."""

    default_site = "mycert.admin.site.MyCertAdminSite"


class MyCertConfig(AppConfig):
    name = "mycert"
    verbose_name = _("MyCert")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # ``checks`` registers the system checks on import.
        from mycert import checks, custody  # noqa: F401

        # Each module registers its ModelAdmins on the configured site.
        from mycert.admin import (  # noqa: F401
            alerts,
            audit,
            certificates,
            deliveries,
            professionals,
            publication,
            requests,
            vendors,
        )
        from mycert.ops import metrics

        metrics.connect_task_signals()
        custody.worker_signals_connect()
        from mycert.services.custody import connect_custody_signals

        connect_custody_signals()
        _connect_audit_signals()


def _connect_audit_signals() -> None:
    """Staff sign-ins, failed sign-ins and admin changes to accounts go to the audit trail."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.signals import user_logged_in, user_login_failed
    from django.db.models.signals import post_save
    from django_otp.forms import otp_verification_failed

    from mycert.services import staff

    def on_login(request: Any, user: Any, **kwargs: Any) -> None:
        staff.staff_login_record(user=user, request=request)

    def on_login_failed(credentials: Any, **kwargs: Any) -> None:
        # Django has already masked the password in ``credentials``; only the name is read.
        staff.staff_login_failed_record(
            username=(credentials or {}).get("username", ""), reason="password"
        )

    def on_otp_failed(user: Any, **kwargs: Any) -> None:
        staff.staff_login_failed_record(username=user.get_username(), reason="otp")

    def on_log_entry(instance: LogEntry, created: bool, **kwargs: Any) -> None:
        if created and not kwargs.get("raw"):
            staff.admin_change_record(entry=instance)

    user_logged_in.connect(on_login, dispatch_uid="mycert.audit.login", weak=False)
    user_login_failed.connect(on_login_failed, dispatch_uid="mycert.audit.login_failed", weak=False)
    otp_verification_failed.connect(on_otp_failed, dispatch_uid="mycert.audit.otp", weak=False)
    post_save.connect(
        on_log_entry, sender=LogEntry, dispatch_uid="mycert.audit.admin_change", weak=False
    )
