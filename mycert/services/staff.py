"""The helpdesk's own accounts in the audit trail: sign-ins, failed sign-ins, admin changes.

docs/architecture.md « The audit trail » asks for every admin change. MyCert's own models are
audited by their
services; what Django and django-otp's admin pages change (users, groups, TOTP devices)
is taken from the admin's ``LogEntry``, written in the same transaction as the change
with the staff member who made it and the names of the changed fields (never their
values: a password change reads "Changed password."). Receivers are wired in
``MyCertConfig.ready()``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest

from mycert.middleware import SESSION_STARTED_KEY
from mycert.models import AuditEvent
from mycert.services.audit import actor_label, audit_record

__all__ = [
    "AUDITED_ADMIN_APPS",
    "admin_change_record",
    "staff_login_failed_record",
    "staff_login_record",
]

logger = logging.getLogger(__name__)

#: Apps whose admin changes are audited from the LogEntry: accounts, groups and second
#: factors. MyCert's models are left out, their services audit them in more detail.
AUDITED_ADMIN_APPS = ("auth", "otp_totp", "otp_static", "otp_hotp", "otp_email")
_VERBS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}
_USERNAME_MAX = 150


def staff_login_record(*, user: AbstractBaseUser, request: HttpRequest | None) -> None:
    """Record a sign-in; staff only (a professional's login is audited by its service)."""
    if request is not None and hasattr(request, "session"):
        # The absolute session lifetime counts from here (mycert.middleware).
        request.session[SESSION_STARTED_KEY] = int(time.time())
    if not getattr(user, "is_staff", False):
        return
    audit_record(
        actor=actor_label(user),
        action=AuditEvent.Action.STAFF_LOGIN,
        target=user,
        details={"superuser": bool(getattr(user, "is_superuser", False))},
    )
    logger.info("staff sign-in: user=%s", user.pk)


def staff_login_failed_record(*, username: object, reason: str) -> None:
    """Record a failed sign-in: the name typed (cut short), never a password or code."""
    name = username if isinstance(username, str) else ""
    audit_record(
        actor="anonymous",
        action=AuditEvent.Action.STAFF_LOGIN_FAILED,
        details={"username": name[:_USERNAME_MAX], "reason": reason},
    )
    logger.warning("staff sign-in failed: reason=%s", reason)


def admin_change_record(*, entry: LogEntry) -> None:
    """Audit an admin change of an account, a group or a second-factor device."""
    content_type = entry.content_type
    if content_type is None or content_type.app_label not in AUDITED_ADMIN_APPS:
        return
    verb = _VERBS.get(entry.action_flag)
    if verb is None:
        return
    try:
        change: Any = json.loads(entry.change_message or "[]")
    except ValueError:
        change = entry.change_message
    details: dict[str, Any] = {
        "model": content_type.model,
        "object_id": str(entry.object_id or ""),
        "object": entry.object_repr,
        "change": change,
    }
    if content_type.app_label == "auth" and verb != "deleted":
        if content_type.model == "user":
            details["state"] = _user_state(entry)
        elif content_type.model == "group":
            details["state"] = _group_state(entry)
    audit_record(
        actor=f"user:{entry.user_id}",
        action=admin_change_action(content_type.model, verb),
        details=details,
    )


def admin_change_action(model: str, verb: str) -> AuditEvent.Action:
    """``admin.<model>_<verb>``: one code per model the admin shows of the audited apps.

    tests/test_event_names.py checks that every such model has its three codes in
    ``AuditEvent.Action``. Should one be registered without them, the change is still
    recorded under its code, never dropped, and the log says which name is missing.
    """
    code = f"admin.{model}_{verb}"
    try:
        return AuditEvent.Action(code)
    except ValueError:
        logger.warning("audit action %s has no name in AuditEvent.Action", code)
        return cast(AuditEvent.Action, code)


def _user_state(entry: LogEntry) -> dict[str, Any]:
    """The powers a user holds after the change: who can enter the admin, and as what."""
    from django.contrib.auth import get_user_model

    user = get_user_model()._default_manager.filter(pk=str(entry.object_id or "")).first()
    if user is None:
        return {}
    return {
        "is_active": user.is_active,
        "is_staff": getattr(user, "is_staff", False),
        "is_superuser": getattr(user, "is_superuser", False),
        "groups": sorted(user.groups.values_list("name", flat=True))
        if hasattr(user, "groups")
        else [],
    }


def _group_state(entry: LogEntry) -> dict[str, Any]:
    """The permissions a group holds after the change."""
    from django.contrib.auth.models import Group

    group = Group.objects.filter(pk=str(entry.object_id or "")).first()
    if group is None:
        return {}
    return {
        "permissions": sorted(
            f"{app_label}.{codename}"
            for app_label, codename in group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        )
    }
